"""Wav2Vec2-BERT: the project's engine against transformers, component by component (fp32, atol 1e-4)."""

import numpy as np
import pytest
import torch

from engines import frontend_fbank as fb
from engines.api import load_model
from tests import hf_tiny

pytest.importorskip("transformers")

ATOL = 1e-4

VARIANTS = {
    "relative_key": dict(position_embeddings_type="relative_key"),
    "relative": dict(position_embeddings_type="relative"),
    "rotary": dict(position_embeddings_type="rotary"),
    "none": dict(position_embeddings_type=None),
    "adapter": dict(add_adapter=True, num_adapter_layers=2, output_hidden_size=24),
    "adapter_ffn": dict(add_adapter=True, use_intermediate_ffn_before_adapter=True),
    "weighted": dict(use_weighted_layer_sum=True),
}
# every head on the default variant; each other variant on the heads its change touches (transformers
# refuses adapters with frame / sequence heads, and its x-vector projector needs hidden_size inputs)
CASES = [("relative_key", h) for h in ("ctc", "frame", "xvector", "sequence", "base")] + [
    ("relative", "ctc"),
    ("relative", "frame"),
    ("rotary", "ctc"),
    ("rotary", "xvector"),
    ("none", "ctc"),
    ("adapter", "ctc"),
    ("adapter", "base"),
    ("adapter_ffn", "ctc"),
    ("adapter_ffn", "xvector"),
    ("weighted", "frame"),
    ("weighted", "sequence"),
    ("weighted", "xvector"),
]


def _features(num_samples=(9000, 6500)):
    rng = np.random.default_rng(1)
    waves = [torch.from_numpy((0.1 * rng.standard_normal(n)).astype(np.float32)) for n in num_samples]
    return fb.extract(waves)  # (B, T, 160), (B, T)


@pytest.fixture(scope="module")
def features():
    return _features()


def _build(tmp_path_factory, variant, head):
    path = hf_tiny.build_tiny("wav2vec2-bert", head, tmp_path_factory.mktemp(f"{variant}-{head}"), **VARIANTS[variant])
    return load_model(path), hf_tiny.reference(path)


def _close(ours, ref, mask=None):
    if mask is not None:  # compare real frames only
        ours, ref = ours[mask], ref[mask]
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant,head", CASES)
@torch.no_grad()
def test_matches_transformers(tmp_path_factory, features, variant, head):
    model, ref = _build(tmp_path_factory, variant, head)
    x, attention_mask = features
    keep = attention_mask.bool()
    ours = model.module
    ref_base = ref if head == "base" else ref.wav2vec2_bert

    # feature projection
    _close(ours.backbone.feature_projection(x), ref_base.feature_projection(x)[0])

    # every layer and the backbone output, with padding
    hidden = ours.backbone(x, keep)
    ref_out = ref_base(x, attention_mask=attention_mask, output_hidden_states=True)
    for _i, (a, b) in enumerate(zip(hidden[:-1], ref_out.hidden_states)):
        _close(a, b, keep)
    out_keep = torch.arange(hidden[-1].shape[1])[None] < ours.backbone.output_lengths(keep.sum(1))[:, None]
    _close(hidden[-1], ref_out.last_hidden_state, out_keep)

    # the head, batched with padding
    got = ours(x, attention_mask)
    want = ref(x, attention_mask=attention_mask)
    if head in ("ctc", "frame"):
        _close(got.frames, want.logits, got.frame_mask)
    elif head == "sequence":
        _close(got.utterance, want.logits)
    elif head == "xvector":
        _close(got.utterance, want.embeddings)
        _close(got.utterance_logits, want.logits)
    else:
        _close(got.frames, want.last_hidden_state, got.frame_mask)

    # and unpadded single utterance through the public offline API
    if head in ("ctc", "frame"):
        x1 = x[1:, : int(keep[1].sum())]
        torch.testing.assert_close(ours(x1).frames, ref(x1).logits, atol=ATOL, rtol=0)


def test_loaded_model_forward_runs_frontend(tmp_path):
    path = hf_tiny.build_tiny("wav2vec2-bert", "ctc", tmp_path)
    model, ref = load_model(path), hf_tiny.reference(path)
    audio = torch.from_numpy((0.1 * np.random.default_rng(3).standard_normal(8000)).astype(np.float32))
    from transformers import SeamlessM4TFeatureExtractor

    inputs = SeamlessM4TFeatureExtractor()(audio.numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        want = ref(**inputs).logits
    torch.testing.assert_close(model.forward(audio).frames, want, atol=ATOL, rtol=0)


def test_unsupported_position_type_is_refused(tmp_path):
    import json

    from engines.errors import UnsupportedConfigError

    path = hf_tiny.build_tiny("wav2vec2-bert", "ctc", tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["position_embeddings_type"] = "alibi"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedConfigError, match="alibi.*relative_key"):
        load_model(path)


TRAIN_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_depthwise_kernel_size=5,
    position_embeddings_type="relative_key",
    left_max_position_embeddings=16,
    right_max_position_embeddings=0,
    vocab_size=10,
    pad_token_id=0,
)


def test_training_entry_points_save_a_checkpoint_transformers_loads(tmp_path, features):
    import transformers

    from engines.wav2vec2_bert import build_model
    from examples.train.hf_export import save_pretrained

    engine = build_model(TRAIN_CONFIG, head="ctc", seed=0)
    x, attention_mask = features
    # differentiable with a dynamic chunk mask and padding
    out = engine(x, attention_mask, chunk_frames=4, left_chunks=2)
    lengths = out.frame_mask.sum(1)
    loss = torch.nn.functional.ctc_loss(
        out.frames.log_softmax(-1).transpose(0, 1),
        torch.tensor([[1, 2, 3], [4, 5, 6]]),
        lengths,
        torch.tensor([3, 3]),
        blank=0,
    )
    loss.backward()
    assert all(p.grad is not None for p in engine.parameters())

    path = save_pretrained(engine, tmp_path / "ckpt", vocab={"<pad>": 0, "a": 1})
    ref, info = transformers.Wav2Vec2BertForCTC.from_pretrained(str(path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        torch.testing.assert_close(
            engine.eval()(x, attention_mask).frames[out.frame_mask],
            ref.eval()(x, attention_mask=attention_mask).logits[out.frame_mask],
            atol=ATOL,
            rtol=0,
        )
    assert load_model(path).module.head == "ctc"


@torch.no_grad()
def test_chunk_mask_limits_what_a_frame_sees(features):
    from engines.wav2vec2_bert import build_model

    engine = build_model(TRAIN_CONFIG, head="ctc", seed=1).eval()
    x = features[0][:1, :24]
    full = engine(x, chunk_frames=4, left_chunks=1).frames
    changed = x.clone()
    changed[:, 12:] = torch.randn_like(changed[:, 12:])  # chunks 3.. change
    other = engine(changed, chunk_frames=4, left_chunks=1).frames
    torch.testing.assert_close(full[:, :12], other[:, :12], atol=0, rtol=0)  # causal: earlier chunks unaffected
    assert not torch.allclose(full[:, 12:], other[:, 12:])
