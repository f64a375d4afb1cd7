"""Wav2Vec2-BERT streaming: cached mode equals the offline forward under the equivalent chunk mask,
window mode equals transformers on each window, state stays bounded, batching changes nothing."""

import pytest
import torch

from engines import frontend_fbank as fb
from engines.api import load_model
from tests import hf_tiny
from tests.streamkit import step_through, window_plan

pytest.importorskip("transformers")

ATOL = 1e-4
FRAME_MS = 20


def _audio(num_samples, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / 16000
    return (
        0.2 * torch.sin(2 * torch.pi * 300 * t) * torch.sin(2 * torch.pi * 2 * t)
        + 0.05 * torch.randn(num_samples, generator=g)
    ).float()


def _stream(model, audio, sizes, **kw):
    return step_through(model, audio, model.init_state(**kw), sizes)


def _offline_under_chunk_mask(model, audio, chunk_frames, left_frames, normalize="stream"):
    """What cached mode stands for: causal running fbank normalisation (from the checkpoint's prior,
    if it has one), then the offline forward with blocks starting at k * C - 1 (one frame of fbank
    delay) and L frames of left context."""
    feats = fb.stream_features(audio, "cumulative" if normalize == "stream" else "none", prior=model.module.fbank_prior)
    scale = model.module.config.frame_stride
    with torch.no_grad():
        return model.module(
            feats[None], chunk_frames=chunk_frames * scale, left_frames=left_frames * scale, chunk_offset=scale
        ).frames[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    built = {}

    def get(name, head="ctc", **overrides):
        if name not in built:
            path = hf_tiny.build_tiny("wav2vec2-bert", head, tmp_path_factory.mktemp(name), **overrides)
            built[name] = load_model(path)
        return built[name]

    return get


@pytest.mark.parametrize(
    "position,chunk_frames",
    [("relative_key", 2), ("relative_key", 5), ("relative_key", 8), ("relative", 5), ("rotary", 3), (None, 4)],
)
def test_cached_equals_offline_chunk_mask(models, position, chunk_frames):
    model = models(f"pos-{position}", position_embeddings_type=position)
    audio = _audio(16000 * 2 + 555)  # 101 frames: >= 12 chunk boundaries for every chunk size here
    left = 3 * chunk_frames + 1
    got, _ = _stream(
        model,
        audio,
        [1000, 7, 3333, 640],
        mode="cached",
        chunk_ms=chunk_frames * FRAME_MS,
        left_context_ms=left * FRAME_MS,
    )
    want = _offline_under_chunk_mask(model, audio, chunk_frames, left)
    assert got.shape[0] == model.num_frames(audio.numel()) == want.shape[0]
    assert want.shape[0] // chunk_frames >= 10
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_cached_relative_key_across_chunks_beyond_clip_range(models):
    """Left context longer than left_max_position_embeddings: clipped buckets must match too."""
    model = models("pos-relative_key", position_embeddings_type="relative_key")
    audio = _audio(16000 * 2, seed=3)
    got, _ = _stream(model, audio, [5120], mode="cached", chunk_ms=60, left_context_ms=40 * FRAME_MS)
    torch.testing.assert_close(got, _offline_under_chunk_mask(model, audio, 3, 40), atol=ATOL, rtol=0)


def _with_prior(src, dst, frames=50.0, mean_shift=0.0):
    """A copy of checkpoint ``src`` whose preprocessor_config.json carries a streaming prior."""
    import json
    import shutil

    shutil.copytree(src, dst)
    prep = json.loads((dst / "preprocessor_config.json").read_text())
    prior = fb.FbankPrior(
        torch.linspace(2.0, 9.0, fb.NUM_MEL_BINS, dtype=torch.float64) + mean_shift,
        torch.linspace(1.5, 3.0, fb.NUM_MEL_BINS, dtype=torch.float64),
        frames,
    )
    prep[fb.PRIOR_KEY] = prior.to_json()
    (dst / "preprocessor_config.json").write_text(json.dumps(prep))
    return dst


def test_cached_with_checkpoint_prior(models, tmp_path):
    """A checkpoint with a prior streams from it: exact against the prior-started features, and the
    prior does change the output (so the test can fail if it is ignored)."""
    plain = models("pos-relative_key", position_embeddings_type="relative_key")
    model = load_model(_with_prior(plain.model_dir, tmp_path / "prior"))
    assert model.module.fbank_prior is not None and plain.module.fbank_prior is None
    audio = _audio(16000 + 999, seed=5)
    got, _ = _stream(model, audio, [700, 4321], mode="cached", chunk_ms=100, left_context_ms=600)
    torch.testing.assert_close(got, _offline_under_chunk_mask(model, audio, 5, 30), atol=ATOL, rtol=0)
    without, _ = _stream(plain, audio, [700, 4321], mode="cached", chunk_ms=100, left_context_ms=600)
    assert (got - without).abs().max() > 1e-2
    # normalize="none" ignores the prior; offline (HF features) never uses it
    none_got, _ = _stream(model, audio, [800], mode="cached", chunk_ms=80, left_context_ms=320, normalize="none")
    none_plain, _ = _stream(plain, audio, [800], mode="cached", chunk_ms=80, left_context_ms=320, normalize="none")
    torch.testing.assert_close(none_got, none_plain, atol=0, rtol=0)
    torch.testing.assert_close(model.forward(audio[None]).frames, plain.forward(audio[None]).frames, atol=0, rtol=0)


def test_checkpoint_prior_survives_save_and_transformers_ignores_it(models, tmp_path):
    from examples.train.hf_export import save_pretrained

    plain = models("pos-relative_key", position_embeddings_type="relative_key")
    model = load_model(_with_prior(plain.model_dir, tmp_path / "prior", frames=123.0))
    save_pretrained(model.module, tmp_path / "saved", vocab=model.vocab)
    again = load_model(tmp_path / "saved")
    assert again.module.fbank_prior.frames == 123.0
    torch.testing.assert_close(again.module.fbank_prior.mean, model.module.fbank_prior.mean, atol=1e-6, rtol=0)
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(str(tmp_path / "saved"))
    audio = _audio(8000, seed=6).numpy()
    hf = torch.from_numpy(extractor(audio, sampling_rate=16000, return_tensors="np")["input_features"])
    torch.testing.assert_close(hf, fb.extract(torch.from_numpy(audio))[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"mean": [1.0] * 80, "std": [1.0] * 80}, "frames"),
        ({"mean": [1.0] * 79, "std": [1.0] * 80, "frames": 10}, "80 numbers"),
        ({"mean": [1.0] * 80, "std": [0.0] * 80, "frames": 10}, "positive"),
        ({"mean": [float("nan")] * 80, "std": [1.0] * 80, "frames": 10}, "finite"),
        ({"mean": [1.0] * 80, "std": [1.0] * 80, "frames": 0.5}, "above 1"),
    ],
)
def test_bad_checkpoint_prior_is_a_clear_error(models, tmp_path, bad, match):
    import json

    plain = models("pos-relative_key", position_embeddings_type="relative_key")
    dst = _with_prior(plain.model_dir, tmp_path / "bad")
    prep = json.loads((dst / "preprocessor_config.json").read_text())
    prep[fb.PRIOR_KEY] = bad
    (dst / "preprocessor_config.json").write_text(json.dumps(prep))
    with pytest.raises(ValueError, match=match) as err:
        load_model(dst)
    assert fb.PRIOR_KEY in str(err.value)


