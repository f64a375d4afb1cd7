"""Streaming downmix + resample to 16 kHz mono float32, with exact sample offsets.

Pure part: :func:`init_state` / :func:`step` / :func:`flush` over an immutable
:class:`ResampleState`. Async part: :class:`Resample`, a node that keeps one state
per stream.

Method. Channels are averaged (downmix) and the mono signal goes through libsoxr
(``soxr.ResampleStream``, quality ``HQ``), a real band-limited resampler. Output
offsets are an integer count of samples already produced, so a stream's time is
contiguous (``chunk.sample == previous.end_sample``) and never drifts. At end of
stream the total output length is forced to exactly
``round_half_up(n_in * 16000 / rate_in)`` (the length ``soxr.resample`` gives for
the whole signal at once), by trimming or zero-padding the final flush; libsoxr
already lands on that length, so the adjustment is a guard for very long streams.

Time of non-audio events passing through (errors, EOS) is converted from the
source rate to 16 kHz the same way: ``sample * 16000 // rate_in``.

Gaps (chunks dropped by a ``drop_oldest`` capture edge, already reported as
``QueueOverflow``) are filled with silence so stream time keeps matching capture
time; an overlap is bad input.

Bad input: NaN or inf samples, a non-float/int16 dtype, or a rate change
mid-stream raise :class:`~stream.errors.BadAudioError`, which the graph turns
into a fatal ``ErrorEvent(code="bad_audio")`` for that stream only.

The soxr handle inside a state is an opaque C object: a state is used linearly
(each ``step`` returns the state to use next; never step an old state twice).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import soxr

from .errors import BadAudioError
from .events import SAMPLE_RATE_HZ, AudioChunk, EndOfStream, ErrorEvent, Event
from .node import Node

__all__ = ["ResampleState", "init_state", "step", "flush", "to_mono_f32", "expected_length", "Resample"]

QUALITY = "HQ"  # libsoxr high quality: < 0.1 dB passband ripple, 16-bit+ stopband


@dataclass(frozen=True, slots=True)
class ResampleState:
    rate_in_hz: int
    rate_out_hz: int
    in_total: int  # input frames consumed so far
    out_total: int  # output samples produced so far (the next output offset)
    handle: Any = dataclasses.field(repr=False, compare=False, default=None)  # soxr.ResampleStream or None (same rate)


def expected_length(n_in: int, rate_in_hz: int, rate_out_hz: int = SAMPLE_RATE_HZ) -> int:
    """Output length for ``n_in`` input samples: round half up of ``n_in * out / in``, in integers."""
    return (2 * n_in * rate_out_hz + rate_in_hz) // (2 * rate_in_hz)


def to_mono_f32(samples: np.ndarray) -> np.ndarray:
    """Downmix ``(n,)`` or ``(n, channels)`` float or int16 audio to float32 mono; reject NaN/inf."""
    x = np.asarray(samples)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            raise BadAudioError(f"{bad} NaN/inf sample(s) in a chunk of {x.shape[0]} frames")
    else:
        raise BadAudioError(f"unsupported sample dtype {x.dtype} (expected float32/float64 or int16)")
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    elif x.ndim != 1:
        raise BadAudioError(f"audio must be shaped (n,) or (n, channels), got {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def init_state(rate_in_hz: int, rate_out_hz: int = SAMPLE_RATE_HZ) -> ResampleState:
    if rate_in_hz <= 0:
        raise BadAudioError(f"sample rate must be positive, got {rate_in_hz}")
    handle = None
    if rate_in_hz != rate_out_hz:
        handle = soxr.ResampleStream(rate_in_hz, rate_out_hz, 1, dtype="float32", quality=QUALITY)
    return ResampleState(rate_in_hz, rate_out_hz, 0, 0, handle)


def step(samples: np.ndarray, state: ResampleState) -> tuple[np.ndarray, ResampleState]:
    """Resample one chunk. Returns ``(out, new_state)``; ``out`` starts at ``state.out_total``."""
    x = to_mono_f32(samples)
    y = x if state.handle is None else state.handle.resample_chunk(x, last=False)
    y = np.asarray(y, dtype=np.float32)
    return y, dataclasses.replace(state, in_total=state.in_total + x.shape[0], out_total=state.out_total + y.shape[0])


def flush(state: ResampleState) -> tuple[np.ndarray, ResampleState]:
    """Drain the filter; the stream's total output is then exactly :func:`expected_length`."""
    if state.handle is None:
        return np.zeros(0, np.float32), state
    y = np.asarray(state.handle.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32)
    want = expected_length(state.in_total, state.rate_in_hz, state.rate_out_hz) - state.out_total
    if want < 0:
        want = 0  # cannot take back samples already emitted; never happens with libsoxr (tested)
    if y.shape[0] > want:
        y = y[:want]
    elif y.shape[0] < want:
        y = np.concatenate([y, np.zeros(want - y.shape[0], np.float32)])
    return y, dataclasses.replace(state, out_total=state.out_total + y.shape[0], handle=None)


def _retime(event: Event, rate_in_hz: int) -> Event:
    """Convert every ``sample``/``*_sample`` int field of an event to 16 kHz time."""
    if event.sample_rate_hz == SAMPLE_RATE_HZ:
        return event
    changes: dict[str, Any] = {"sample_rate_hz": SAMPLE_RATE_HZ}
    for f in dataclasses.fields(event):
        if (f.name == "sample" or f.name.endswith("_sample")) and isinstance(getattr(event, f.name), int):
            changes[f.name] = getattr(event, f.name) * SAMPLE_RATE_HZ // rate_in_hz
    return dataclasses.replace(event, **changes)


