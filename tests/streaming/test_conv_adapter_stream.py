"""Streaming with ``add_adapter`` (wav2vec2, WavLM, Wav2Vec2-Conformer) equals the offline computation it
stands for: cached mode == the offline forward with the encoder under its chunk mask (the conv stack
itself is exact), over >= 10 chunk boundaries; window mode == transformers on each window. The delay
the adapter adds is the one engines.common.conv_adapter states."""

import pytest
import torch

from engines.api import load_model
from engines.common.masks import chunk_attention_mask, chunk_block_ids
from engines.wav2vec2_conformer import layer_chunk_masks
from tests import hf_tiny
from tests.streamkit import step_through, window_plan

pytest.importorskip("transformers")
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")

ATOL = 1e-4
FAMILIES = ("wav2vec2", "wavlm", "wav2vec2-conformer")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    built = {}

    def get(family, layers=2):
        key = (family, layers)
        if key not in built:
            path = hf_tiny.build_tiny(
                family,
                "ctc",
                tmp_path_factory.mktemp("m"),
                perturb=0.1,
                do_normalize=False,
                feat_extract_norm="layer",
                add_adapter=True,
                num_adapter_layers=layers,
                output_hidden_size=24,
            )
            built[key] = load_model(path)
        return built[key]

    return get


def _audio(seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * 16000) + 211, generator=g)


def _encoder_mask(model, T_enc, chunk_enc, left_enc, delay_enc):
    inner = model.module.inner
    if model.family == "wav2vec2-conformer":
        return layer_chunk_masks(
            T_enc, model.config.num_hidden_layers, chunk_enc, left_enc, delay_cnn=1, lookahead=inner.lookahead
        )
    return chunk_attention_mask(chunk_block_ids(T_enc, chunk_enc, delay_enc), left_enc)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layers,chunk,left", [(1, 3, 10), (2, 2, 16)])
def test_cached_equals_offline_with_encoder_chunk_mask(models, family, layers, chunk, left):
    model = models(family, layers)
    scale = 2**layers
    x = _audio(4.0 if layers == 2 else 2.5)
    T = model.num_frames(x.numel())
    state = model.init_state("cached", chunk_ms=chunk * 20 * scale, left_context_ms=left * 20, normalize="none")
    assert T // chunk >= 10
    y, state = step_through(model, x, state, [1777, 0, 4096])
    m = model.module
    delay_enc = m.inner.delay_frames(m.encoder_spec(state.spec))
    # the adapter's delay: D_{i+1} = ceil((D_i + K - 1) / 2) - 1, K = 3: ceil(D_i / 2) per layer
    d = delay_enc
    for _ in range(layers):
        d = -(-d // 2)
    assert state.delay_frames == d
    T_enc = (x.numel() - 400) // 320 + 1
    mask = _encoder_mask(model, T_enc, chunk * scale, left, delay_enc)
    with torch.no_grad():
        ref = m(x[None], None, attn_mask=mask).frames[0]
        unmasked = m(x[None]).frames[0]
    assert y.shape == ref.shape == (T, model.config.vocab_size)
    assert (y - ref).abs().max().item() < ATOL
    assert (unmasked - ref).abs().max().item() > 10 * ATOL  # the chunk mask matters: the test can fail


@pytest.mark.parametrize("family", FAMILIES)
def test_window_equals_transformers_on_each_window(models, family):
    model = models(family, 2)
    ref = hf_tiny.reference(model.model_dir)
    x = _audio(3.0, seed=2)
    C, L, R = 3, 2, 1  # model frames (80 ms each)
    state = model.init_state("window", chunk_ms=C * 80, left_context_ms=L * 80, lookahead_ms=R * 80, normalize="none")
    got, _ = step_through(model, x, state, [1500])
    hop, total = model.samples_per_frame, model.num_frames(x.numel())
    plan = window_plan(x.numel(), C, L, R, hop, model.receptive_field_samples, T=total)
    assert got.shape[0] == total == sum(n for _, n, _, _ in plan) and len(plan) >= 5
    for f, n, s0, s1 in plan:
        with torch.no_grad():
            logits = ref(x[None, s0:s1]).logits[0]
        a = s0 // hop
        torch.testing.assert_close(got[f : f + n], logits[f - a : f - a + n], atol=ATOL, rtol=0)


def test_step_batch_equals_unbatched(models):
    model = models("wav2vec2", 2)
    xs = [_audio(1.5, seed=s) for s in (3, 4)]
    alone = [model.stream(x, "cached", chunk_ms=160, left_context_ms=320) for x in xs]
    states = [model.init_state("cached", chunk_ms=160, left_context_ms=320) for _ in xs]
    outs = [[] for _ in xs]
    for pos in range(0, xs[0].numel(), 2560):
        res, states = model.step_batch([x[pos : pos + 2560] for x in xs], states)
        for i, r in enumerate(res):
            outs[i].append(r.frames)
    for i, st in enumerate(states):
        outs[i].append(model.flush(st).frames)
        torch.testing.assert_close(torch.cat(outs[i]), alone[i], atol=ATOL, rtol=0)