def test_cached_without_normalisation(models):
    model = models("pos-relative_key", position_embeddings_type="relative_key")
    audio = _audio(16000, seed=4)
    got, _ = _stream(model, audio, [800], mode="cached", chunk_ms=80, left_context_ms=320, normalize="none")
    torch.testing.assert_close(got, _offline_under_chunk_mask(model, audio, 4, 16, "none"), atol=ATOL, rtol=0)


@pytest.mark.parametrize("layers", [1, 2])
def test_cached_adapter(models, layers):
    model = models(f"adapter-{layers}", add_adapter=True, num_adapter_layers=layers, output_hidden_size=24)
    audio = _audio(16000 * 2 + 4321)
    hop_ms = FRAME_MS * 2**layers
    got, _ = _stream(model, audio, [2000, 999], mode="cached", chunk_ms=2 * hop_ms, left_context_ms=5 * hop_ms)
    want = _offline_under_chunk_mask(model, audio, 2, 5)
    assert got.shape[0] == want.shape[0] == model.num_frames(audio.numel())
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("head", ["frame", "xvector"])
def test_cached_other_heads(models, head):
    model = models(f"head-{head}", head=head, use_weighted_layer_sum=True)
    audio = _audio(16000, seed=5)
    got, _ = _stream(model, audio, [1500], mode="cached", chunk_ms=100, left_context_ms=200)
    torch.testing.assert_close(got, _offline_under_chunk_mask(model, audio, 5, 10), atol=ATOL, rtol=0)


