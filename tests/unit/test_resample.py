"""Streaming resample/downmix: exact lengths and offsets, chunked == one-shot, bad input."""

from fractions import Fraction

import numpy as np
import pytest
import soxr

from stream.errors import BadAudioError
from stream.events import AudioChunk, EndOfStream, ErrorEvent
from stream.graph import Graph
from stream.node import Collect
from stream.resample import Resample, expected_length, flush, init_state, step, to_mono_f32
from stream.sources.array import ArraySource

ODD_SIZES = [1, 7, 333, 1021, 4096, 17, 9999, 2]


def _chunked(x: np.ndarray, rate: int, sizes=ODD_SIZES) -> tuple[np.ndarray, list[int]]:
    state = init_state(rate)
    outs, offsets = [], []
    pos, i = 0, 0
    while pos < x.shape[0]:
        k = sizes[i % len(sizes)]
        offsets.append(state.out_total)
        y, state = step(x[pos : pos + k], state)
        outs.append(y)
        pos += k
        i += 1
    offsets.append(state.out_total)
    y, state = flush(state)
    outs.append(y)
    assert state.out_total == sum(o.shape[0] for o in outs)
    return np.concatenate(outs), offsets


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 32000, 44100, 48000])
def test_expected_length_is_exact_round_half_up(rate):
    for n in [0, 1, 2, 3, 441, 12345, 3 * 3600 * rate + 7]:  # up to 3 hours
        exact = Fraction(n * 16000, rate)
        assert expected_length(n, rate) == int(exact + Fraction(1, 2)) // 1


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000])
def test_chunked_matches_one_shot(rate):
    rng = np.random.default_rng(rate)
    t = np.arange(rate * 3) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
    y, offsets = _chunked(x, rate)
    ref = soxr.resample(x, rate, 16000, "HQ")
    assert y.shape[0] == ref.shape[0] == expected_length(x.shape[0], rate)
    np.testing.assert_allclose(y, ref, atol=1e-5)
    assert offsets == sorted(offsets)  # monotonic


def test_long_stream_total_length_exact():
    # 10 minutes at 44.1 kHz in odd chunks, generated blockwise (never one big array).
    rate, seconds = 44100, 600
    rng = np.random.default_rng(0)
    state = init_state(rate)
    produced = 0
    n_in = 0
    sizes = [4410 * 3 + 1, 999, 65537, 12345]
    i = 0
    while n_in < rate * seconds:
        k = min(sizes[i % len(sizes)], rate * seconds - n_in)
        y, new = step(rng.standard_normal(k).astype(np.float32) * 0.1, state)
        assert new.out_total == state.out_total + y.shape[0]  # contiguous
        produced += y.shape[0]
        n_in += k
        state = new
        i += 1
    y, state = flush(state)
    produced += y.shape[0]
    assert produced == state.out_total == expected_length(rate * seconds, rate) == 16000 * seconds


def test_downmix_and_int16():
    x = (np.sin(np.arange(4800) / 10) * 10000).astype(np.int16)
    stereo = np.stack([x, x], axis=1)
    np.testing.assert_allclose(to_mono_f32(stereo), x.astype(np.float32) / 32768.0, atol=1e-7)
    lr = np.stack([np.ones(10, np.float32), -np.ones(10, np.float32)], axis=1)
    assert np.all(to_mono_f32(lr) == 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(bad):
    x = np.zeros(100, np.float32)
    x[37] = bad
    with pytest.raises(BadAudioError, match="NaN/inf"):
        step(x, init_state(48000))


async def test_node_offsets_contiguous_and_eos_exact():
    rate = 44100
    x = np.random.default_rng(1).standard_normal((rate * 2 + 3, 2)).astype(np.float32) * 0.1
    sink = Collect()
    await Graph(
        [ArraySource(x, rate, stream_id="s", block=[511, 4097, 3])], [Resample(), sink], bug_policy="raise"
    ).run()
    chunks = [e for e in sink.events if isinstance(e, AudioChunk)]
    assert all(c.sample_rate_hz == 16000 and c.samples.dtype == np.float32 and c.samples.ndim == 1 for c in chunks)
    pos = 0
    for c in chunks:
        assert c.sample == pos
        pos = c.end_sample
    eos = sink.events[-1]
    assert isinstance(eos, EndOfStream) and eos.sample == pos == expected_length(x.shape[0], rate)
    ref = soxr.resample(x.mean(axis=1), rate, 16000, "HQ")
    np.testing.assert_allclose(np.concatenate([c.samples for c in chunks]), ref, atol=1e-5)


async def test_isolated_non_finite_samples_become_silence_with_one_warning_event():
    """A few NaN/inf samples spread over many chunks: replaced by zeros, one non-fatal event with the count."""
    x = (np.random.default_rng(3).standard_normal(48000 * 3) * 0.1).astype(np.float32)
    bad_at = [100, 5000, 30000, 30001, 60000, 90000, 100000, 120000, 130000, 143000]
    x[bad_at[::2]] = np.nan
    x[bad_at[1::2]] = np.inf
    sink = Collect()
    await Graph([ArraySource(x, 48000, stream_id="s", block=4800)], [Resample(), sink], bug_policy="raise").run()
    errors = [e for e in sink.events if isinstance(e, ErrorEvent)]
    assert [(e.code, e.fatal) for e in errors] == [("non_finite_samples", False)]
    assert "10 NaN/inf" in errors[0].message
    audio = [e for e in sink.events if isinstance(e, AudioChunk)]
    y = np.concatenate([c.samples for c in audio])
    assert np.isfinite(y).all() and y.shape[0] == expected_length(x.shape[0], 48000)  # the stream went on to its end
    assert isinstance(sink.events[-1], EndOfStream)


async def test_mostly_non_finite_stream_stops_with_a_clear_error_for_that_stream_only():
    good = np.zeros(48000, np.float32)
    bad = np.full(48000, np.nan, np.float32)
    bad[:4800] = 0.0
    sink = Collect()
    graph = Graph(
        [ArraySource(good, 48000, stream_id="good", block=4800), ArraySource(bad, 48000, stream_id="bad", block=4800)],
        [Resample(), sink],
        bug_policy="raise",
    )
    await graph.run()
    errors = [e for e in sink.events if isinstance(e, ErrorEvent)]
    assert [(e.stream_id, e.code, e.fatal) for e in errors] == [("bad", "bad_audio", True)]
    assert "mostly NaN/inf" in errors[0].message
    assert errors[0].sample_rate_hz == 16000
    good_audio = [e for e in sink.of("good") if isinstance(e, AudioChunk)]
    assert sum(c.num_samples for c in good_audio) == 16000
    assert [type(e).__name__ for e in sink.of("bad")][-2:] == ["ErrorEvent", "EndOfStream"]
    assert isinstance(sink.of("good")[-1], EndOfStream)


async def test_gap_in_capture_is_filled_with_silence():
    from stream.sources.base import Source

    class Gappy(Source):
        sample_rate_hz = 16000

        async def run(self, emit):
            await emit(AudioChunk(self.stream_id, 0, samples=np.ones(1600, np.float32)))
            await emit(AudioChunk(self.stream_id, 4800, samples=np.ones(1600, np.float32)))  # 3200 lost

    sink = Collect()
    await Graph([Gappy("g")], [Resample(), sink], bug_policy="raise").run()
    chunks = [e for e in sink.events if isinstance(e, AudioChunk)]
    assert [(c.sample, c.num_samples) for c in chunks] == [(0, 1600), (1600, 3200), (4800, 1600)]
    assert not chunks[1].samples.any() and sink.events[-1] == EndOfStream("g", 6400)
