"""The offline recogniser node: each VAD segment recognised whole when it ends; finals only.

::

    rec = OfflineRecognizer("path/to/model", RecognizerConfig(mode="offline"))
    graph = Graph(sources=[...], nodes=[Resample(), VadNode.webrtc(), rec, FanOut([...])])

(``Recognizer(model, RecognizerConfig(mode="offline"))`` builds this node too.) Per stream, the
audio of the open segment (``speech=False`` chunks are skipped) is buffered; on a
:class:`SpeechEnded` from an upstream VAD node (cut at its ``sample``), a ``Flush`` control frame or
the end of stream, the segment goes through the model's offline forward and the CTC decoder with
the endpoint rules (:meth:`engines.online.recognizer.OnlineRecognizer.decode_segment`, on the
node's executor). A segment longer than ``max_utterance_ms`` is cut in the quietest 100 ms of the
buffer's last quarter; the rest starts the next segment. Events as
:class:`~stream.recognizer.Recognizer`'s (segment ids ``"<stream_id>-<n>"``), without partials;
each final has revision 0. A chunk whose ``sample`` jumps ahead is preceded by zeros;
overlapping samples are skipped. Every event is passed on but the VAD's internal
``SpeechPausing``, at which the segment's decode starts ahead (:mod:`stream.recognizer_base`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.ctc import EndReason, SegmentUpdate, StreamingCTCDecoder
from engines.online.config import RecognizerConfig
from engines.online.recognizer import Samples

from .errors import ConfigError
from .events import SAMPLE_RATE_HZ, AudioChunk, EndOfStream, Event, SpeechEnded, SpeechPausing
from .executor import Executor
from .recognizer_base import RecognizerNode

__all__ = ["OfflineRecognizer"]


@dataclass(frozen=True)
class _Segment:
    """The open segment's audio (immutable pieces), and the next segment index."""

    pieces: tuple[Samples, ...] = ()
    start: int = 0  # stream sample of the first buffered sample
    length: int = 0
    next_index: int = 0


def _quietest_cut(pieces: tuple[Samples, ...], length: int) -> int:
    """Max length: the middle of the quietest 100 ms (20 ms steps) in the buffer's last quarter (at
    most 5 s), so the cut falls in a pause, not inside a word (no CTC frames yet)."""
    x = np.concatenate(pieces)
    step, win = 320, 1600
    look = min(length // 4, 5 * SAMPLE_RATE_HZ)
    a = max(0, length - look) // step * step
    n = (length - a) // step
    if n * step < win:
        return length
    e = np.square(x[a : a + n * step].astype(np.float64)).reshape(n, step).sum(axis=1)
    k = win // step
    run = np.convolve(e, np.ones(k), mode="valid")  # energy of each 100 ms window
    best = len(run) - 1 - int(np.argmin(run[::-1]))  # the latest of equally quiet windows
    return a + best * step + win // 2


class OfflineRecognizer(RecognizerNode):
    """Whole-segment CTC recognition of every stream that passes (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        config: RecognizerConfig = RecognizerConfig(mode="offline"),
        *,
        executor: Executor | None = None,
        decoder: StreamingCTCDecoder | None = None,
        name: str = "recognizer",
    ):
        if config.mode != "offline":
            raise ConfigError(f"OfflineRecognizer needs mode='offline', not {config.mode!r} (streaming: Recognizer)")
        super().__init__(model, config, executor=executor, decoder=decoder, name=name)
        self._segments: dict[str, _Segment] = {}

    def _has_stream(self, stream_id: str) -> bool:
        return stream_id in self._segments

    def forget(self, stream_id: str) -> None:
        self._segments.pop(stream_id, None)
        super().forget(stream_id)

    # ------------------------------------------------------------------ sync work (executor)

    def _decode_segment(
        self, seg: _Segment, reason: EndReason, language: str | None = None
    ) -> tuple[tuple[SegmentUpdate, ...], _Segment]:
        """Forward the buffered segment, greedy/LM decode it with the endpoint rules; finals only."""
        x = np.concatenate(seg.pieces) if seg.pieces else np.zeros(0, np.float32)
        self._prepare_language_or_fail(language)
        finals, next_index = self.online.decode_segment(x, reason=reason, language=language, next_index=seg.next_index)
        return finals, _Segment(next_index=next_index)

    # ------------------------------------------------------------------ segments

    async def _close(self, sid: str, reason: EndReason, upto: int | None = None) -> None:
        """Decode the open segment of ``sid`` (up to stream time ``upto``: what follows starts the next)."""
        seg = self._segments.get(sid)
        if seg is None or not seg.length:
            return
        rest: tuple[Samples, ...] = ()
        if upto is not None and upto < seg.start + seg.length:  # the speech ended inside the buffer
            keep = max(0, upto - seg.start)
            x = np.concatenate(seg.pieces)
            rest = (x[keep:],)
            seg = dataclasses.replace(seg, pieces=(x[:keep],), length=keep)
        ahead = self._taken_ahead(sid, seg, upto) if reason == "vad" and upto is not None and not rest else None
        work = ahead or self.executor.run(self._decode_segment, seg, reason, self._language_of(sid))
        finals, new = await work
        if rest:  # what follows the cut starts the next segment
            new = dataclasses.replace(new, pieces=rest, start=seg.start + seg.length, length=int(rest[0].shape[0]))
        self._segments[sid] = new
        await self._emit(sid, seg.start, finals)

    async def _audio(self, chunk: AudioChunk) -> None:
        sid = chunk.stream_id
        if chunk.speech is False:  # outside VAD speech: nothing to recognise
            await self.push(chunk)
            return
        x = self._check(chunk)
        seg = self._segments.get(sid) or _Segment()
        if not seg.length:
            seg = dataclasses.replace(seg, start=chunk.sample)
        gap = chunk.sample - (seg.start + seg.length)
        if gap > 0:
            x = np.concatenate([np.zeros(gap, np.float32), x])
        elif gap < 0:
            x = x[-gap:]
        seg = dataclasses.replace(seg, pieces=seg.pieces + (x,), length=seg.length + int(x.shape[0]))
        self._segments[sid] = seg
        if seg.length * 1000 >= self.config.max_utterance_ms * SAMPLE_RATE_HZ:
            await self._close(sid, "max_length", upto=seg.start + _quietest_cut(seg.pieces, seg.length))
        await self.push(chunk)

    # ------------------------------------------------------------------ hooks

    async def process(self, event: Event) -> None:
        if isinstance(event, AudioChunk):
            self._ahead.pop(event.stream_id, None)  # the segment changes: work decoded ahead is stale
            await self._audio(event)
            return
        if isinstance(event, SpeechPausing):  # decode ahead (RecognizerNode); the hint goes no further
            seg = self._segments.get(event.stream_id)
            cfg = self.config
            if (
                seg is not None
                and seg.length
                and seg.start + seg.length == event.sample
                and cfg.vad_endpoints
                and cfg.decode_ahead
            ):
                lang = self._language_of(event.stream_id)
                self._decode_ahead(event.stream_id, seg, event.sample, self._decode_segment, seg, "vad", lang)
            return
        if isinstance(event, SpeechEnded) and self.config.vad_endpoints:
            await self._close(event.stream_id, "vad", upto=event.sample)
        await self.push(event)

    async def flush(self, stream_id: str) -> None:
        """Decode the open segment now."""
        await self._close(stream_id, "eos")

    async def end_of_stream(self, eos: EndOfStream) -> None:
        await self._close(eos.stream_id, "eos")
        await self.push(eos)
