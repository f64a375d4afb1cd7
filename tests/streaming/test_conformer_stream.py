"""Wav2Vec2-Conformer streaming: cached mode (with the per-layer lookahead of the symmetric depthwise
conv) equals the offline forward under the equivalent per-layer chunk masks; window mode equals
transformers on each window; state stays bounded; batching changes nothing."""

import pytest
import torch

from engines.api import load_model
from engines.wav2vec2_conformer import layer_chunk_masks
from tests import hf_tiny
from tests.streamkit import step_through, window_plan

pytest.importorskip("transformers")

ATOL = 1e-4
FRAME_MS = 20


def _audio(num_samples, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / 16000
    return (0.2 * torch.sin(2 * torch.pi * 250 * t) + 0.05 * torch.randn(num_samples, generator=g)).float()


def _stream(model, audio, sizes, **kw):
    return step_through(model, audio, model.init_state(**kw), sizes)


def _offline(model, audio, chunk, left):
    m = model.module
    T = model.num_frames(audio.numel())
    masks = layer_chunk_masks(T, m.config.num_hidden_layers, chunk, left, delay_cnn=1, lookahead=m.lookahead)
    with torch.no_grad():
        return m(audio[None], attn_mask=masks).frames[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    built = {}

    def get(name, head="ctc", **overrides):
        if name not in built:
            overrides.setdefault("feat_extract_norm", "layer")  # exact CNN streaming
            path = hf_tiny.build_tiny("wav2vec2-conformer", head, tmp_path_factory.mktemp(name), **overrides)
            built[name] = load_model(path)
        return built[name]

    return get


@pytest.mark.parametrize("position,chunk", [("relative", 2), ("relative", 5), ("rotary", 3), ("rotary", 8), (None, 4)])
def test_cached_equals_offline_per_layer_chunk_masks(models, position, chunk):
    model = models(f"pos-{position}", position_embeddings_type=position)
    audio = _audio(16000 * 2 + 300)
    left = 2 * chunk + 1
    got, state = _stream(
        model,
        audio,
        [999, 5, 4321],
        mode="cached",
        chunk_ms=chunk * FRAME_MS,
        left_context_ms=left * FRAME_MS,
        normalize="none",
    )
    want = _offline(model, audio, chunk, left)
    assert got.shape[0] == want.shape[0] == model.num_frames(audio.numel())
    assert want.shape[0] // chunk >= 10
    # the lookahead the config implies: one CNN frame + (K - 1) / 2 frames per layer
    assert state.delay_frames == 1 + model.config.num_hidden_layers * (model.config.conv_depthwise_kernel_size - 1) // 2
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_cached_weighted_layer_sum(models):
    model = models("weighted", head="frame", position_embeddings_type="relative", use_weighted_layer_sum=True)
    audio = _audio(16000, seed=2)
    got, _ = _stream(model, audio, [1600], mode="cached", chunk_ms=100, left_context_ms=200, normalize="none")
    torch.testing.assert_close(got, _offline(model, audio, 5, 10), atol=ATOL, rtol=0)


def test_cached_group_norm_cnn_runs_close(models):
    """GroupNorm CNNs stream with running statistics (engines.common.waveform): not exact, bounded."""
    model = models("group", position_embeddings_type="rotary", feat_extract_norm="group")
    audio = _audio(16000 * 2, seed=3)
    got, _ = _stream(model, audio, [3200], mode="cached", chunk_ms=100, left_context_ms=400, normalize="none")
    want = _offline(model, audio, 5, 20)
    assert got.shape == want.shape and torch.isfinite(got).all()


def test_window_equals_transformers_on_each_window(models):
    model = models("pos-rotary", position_embeddings_type="rotary")
    ref = hf_tiny.reference(model.model_dir)
    audio = _audio(16000 + 999, seed=4)
    C, L, R = 8, 5, 3
    got, _ = _stream(
        model,
        audio,
        [1500],
        mode="window",
        chunk_ms=C * FRAME_MS,
        left_context_ms=L * FRAME_MS,
        lookahead_ms=R * FRAME_MS,
        normalize="none",
    )
    total = model.num_frames(audio.numel())
    assert got.shape[0] == total
    plan = window_plan(audio.numel(), C, L, R, model.samples_per_frame, model.receptive_field_samples, T=total)
    assert sum(n for _, n, _, _ in plan) == total and len(plan) >= 3
    for f, n, s0, s1 in plan:
        with torch.no_grad():
            logits = ref(audio[None, s0:s1]).logits[0]
        a = s0 // model.samples_per_frame
        torch.testing.assert_close(got[f : f + n], logits[f - a : f - a + n], atol=ATOL, rtol=0)


def test_state_is_bounded(models):
    model = models("pos-relative", position_embeddings_type="relative")
    state = model.init_state("cached", chunk_ms=100, left_context_ms=300, normalize="none")
    chunk = _audio(16000, seed=5)
    sizes = []
    for _ in range(20):
        _, state = model.step(chunk, state)
        sizes.append(sum(t.numel() for t in state.cache) + state.pending.numel())
    assert max(sizes[3:]) == min(sizes[3:])


def test_step_batch_equals_unbatched(models):
    model = models("pos-rotary", position_embeddings_type="rotary")
    audios = [_audio(12000 + 517 * i, seed=6 + i) for i in range(3)]
    kw = dict(mode="cached", chunk_ms=80, left_context_ms=160, normalize="none")
    single = [_stream(model, a, [900], **kw)[0] for a in audios]
    states = [model.init_state(**kw) for _ in audios]
    outs = [[] for _ in audios]
    for pos in range(0, max(a.numel() for a in audios), 900):
        res, states = model.step_batch([a[pos : pos + 900] for a in audios], states)
        for i, r in enumerate(res):
            outs[i].append(r.frames)
    for i, st in enumerate(states):
        outs[i].append(model.flush(st).frames)
        torch.testing.assert_close(torch.cat(outs[i]), single[i], atol=ATOL, rtol=0)
