"""The mel fbank frontend against transformers' SeamlessM4TFeatureExtractor, and chunked against whole-utterance."""

import numpy as np
import pytest
import torch

from engines import frontend_fbank as fb

transformers = pytest.importorskip("transformers")

ATOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    return transformers.SeamlessM4TFeatureExtractor()


def _audio(num_samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / 16000.0
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * t) * np.sin(2 * np.pi * 3.0 * t)
    return (tone + 0.05 * rng.standard_normal(num_samples)).astype(np.float32)


def test_mel_filters_match_hf():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(
        num_frequency_bins=257,
        num_mel_filters=80,
        min_frequency=20,
        max_frequency=8000,
        sampling_rate=16000,
        norm=None,
        mel_scale="kaldi",
        triangularize_in_mel_space=True,
    )
    np.testing.assert_allclose(fb.mel_filter_bank(), ref, atol=1e-12)


@pytest.mark.parametrize("num_samples", [560, 1234, 16000, 16161, 16000 * 3 + 37])
def test_single_utterance_matches_hf(reference, num_samples):
    audio = _audio(num_samples)
    ref = reference(audio, sampling_rate=16000, return_tensors="np")
    features, mask = fb.extract(torch.from_numpy(audio))
    assert features.shape == ref["input_features"].shape
    np.testing.assert_allclose(features.numpy(), ref["input_features"], atol=ATOL)
    np.testing.assert_array_equal(mask.numpy(), ref["attention_mask"])


def test_odd_frame_count_ends_in_masked_frame(reference):
    audio = _audio(400 + 160 * 4)  # 5 frames -> 3 stacked, last one masked
    features, mask = fb.extract(torch.from_numpy(audio))
    assert fb.frames_for_samples(audio.size) == 5
    assert mask.tolist() == [[1, 1, 0]]
    assert torch.all(features[0, 2, 80:] == 0)


def test_batch_padding_matches_hf(reference):
    audios = [_audio(n, seed=i) for i, n in enumerate([3000, 5000, 4321, 8000])]
    ref = reference(audios, sampling_rate=16000, return_tensors="np")
    features, mask = fb.extract([torch.from_numpy(a) for a in audios])
    np.testing.assert_allclose(features.numpy(), ref["input_features"], atol=ATOL)
    np.testing.assert_array_equal(mask.numpy(), ref["attention_mask"])


def test_unnormalised_log_mel_matches_hf(reference):
    audio = _audio(7777)
    np.testing.assert_allclose(
        fb.log_mel_frames(torch.from_numpy(audio)).numpy(), reference._extract_fbank_features(audio), atol=ATOL
    )


def _run_stream(stream, audio, chunk):
    state = stream.init_state()
    outs = []
    for start in range(0, audio.numel(), chunk):
        out, state = stream.step(audio[start : start + chunk], state)
        outs.append(out)
    tail, _ = stream.flush(state)
    return torch.cat(outs + [tail])


@pytest.mark.parametrize("chunk", [1, 159, 160, 401, 1600, 5000])
def test_stream_unnormalised_equals_whole_exactly(chunk):
    audio = torch.from_numpy(_audio(16000 + 123))
    whole = fb.stack_frames(fb.log_mel_frames(audio))
    streamed = _run_stream(fb.FbankStream(norm="none"), audio, chunk)
    assert streamed.shape == whole.shape
    assert torch.equal(streamed, whole)


def test_stream_fixed_stats_equals_whole():
    audio = torch.from_numpy(_audio(16000))
    raw = fb.log_mel_frames(audio)
    mean, std = raw.mean(0), raw.std(0)
    whole = fb.stack_frames((raw - mean) / std)
    streamed = _run_stream(fb.FbankStream(norm="fixed", mean=mean, std=std), audio, 777)
    torch.testing.assert_close(streamed, whole, atol=1e-6, rtol=0)