class _BadSamples(NamedTuple):
    """Per stream: non-finite input samples replaced so far, input samples seen, first bad one (input time)."""

    bad: int = 0
    seen: int = 0
    first: int = -1


# A stream whose NaN/inf share is above this, once MOSTLY_BAD_MIN_S of it has arrived (or at its end), stops.
MOSTLY_BAD_SHARE = 0.5
MOSTLY_BAD_MIN_S = 0.5


class Resample(Node):
    """Node: any rate / channel count in, 16 kHz mono float32 ``AudioChunk`` out.

    Non-finite samples (NaN, inf) are replaced by silence (0.0) and counted; the count is reported
    once per stream, as a non-fatal ``ErrorEvent(code="non_finite_samples")`` just before its
    ``EndOfStream``. A stream that is mostly non-finite (more than half of its samples, judged once
    0.5 s of it has arrived, or at its end) stops with a fatal ``bad_audio`` error.
    """

    def __init__(self, name: str = "resample"):
        super().__init__(name)
        self._states: dict[str, ResampleState] = {}
        self._bad: dict[str, _BadSamples] = {}

    def _sanitize(self, event: AudioChunk) -> np.ndarray:
        """The chunk's samples with NaN/inf replaced by 0 (counted); BadAudioError if mostly non-finite."""
        x = event.samples
        counts = self._bad.get(event.stream_id, _BadSamples())
        frames = int(x.shape[0]) if x.ndim else 1
        bad = 0
        if x.dtype.kind == "f":
            finite = np.isfinite(x)
            if not finite.all():
                bad = int(finite.size - np.count_nonzero(finite))
                first = (
                    counts.first
                    if counts.first >= 0
                    else event.sample + int(np.argmin(finite.reshape(frames, -1).all(axis=-1)))
                )
                x = np.where(finite, x, np.zeros((), x.dtype))
                counts = _BadSamples(counts.bad + bad, counts.seen, first)
        counts = counts._replace(seen=counts.seen + int(np.size(x)))
        self._bad[event.stream_id] = counts
        if counts.bad and counts.seen >= MOSTLY_BAD_MIN_S * event.sample_rate_hz:
            self._check_mostly_bad(counts)
        return x

    @staticmethod
    def _check_mostly_bad(counts: _BadSamples) -> None:
        if counts.bad > MOSTLY_BAD_SHARE * counts.seen:
            raise BadAudioError(
                f"the audio is mostly NaN/inf ({counts.bad} of {counts.seen} samples so far): stopping this stream"
            )

    async def _report_bad(self, sid: str, sample: int) -> None:
        """Once per stream, before its EndOfStream: how many NaN/inf samples became silence."""
        counts = self._bad.pop(sid, None)
        if counts is None or not counts.bad:
            return
        mostly = counts.bad > MOSTLY_BAD_SHARE * counts.seen  # a short stream that never reached the check
        rate = self._states[sid].rate_in_hz if sid in self._states else SAMPLE_RATE_HZ
        if mostly:
            msg = f"the audio is mostly NaN/inf ({counts.bad} of {counts.seen} samples)"
        else:
            msg = f"{counts.bad} NaN/inf sample(s) replaced by silence (the first at {counts.first / rate:.3f} s)"
        code = "bad_audio" if mostly else "non_finite_samples"
        await self.push(ErrorEvent(sid, sample, code=code, fatal=mostly, message=msg))

    async def process(self, event: Event) -> None:
        if not isinstance(event, AudioChunk):
            await self.push(_retime(event, event.sample_rate_hz))
            return
        sid = event.stream_id
        state = self._states.get(sid)
        if state is None:
            state = init_state(event.sample_rate_hz)
        elif state.rate_in_hz != event.sample_rate_hz:
            raise BadAudioError(f"sample rate changed mid-stream from {state.rate_in_hz} to {event.sample_rate_hz} Hz")
        if event.sample < state.in_total:
            raise BadAudioError(f"chunk at input sample {event.sample} overlaps audio up to {state.in_total}")
        start = state.out_total
        if event.sample > state.in_total:
            # A gap: a drop_oldest capture edge dropped chunks. Fill it with silence so
            # stream time stays equal to capture time (the drop was reported upstream).
            gap, state = step(np.zeros(event.sample - state.in_total, np.float32), state)
            if gap.shape[0]:
                await self.push(AudioChunk(sid, start, samples=gap))
            start = state.out_total
        out, state = step(self._sanitize(event), state)
        self._states[sid] = state
        if out.shape[0]:
            await self.push(AudioChunk(sid, start, samples=out))

    async def flush(self, stream_id: str) -> None:
        # Only at end of stream: flushing the filter mid-stream would cut the signal.
        pass

    async def end_of_stream(self, eos: EndOfStream) -> None:
        sid = eos.stream_id
        state = self._states.get(sid)
        if state is None:
            await self.push(_retime(eos, eos.sample_rate_hz))
            return
        start = state.out_total
        out, state = flush(state)
        self._states[sid] = state
        if out.shape[0]:
            await self.push(AudioChunk(sid, start, samples=out))
        await self._report_bad(sid, state.out_total)
        await self.push(dataclasses.replace(eos, sample=state.out_total, sample_rate_hz=SAMPLE_RATE_HZ))

    def forget(self, stream_id: str) -> None:
        self._states.pop(stream_id, None)
        self._bad.pop(stream_id, None)

    def output_time(self, sample: int, rate_hz: int) -> tuple[int, int]:
        return sample * SAMPLE_RATE_HZ // rate_hz, SAMPLE_RATE_HZ
