"""Streaming wav2vec2 and WavLM equals the offline computation it stands for.

- cached mode == offline forward under the equivalent chunk attention mask (atol 1e-4), over
  >= 10 chunk boundaries, several chunk sizes and left contexts, irregular input chunking;
- window mode == the reference model run on each window (transformers itself for per-window
  normalisation; with CNN-output reuse, the model on the stream-normalised window);
- every frame is emitted exactly once with the right start_frame;
- state stays bounded over an hour of audio; step_batch == unbatched steps.
"""

import numpy as np
import pytest
import torch

from engines.api import load_model
from engines.common.masks import chunk_attention_mask, chunk_block_ids
from tests import hf_tiny
from tests.streamkit import step_through, window_plan

pytest.importorskip("transformers")
# tiny models: threads only add contention on the shared 2-core machine
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")

ATOL = 1e-4
SR = 16000


def _audio(seconds=3.0, seed=0, extra=123):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * SR) + extra, generator=g)


def _sizes(total, seed=1, hi=3000):
    """Irregular chunk sizes (like a capture callback), 0 included."""
    rng = np.random.default_rng(seed)
    out, n = [], 0
    while n < total:
        k = int(rng.integers(0, hi))
        out.append(min(k, total - n))
        n += out[-1]
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    built = {}

    def get(family, head="ctc", **overrides):
        key = (family, head, tuple(sorted(overrides.items())))
        if key not in built:
            # perturb 0.1: sharper attention than HF's init, so a wrong mask shows
            path = hf_tiny.build_tiny(family, head, tmp_path_factory.mktemp("m"), perturb=0.1, **overrides)
            built[key] = load_model(path)
        return built[key]

    return get


LAYER_VARIANTS = {
    "postln": dict(feat_extract_norm="layer"),
    "preln_weighted": dict(
        feat_extract_norm="layer", do_stable_layer_norm=True, use_weighted_layer_sum=True, conv_bias=True
    ),
}


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
@pytest.mark.parametrize("variant", sorted(LAYER_VARIANTS))
@pytest.mark.parametrize("head", ["ctc", "frame"])
@pytest.mark.parametrize("chunk,left", [(4, 8), (10, 0), (7, 30)])
def test_cached_equals_offline_under_chunk_mask(models, family, variant, head, chunk, left):
    model = models(family, head, do_normalize=False, **LAYER_VARIANTS[variant])
    x = _audio()
    T = model.num_frames(x.numel())
    state = model.init_state("cached", chunk_ms=chunk * 20, left_context_ms=left * 20, normalize="none")
    assert T // chunk >= 10  # at least 10 chunk boundaries
    y, state = step_through(model, x, state, _sizes(x.numel()))
    mask = chunk_attention_mask(chunk_block_ids(T, chunk, state.delay_frames), left)
    with torch.no_grad():
        ref = model.module(x[None], None, attn_mask=mask).frames[0]
        unmasked = model.module(x[None]).frames[0]
    assert y.shape == ref.shape == (T, ref.shape[-1])
    err = (y - ref).abs().max().item()
    assert err < ATOL, err
    # the mask matters, so the comparison can fail
    assert (unmasked - ref).abs().max().item() > 10 * ATOL