def test_stream_cumulative_is_causal_running_normalisation():
    audio = torch.from_numpy(_audio(16000))
    raw = fb.log_mel_frames(audio).to(torch.float64)
    expected = torch.empty_like(raw)
    for t in range(raw.shape[0]):
        seen = raw[: t + 1]
        var = seen.var(0, unbiased=True) if t > 0 else torch.ones(raw.shape[1], dtype=torch.float64)
        expected[t] = (raw[t] - seen.mean(0)) / torch.sqrt(var + fb.NORM_EPS)
    streamed = _run_stream(fb.FbankStream(norm="cumulative"), audio, 1000)
    torch.testing.assert_close(streamed, fb.stack_frames(expected.float()), atol=1e-4, rtol=0)
    # the last frame has seen the whole utterance, so it equals per-utterance normalisation
    utterance = fb.stack_frames(fb.normalize_per_mel_bin(raw.float()))
    torch.testing.assert_close(streamed[-1, 80:], utterance[-1, 80:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("chunk", [333, 1000, 16000])
def test_stream_cumulative_with_prior_is_the_map_running_normalisation(chunk):
    """Running sums started from a prior of k pseudo-frames: frame t uses
    mean_t = (k mu + sum x) / (k + t + 1) and var_t = ((k - 1) s^2 + k mu^2 + sum x^2 - n mean_t^2) / (n - 1)."""
    audio = torch.from_numpy(_audio(16000))
    raw = fb.log_mel_frames(audio).to(torch.float64)
    mu = torch.linspace(3.0, 8.0, fb.NUM_MEL_BINS, dtype=torch.float64)
    sd = torch.linspace(2.0, 4.0, fb.NUM_MEL_BINS, dtype=torch.float64)
    k = 40.0
    prior = fb.FbankPrior(mu, sd, k)
    expected = torch.empty_like(raw)
    for t in range(raw.shape[0]):
        seen = raw[: t + 1]
        n = k + t + 1
        mean = (k * mu + seen.sum(0)) / n
        var = ((k - 1) * sd**2 + k * mu**2 + (seen**2).sum(0) - n * mean**2) / (n - 1)
        expected[t] = (raw[t] - mean) / torch.sqrt(var + fb.NORM_EPS)
    streamed = _run_stream(fb.FbankStream(norm="cumulative", prior=prior), audio, chunk)
    torch.testing.assert_close(streamed, fb.stack_frames(expected.float()), atol=1e-4, rtol=0)
    torch.testing.assert_close(fb.stream_features(audio, prior=prior), streamed, atol=0, rtol=0)
    # without a prior the first frame is normalised by itself alone (all zeros); with one it is not
    plain = _run_stream(fb.FbankStream(norm="cumulative"), audio, chunk)
    assert torch.equal(plain[0, :80], torch.zeros(80)) and streamed[0, :80].abs().min() > 0.1


def test_prior_json_round_trip_and_preprocessor_key():
    prior = fb.FbankPrior(torch.arange(80, dtype=torch.float64) / 7, torch.ones(80, dtype=torch.float64) * 2.5, 200.0)
    again = fb.prior_from_preprocessor({"sampling_rate": 16000, fb.PRIOR_KEY: prior.to_json()})
    torch.testing.assert_close(again.mean, prior.mean, atol=1e-6, rtol=0)
    assert again.frames == 200.0 and torch.equal(again.std, prior.std)
    assert fb.prior_from_preprocessor({"sampling_rate": 16000}) is None
    assert fb.prior_from_preprocessor(None) is None


def test_stream_state_is_bounded():
    stream = fb.FbankStream(norm="cumulative")
    state = stream.init_state()
    chunk = torch.from_numpy(_audio(1234))
    for _ in range(50):
        _, state = stream.step(chunk, state)
        assert state.pending.numel() < fb.FRAME_LENGTH
        assert state.unpaired.shape[0] <= 1


def test_stream_rejects_unknown_normalisation():
    with pytest.raises(ValueError, match="cumulative"):
        fb.FbankStream(norm="utterance")
