"""Helpers for the network tests: deterministic caption nodes and a protocol client.

``EnergyCaptioner`` stands in for the recogniser where a test checks transport,
not recognition: it closes a segment every ``segment_samples`` of 16 kHz audio
and writes the segment's RMS into the text (``"seg3 rms35"``), so a test can
check that the audio arrived intact (format, resampling, order) without a model.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.client import connect

from speechstream.net.protocol import encode_audio
from stream.events import AudioChunk, Event, FinalTranscript, PartialTranscript, SpeakerTurn
from stream.node import Node


@dataclass(frozen=True, slots=True)
class _Seg:
    index: int
    start: int
    n: int
    energy: float
    partials: int


class EnergyCaptioner(Node):
    """Per stream: a partial every ``partial_samples``, a final every ``segment_samples``."""

    def __init__(
        self,
        segment_samples: int = 16000,
        partial_samples: int = 4000,
        *,
        flood_partials: int = 1,
        speaker: str | tuple[str, ...] | None = None,
        name: str = "energy-captioner",
    ):
        super().__init__(name)
        self.segment_samples = segment_samples
        self.partial_samples = partial_samples
        self.flood_partials = flood_partials
        self.speaker = speaker
        self.state: dict[str, _Seg] = {}

    def _text(self, sid: str, seg: _Seg) -> str:
        rms = (seg.energy / max(seg.n, 1)) ** 0.5
        return f"seg{seg.index} rms{round(rms * 100)}"

    def _speaker(self, seg: _Seg) -> str | None:
        """A fixed label, or labels taking turns segment by segment."""
        if isinstance(self.speaker, tuple):
            return self.speaker[seg.index % len(self.speaker)]
        return self.speaker

    async def _final(self, sid: str, seg: _Seg, rate: int) -> None:
        speaker = self._speaker(seg)
        await self.push(
            FinalTranscript(
                sid,
                seg.start,
                sample_rate_hz=rate,
                segment_id=f"{sid}-{seg.index}",
                revision=seg.partials,
                text=self._text(sid, seg),
                end_sample=seg.start + seg.n,
                speaker=speaker,
            )
        )
        if speaker is not None:
            await self.push(
                SpeakerTurn(
                    sid,
                    seg.start,
                    sample_rate_hz=rate,
                    turn_id=f"{sid}-t{seg.index}",
                    speaker=speaker,
                    end_sample=seg.start + seg.n,
                )
            )

    async def process(self, event: Event) -> None:
        if not isinstance(event, AudioChunk):
            await self.push(event)
            return
        sid, rate = event.stream_id, event.sample_rate_hz
        x = np.asarray(event.samples, dtype=np.float64)
        seg = self.state.get(sid) or _Seg(0, event.sample, 0, 0.0, 0)
        pos = 0
        while pos < x.shape[0]:
            take = min(x.shape[0] - pos, self.segment_samples - seg.n)
            part = x[pos : pos + take]
            before = seg.n // self.partial_samples
            seg = replace(seg, n=seg.n + take, energy=seg.energy + float(np.dot(part, part)))
            pos += take
            if seg.n // self.partial_samples > before and seg.n < self.segment_samples:
                for _ in range(self.flood_partials):
                    seg = replace(seg, partials=seg.partials + 1)
                    await self.push(
                        PartialTranscript(
                            sid,
                            seg.start,
                            sample_rate_hz=rate,
                            segment_id=f"{sid}-{seg.index}",
                            revision=seg.partials - 1,
                            text=self._text(sid, seg),
                            end_sample=seg.start + seg.n,
                            speaker=self._speaker(seg),
                        )
                    )
            if seg.n == self.segment_samples:
                await self._final(sid, seg, rate)
                seg = _Seg(seg.index + 1, seg.start + seg.n, 0, 0.0, 0)
        self.state[sid] = seg

    async def flush(self, stream_id: str) -> None:
        seg = self.state.get(stream_id)
        if seg is not None and seg.n:
            rate = self._open.get(stream_id, (0, 16000))[1]
            await self._final(stream_id, seg, rate)
            self.state[stream_id] = _Seg(seg.index + 1, seg.start + seg.n, 0, 0.0, 0)

    def forget(self, stream_id: str) -> None:
        self.state.pop(stream_id, None)


class SpeakerAwareCaptioner(EnergyCaptioner):
    """An EnergyCaptioner that takes per-stream speaker settings (as the Diarizer does) and records
    them: ``(num_speakers, names)`` of every ``set_speakers`` call, per stream, in order."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.speaker_settings: dict[str, list[tuple[Any, ...]]] = {}

    def set_speakers(self, stream_id: str, num_speakers: int | None, names: tuple[str, ...]) -> None:
        self.speaker_settings.setdefault(stream_id, []).append((num_speakers, names))


