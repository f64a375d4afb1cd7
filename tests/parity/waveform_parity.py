"""Component-by-component parity of a waveform family (wav2vec2, WavLM) against transformers.

Used by test_wav2vec2.py and test_wavlm.py. Tolerance: atol 1e-4 in fp32, padded frames masked
out before comparing.
"""

from __future__ import annotations

import torch

from engines.api import load_model
from tests import hf_tiny

ATOL = 1e-4
HEADS = ("ctc", "frame", "xvector", "sequence", "base")

# config variants public checkpoints use
VARIANTS = {
    # wav2vec2-base / wavlm-base: GroupNorm CNN, post-LN transformer
    "group_postln": dict(feat_extract_norm="group", do_stable_layer_norm=False),
    # large-lv60 / XLS-R / wavlm-large: LayerNorm CNN with conv bias, pre-LN transformer
    "layer_preln_bias": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    # SUPERB-style heads on a weighted sum of layers, odd positional kernel (no SamePad)
    "weighted_oddpos": dict(use_weighted_layer_sum=True, num_conv_pos_embeddings=15, hidden_act="gelu_new"),
}


def audio_batch(lengths=(8000, 5600), seed=0):
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    x = torch.zeros(len(lengths), S)
    for i, n in enumerate(lengths):
        x[i, :n] = 0.1 * torch.randn(n, generator=g)
    mask = (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).long()
    return x, mask


def close(a: torch.Tensor, b: torch.Tensor, what: str, mask: torch.Tensor | None = None) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    if mask is not None:
        a, b = a[mask], b[mask]
    err = (a - b).abs().max().item()
    assert err <= ATOL, f"{what}: max abs error {err:.3g} > {ATOL}"
    # the comparison must be able to fail: outputs are not all ~0
    assert b.abs().max().item() > 10 * ATOL, f"{what}: reference is ~0, test is vacuous"


def check_family(family: str, variant: str, head: str, tmp_path, overrides: dict | None = None) -> None:
    """``overrides``: config values to use instead of ``VARIANTS[variant]``."""
    path = hf_tiny.build_tiny(family, head, tmp_path / "m", **(VARIANTS[variant] if overrides is None else overrides))
    ref = hf_tiny.reference(path)
    model = load_model(path)
    assert model.family == family and model.head == head
    mine = model.module
    audio, amask = audio_batch()
    x, xmask = model.frontend(audio, amask.sum(-1))
    assert xmask is not None  # tiny checkpoints set return_attention_mask
    ref_base = ref if head == "base" else getattr(ref, mine.prefix)
    with torch.no_grad():
        # feature encoder (CNN), on the unpadded row: GroupNorm pools over all frames given
        ext_ref = ref_base.feature_extractor(x[:1])
        close(mine.backbone.feature_extractor(x[:1]), ext_ref, "feature encoder")
        # feature projection
        proj_ref, _ = ref_base.feature_projection(ext_ref.transpose(1, 2))
        h = mine.features(x[:1])
        close(h, proj_ref, "feature projection")
        # positional conv embedding (weight norm folded at load)
        close(mine.pos_conv(h), ref_base.encoder.pos_conv_embed(proj_ref), "positional conv")
        # each layer and the whole encoder, on the padded batch
        out_ref = ref_base(x, attention_mask=xmask, output_hidden_states=True)
        fmask = mine.frame_mask(xmask, out_ref.last_hidden_state.shape[1])
        h = mine.features(x).masked_fill(~fmask[..., None], 0.0)
        from engines.common.blocks import mask_value

        bias = torch.zeros(fmask.shape[0], 1, 1, fmask.shape[1]).masked_fill(
            ~fmask[:, None, None, :], mask_value(torch.float32)
        )
        last, states = mine.backbone.encoder(h, bias, keep_all=True)
        assert len(states) == len(out_ref.hidden_states)
        for i, (a, b) in enumerate(zip(states, out_ref.hidden_states)):
            close(a, b, f"hidden state {i}", fmask)
        close(last, out_ref.last_hidden_state, "encoder output", fmask)

        # heads
        out = mine(x, xmask)
        r = ref(x, attention_mask=xmask)
        if head == "ctc":
            close(out.frames, r.logits, "CTC logits", fmask)
            assert torch.equal(out.frames.argmax(-1)[fmask], r.logits.argmax(-1)[fmask])
        elif head == "frame":
            close(out.frames, r.logits, "frame logits", fmask)
        elif head == "sequence":
            close(out.utterance, r.logits, "sequence logits")
        elif head == "xvector":
            close(out.utterance, r.embeddings, "x-vector embeddings")
            close(out.utterance_logits, r.logits, "x-vector logits")
        else:
            close(out.frames, r.last_hidden_state, "hidden states", fmask)

        # the public entry point: raw audio through the frontend
        pub = model.forward(audio, amask.sum(-1))
        close(pub.frames, out.frames, "LoadedModel.forward", fmask)