def test_lookahead_adds_to_the_delay_in_cached_mode(models):
    """Lookahead in cached mode: tests/streaming/test_cached_lookahead.py checks what it computes."""
    model = models("pos-relative_key", position_embeddings_type="relative_key")
    assert model.init_state("cached", chunk_ms=100, left_context_ms=200, lookahead_ms=40).delay_frames == 1 + 2


def test_window_equals_transformers_on_each_window(models):
    from transformers import SeamlessM4TFeatureExtractor

    model = models("pos-relative_key", position_embeddings_type="relative_key")
    ref = hf_tiny.reference(model.model_dir)
    extractor = SeamlessM4TFeatureExtractor()
    audio = _audio(16000 * 2 + 100, seed=6)
    C, L, R = 10, 6, 4
    got, _ = _stream(
        model,
        audio,
        [1234],
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
        inputs = extractor(audio[s0:s1].numpy(), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            logits = ref(**inputs).logits[0]
        a = s0 // model.samples_per_frame
        torch.testing.assert_close(got[f : f + n], logits[f - a : f - a + n], atol=ATOL, rtol=0)


def test_state_is_bounded(models):
    model = models("pos-relative_key", position_embeddings_type="relative_key")
    state = model.init_state("cached", chunk_ms=100, left_context_ms=400)
    chunk = _audio(16000, seed=7)

    def size(st):
        return sum(t.numel() for t in st.cache) + st.pending.numel()

    sizes = []
    for _ in range(30):  # 30 s; the same shapes whatever the length, so an hour is the same
        _, state = model.step(chunk, state)
        sizes.append(size(state))
    assert max(sizes[5:]) == min(sizes[5:]) and max(sizes) <= sizes[0] + model.samples_per_frame * 5


def test_step_batch_equals_unbatched(models):
    model = models("pos-rotary", position_embeddings_type="rotary")
    audios = [_audio(16000 + 333 * i, seed=10 + i) for i in range(3)]
    kw = dict(mode="cached", chunk_ms=80, left_context_ms=240)
    single = [_stream(model, a, [700], **kw)[0] for a in audios]
    states = [model.init_state(**kw) for _ in audios]
    outs = [[] for _ in audios]
    for pos in range(0, max(a.numel() for a in audios), 700):
        chunks = [a[pos : pos + 700] for a in audios]
        res, states = model.step_batch(chunks, states)
        for i, r in enumerate(res):
            outs[i].append(r.frames)
    for i, st in enumerate(states):
        outs[i].append(model.flush(st).frames)
    for i in range(3):
        torch.testing.assert_close(torch.cat(outs[i]), single[i], atol=ATOL, rtol=0)


@pytest.mark.parametrize("head,layers", [("ctc", 2)])
def test_window_with_adapter_equals_transformers_on_each_window(tmp_path, head, layers):
    """add_adapter: a model frame is 2**layers stacked frames; each window is transformers' forward."""
    from transformers import SeamlessM4TFeatureExtractor

    path = hf_tiny.build_tiny(
        "wav2vec2-bert", head, tmp_path / "m", add_adapter=True, num_adapter_layers=layers, output_hidden_size=24
    )
    model, ref, extractor = load_model(path), hf_tiny.reference(path), SeamlessM4TFeatureExtractor()
    hop = model.samples_per_frame
    assert hop == 320 * 2**layers
    audio = _audio(16000 * 2 + 100, seed=7)
    C, L, R = 3, 2, 1
    fr = hop * 1000 // 16000
    got, _ = _stream(
        model,
        audio,
        [1234],
        mode="window",
        chunk_ms=C * fr,
        left_context_ms=L * fr,
        lookahead_ms=R * fr,
        normalize="none",
    )
    total = model.num_frames(audio.numel())
    plan = window_plan(audio.numel(), C, L, R, hop, model.receptive_field_samples, T=total)
    assert got.shape[0] == total == sum(n for _, n, _, _ in plan) and len(plan) >= 5
    for f, n, s0, s1 in plan:
        with torch.no_grad():
            out = ref(**extractor(audio[s0:s1].numpy(), sampling_rate=16000, return_tensors="pt"))
        want = (out.logits if head == "ctc" else out.last_hidden_state)[0]
        a = s0 // hop
        assert want.shape[0] >= f - a + n
        torch.testing.assert_close(got[f : f + n], want[f - a : f - a + n], atol=ATOL, rtol=0)