def sine(seconds: float, rate: int, amp: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@dataclass
class Session:
    """What one client saw."""

    events: list[dict[str, Any]]
    close_code: int | None
    close_reason: str
    ready: dict[str, Any] | None
    sent_at: list[tuple[int, float]]  # (samples sent so far at 16 kHz, monotonic time)
    received_at: list[float]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def finals(self) -> list[dict[str, Any]]:
        return self.of("final_transcript")


async def stream_audio(
    url: str,
    audio: np.ndarray,
    rate: int,
    *,
    fmt: str = "s16",
    chunk_ms: int = 20,
    realtime: bool = False,
    start_extra: dict[str, Any] | None = None,
    controls: dict[int, dict[str, Any]] | None = None,
    timeout_s: float = 30.0,
    **connect_kw: Any,
) -> Session:
    """Connect, send ``start``, the audio in ``chunk_ms`` frames, ``end``; collect every message until close."""
    events: list[dict[str, Any]] = []
    received_at: list[float] = []
    sent_at: list[tuple[int, float]] = []
    ready: dict[str, Any] | None = None
    async with connect(url, max_size=2**22, compression=None, **connect_kw) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate_hz": rate, "format": fmt, **(start_extra or {})}))

        async def reader() -> None:
            nonlocal ready
            async for msg in ws:
                d = json.loads(msg)
                if d["type"] == "ready":
                    ready = d
                    continue
                events.append(d)
                received_at.append(time.monotonic())

        rtask = asyncio.create_task(reader())
        step = max(1, rate * chunk_ms // 1000)
        t0 = time.monotonic()
        for i, pos in enumerate(range(0, len(audio), step)):
            if controls and i in controls:
                await ws.send(json.dumps(controls[i]))
            block = audio[pos : pos + step]
            await ws.send(encode_audio(block, fmt))  # type: ignore[arg-type]
            sent_at.append(((pos + len(block)) * 16000 // rate, time.monotonic()))
            if realtime:
                delay = t0 + (pos + len(block)) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(rtask, timeout_s)
        code, reason = ws.close_code, ws.close_reason
    return Session(events, code, reason or "", ready, sent_at, received_at)


def assert_stream_well_formed(s: Session) -> None:
    """One EOS, last; finals never revised; every partial's segment is either open or finalised later."""
    types_ = [e["type"] for e in s.events]
    assert types_.count("end_of_stream") == 1 and types_[-1] == "end_of_stream", types_[-5:]
    seg_ids = [f["segment_id"] for f in s.finals]
    assert len(seg_ids) == len(set(seg_ids))
    sids = {e["stream_id"] for e in s.events}
    assert len(sids) == 1, sids


async def send_start(ws: Any, **extra: Any) -> dict[str, Any]:
    """Send a 16 kHz ``start`` (plus ``extra`` fields) and return the server's first answer."""
    await ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000, **extra}))
    return json.loads(await ws.recv())


async def read_until_closed(ws: Any) -> list[dict[str, Any]]:
    """Every message until the server closes, whatever the close code."""
    out = []
    try:
        async for msg in ws:
            out.append(json.loads(msg))
    except websockets.ConnectionClosed:
        pass
    return out