def test_cached_delay_follows_from_positional_conv(models):
    model = models("wav2vec2", do_normalize=False, feat_extract_norm="layer")
    state = model.init_state("cached", chunk_ms=100, left_context_ms=200, normalize="none")
    k = model.config.num_conv_pos_embeddings  # 16 in the tiny config (128 in base models)
    assert state.delay_frames == 1 + (k - 1 - k // 2)
    # an attention lookahead (tests/streaming/test_cached_lookahead.py) adds its frames to the delay
    state = model.init_state("cached", chunk_ms=100, left_context_ms=200, lookahead_ms=40)
    assert state.delay_frames == 1 + (k - 1 - k // 2) + 2


def test_cached_groupnorm_running_statistics_settle(models):
    """GroupNorm over time cannot be exact causally; the running statistics approach the
    utterance's, so late frames match the offline masked forward closely."""
    model = models("wav2vec2", "base", do_normalize=False)  # feat_extract_norm="group"
    x = _audio(seconds=6.0)
    T = model.num_frames(x.numel())
    state = model.init_state("cached", chunk_ms=200, left_context_ms=400, normalize="none")
    y, state = step_through(model, x, state, _sizes(x.numel(), hi=8000))
    mask = chunk_attention_mask(chunk_block_ids(T, 10, state.delay_frames), 20)
    with torch.no_grad():
        ref = model.module(x[None], None, attn_mask=mask).frames[0]
    scale = ref.abs().max().item()
    early = (y[:10] - ref[:10]).abs().max().item() / scale
    late = (y[-50:] - ref[-50:]).abs().max().item() / scale
    assert late < 0.02, late
    assert late < early


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
@pytest.mark.parametrize("norm", ["group", "layer"])
@pytest.mark.parametrize("chunk_ms,left_ms,right_ms", [(1000, 1000, 1000), (80, 160, 60), (200, 0, 0)])
def test_window_per_window_normalisation_equals_transformers_on_each_window(
    models, family, norm, chunk_ms, left_ms, right_ms
):
    """normalize="window" normalises each window as the transformers feature extractor does."""
    model = models(family, do_normalize=True, feat_extract_norm=norm)
    ref_model = hf_tiny.reference(model.model_dir)
    from transformers import Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor.from_pretrained(model.model_dir)
    x = _audio(seconds=5.5)
    T = model.num_frames(x.numel())
    state = model.init_state(
        "window", chunk_ms=chunk_ms, left_context_ms=left_ms, lookahead_ms=right_ms, normalize="window"
    )
    y, _ = step_through(model, x, state, _sizes(x.numel()))
    assert y.shape[0] == T
    C, L, R = state.spec.chunk_frames, state.spec.left_frames, state.spec.lookahead_frames
    plan = window_plan(x.numel(), C, L, R, 320, 400)
    assert sum(n for _, n, _, _ in plan) == T and len(plan) >= 3
    for f, n, s0, s1 in plan:
        inputs = fe(x[s0:s1].numpy(), sampling_rate=SR, return_tensors="pt")
        with torch.no_grad():
            ref = ref_model(inputs["input_values"]).logits[0]
        a = s0 // 320
        assert (y[f : f + n] - ref[f - a : f - a + n]).abs().max().item() < ATOL, f


@pytest.mark.parametrize("norm", ["group", "layer"])
@pytest.mark.parametrize("chunk_s,stride", [(3, (1, 1)), (2, (0.5, 0.5)), (1, (0.2, 0.2))])
@pytest.mark.parametrize("seconds", [7.3, 7.0])
def test_window_equals_the_transformers_pipeline_logits(models, norm, chunk_s, stride, seconds):
    """The pipeline's own chunking (chunk_iter) and stride trimming (rescale_stride, as in its
    postprocess) give the logits window mode emits with the same geometry. At 7.0 s the audio
    ends exactly where a window ends, which the pipeline treats as the last window."""
    from transformers import Wav2Vec2FeatureExtractor
    from transformers.pipelines.automatic_speech_recognition import chunk_iter, rescale_stride

    model = models("wav2vec2", do_normalize=True, feat_extract_norm=norm)
    ref_model = hf_tiny.reference(model.model_dir)
    fe = Wav2Vec2FeatureExtractor.from_pretrained(model.model_dir)
    x = _audio(seconds=seconds, extra=0)
    chunk_len, left, right = int(chunk_s * SR), int(stride[0] * SR), int(stride[1] * SR)
    pieces = []
    for item in chunk_iter(x.numpy(), fe, chunk_len, left, right):
        with torch.no_grad():
            logits = ref_model(item["input_values"], attention_mask=item["attention_mask"]).logits
        token_n, l_n, r_n = rescale_stride([item["stride"]], 1 / 320)[0]
        pieces.append(logits[0, l_n : token_n - r_n])
    expected = torch.cat(pieces)
    state = model.init_state(
        "window",
        chunk_ms=int((chunk_s - stride[0] - stride[1]) * 1000),
        left_context_ms=int(stride[0] * 1000),
        lookahead_ms=int(stride[1] * 1000),
        normalize="window",
    )
    y, _ = step_through(model, x, state, _sizes(x.numel(), hi=6000))
    assert y.shape == expected.shape
    assert (y - expected).abs().max().item() < ATOL


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
@pytest.mark.parametrize("norm", ["group", "layer"])
def test_window_stream_normalisation_equals_model_on_each_window(models, family, norm):
    """Default normalize="stream": samples normalised with running statistics; layer-norm CNNs
    reuse the CNN output across the overlap, group-norm CNNs recompute each window."""
    model = models(family, do_normalize=True, feat_extract_norm=norm)
    x = _audio(seconds=2.5)
    sizes = _sizes(x.numel())
    T = model.num_frames(x.numel())
    state = model.init_state("window", chunk_ms=120, left_context_ms=300, lookahead_ms=100)
    y, _ = step_through(model, x, state, sizes)
    assert y.shape[0] == T
    # the stream the model saw: the same chunks through the frontend's running normalisation
    fs, parts, pos = model.frontend.init_state(state.spec), [], 0
    for n in sizes:
        xn, fs = model.frontend.step(x[pos : pos + n], fs)
        parts.append(xn)
        pos += n
    xs = torch.cat(parts)
    C, L, R = state.spec.chunk_frames, state.spec.left_frames, state.spec.lookahead_frames
    for f, n, s0, s1 in window_plan(x.numel(), C, L, R, 320, 400):
        with torch.no_grad():
            ref = model.module.window_forward(xs[None, s0:s1])[0]
        a = s0 // 320
        assert (y[f : f + n] - ref[f - a : f - a + n]).abs().max().item() < ATOL, f


def test_window_accepts_combinations_the_pipeline_rejects(models):
    # the pipeline's chunk_length_s=2, stride=(1, 1) leaves no centre and raises; here the
    # three parts are independent, e.g. a one-frame centre between 1 s of context each side
    model = models("wav2vec2", do_normalize=True, feat_extract_norm="layer")
    x = _audio(seconds=2.0)
    state = model.init_state("window", chunk_ms=20, left_context_ms=1000, lookahead_ms=1000)
    y, _ = step_through(model, x, state, [x.numel()])
    assert y.shape[0] == model.num_frames(x.numel())


def test_short_streams_and_int16_input(models):
    model = models("wav2vec2")
    for mode in ("cached", "window"):
        state = model.init_state(mode, chunk_ms=100, left_context_ms=200)
        assert model.flush(state).frames.shape == (0, 12)
        out, state = model.step(np.zeros(300, dtype=np.int16), state)
        assert out.frames.shape[0] == 0
        assert model.flush(state).frames.shape[0] == 0  # 300 samples < one frame
        state = model.init_state(mode, chunk_ms=100, left_context_ms=200)
        pcm = (np.random.default_rng(0).standard_normal(4000) * 3000).astype(np.int16)
        y, _ = step_through(model, pcm, state, [1000, 3000])
        assert y.shape[0] == model.num_frames(4000)


def _shapes(state):
    return [tuple(t.shape) for t in state.cache] + [tuple(state.pending.shape)]


@pytest.mark.parametrize("mode", ["cached", "window"])
def test_state_stays_bounded_over_an_hour(tmp_path, mode):
    """An hour of audio through a (very) tiny model in 20 s chunks: every state tensor keeps
    its size, pending audio stays below a chunk + context, frame count is exact."""
    path = hf_tiny.build_tiny(
        "wav2vec2",
        "frame",
        tmp_path,
        conv_dim=(4,) * 7,
        hidden_size=8,
        num_attention_heads=2,
        intermediate_size=8,
        num_hidden_layers=1,
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
    )
    model = load_model(path)
    state = model.init_state(mode, chunk_ms=2000, left_context_ms=2000, lookahead_ms=0 if mode == "cached" else 400)
    step_s = 20
    g = torch.Generator().manual_seed(0)
    chunk = 0.1 * torch.randn(step_s * SR, generator=g)
    frames, first_shapes = 0, None
    for _i in range(3600 // step_s):
        out, state = model.step(chunk, state)
        assert out.start_frame == frames
        frames += out.frames.shape[0]
        if mode == "cached":
            shapes = _shapes(state)
            first_shapes = first_shapes or shapes
            assert shapes == first_shapes
        else:
            feats = state.cache.feats
            assert (
                feats is None
                or feats.shape[0] <= state.spec.left_frames + state.spec.lookahead_frames + state.spec.chunk_frames
            )
        assert (
            state.pending.numel()
            <= (state.spec.chunk_frames + state.spec.left_frames + state.spec.lookahead_frames + 2) * 320
        )
    frames += model.flush(state).frames.shape[0]
    assert state.samples_in == 3600 * SR
    assert frames == model.num_frames(3600 * SR)


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_step_batch_equals_unbatched_steps(models, family):
    model = models(family, "ctc", feat_extract_norm="group")
    streams = [_audio(seconds=2.0, seed=s) for s in range(3)]
    kw = dict(chunk_ms=160, left_context_ms=320)
    # unbatched
    expected = []
    for i, x in enumerate(streams):
        y, _ = step_through(model, x, model.init_state("cached", **kw), _sizes(x.numel(), seed=10 + i))
        expected.append(y)
    # batched: same per-stream chunking, all streams stepped together each round
    sizes = [_sizes(x.numel(), seed=10 + i) for i, x in enumerate(streams)]
    rounds = max(len(s) for s in sizes)
    states = [model.init_state("cached", **kw) for _ in streams]
    pos = [0] * 3
    got = [[] for _ in streams]
    for r in range(rounds):
        chunks = []
        for i, x in enumerate(streams):
            n = sizes[i][r] if r < len(sizes[i]) else 0
            chunks.append(x[pos[i] : pos[i] + n])
            pos[i] += n
        outs, states = model.step_batch(chunks, states)
        for i, o in enumerate(outs):
            if o.frames.shape[0]:
                assert o.start_frame == sum(t.shape[0] for t in got[i])
                got[i].append(o.frames)
    for i, st in enumerate(states):
        got[i].append(model.flush(st).frames)
        torch.testing.assert_close(torch.cat(got[i]), expected[i], atol=ATOL, rtol=0)
