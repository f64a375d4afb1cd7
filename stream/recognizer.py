"""The recogniser node: audio in, partial/final transcripts and endpoints out.

::

    rec = Recognizer("path/to/model", RecognizerConfig(chunk_ms=640))
    graph = Graph(sources=[...], nodes=[Resample(), VadNode.webrtc(), rec, FanOut([...])])

The recognition itself is :class:`engines.online.recognizer.OnlineRecognizer` (synchronous, no
asyncio; the facade's ``speechstream.Recognizer``): this node keeps each stream's state, batches and
turns its updates into events. Per stream, each :class:`~stream.events.AudioChunk` (16 kHz mono)
goes through the engine's streaming ``step`` (frontend -> cached encoder -> CTC logits) and the streaming CTC decoder
(:mod:`engines.ctc`) in one call on the node's :class:`~stream.executor.Executor`, so the loop
never waits on the model.  The decoder's updates become events:

- :class:`PartialTranscript` per chunk while a segment has text (only when it changed);
- :class:`FinalTranscript` when a segment closes, then :class:`Endpoint` (``reason``);
- segment ids are ``"<stream_id>-<n>"``; ``revision`` counts up within a segment and the
  final takes the next one.

Segments close on the CTC endpoint rules (``RecognizerConfig.endpoint``), on a
:class:`SpeechEnded` from an upstream VAD node (cut at its ``sample``; the frames the engine still
buffers are peeked at so the final comes at once, and a cut that falls inside a word waits for
the word's end, see :meth:`engines.ctc.StreamingCTCDecoder.request_endpoint`), on a ``Flush``
control frame (decoder only: the engine keeps its audio), and at end of stream (engine flushed,
then the decoder; every final precedes the stream's ``EndOfStream``).

``mode="offline"`` recognises each VAD segment whole when it ends (the model's offline forward
on the segment; ``speech=False`` audio is skipped), cut at ``max_utterance_ms`` (in the quietest
100 ms of the buffer's last quarter; the rest starts the next segment): finals only.

Cross-stream batching (streaming modes): chunks of several streams that arrive together go
through one ``LoadedModel.step_batch`` forward, at most ``max_batch`` of them (one per stream) and
no chunk waits more than ``max_wait_ms``. A chunk joins the pending batch; the batch runs when it
is full, when its stream sends another chunk, before any other event (so output order is input
order), or when the wait runs out. A batch that raises is redone stream by stream, so one bad
stream only fails itself. ``max_batch=1`` steps each chunk on its own, at once.

Languages (multilingual checkpoints, MMS): ``RecognizerConfig.language`` is every stream's default;
``set_language(stream_id, code)`` before a stream's first audio picks another for that stream (the
WebSocket server calls it with the ``start`` message's ``language``). The engine runs each stream on
its language's view of the one loaded model (adapter weights, shared base weights: loaded on the
executor with the first stream of a language, then cached) and one decoder per language holds its
vocabulary. Streams of different languages may share a batch; the engine runs one forward per language.

Stream time: a chunk whose ``sample`` jumps ahead (a drop-oldest edge dropped audio) is
preceded by zeros so word times stay exact; overlapping samples are skipped.

Every event is passed on (audio included, for speaker nodes downstream).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from engines.errors import EngineError
from engines.online.config import RecognizerConfig
from engines.online.decoder import build_decoder, check_model_language
from engines.online.recognizer import OnlineRecognizer, OnlineState, RecognizerStats

from .errors import BadAudioError, ConfigError, StreamError
from .events import (
    SAMPLE_RATE_HZ,
    AudioChunk,
    EndOfStream,
    Endpoint,
    Event,
    FinalTranscript,
    PartialTranscript,
    SpeechEnded,
    Word,
)
from .executor import Executor
from .node import Node

__all__ = ["RecognizerConfig", "Recognizer", "RecognizerStats", "build_decoder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Segment:
    """Offline mode: audio of the open segment (immutable pieces), and the next segment index."""

    pieces: tuple[np.ndarray, ...] = ()
    start: int = 0  # stream sample of the first buffered sample
    length: int = 0
    next_index: int = 0


_Stream = OnlineState  # one stream's state (engine, decoder, stream time), kept by the node


class _Pending(NamedTuple):
    """A chunk waiting for the next batched forward: its samples (gap-fixed) and stream state."""

    chunk: AudioChunk
    samples: np.ndarray
    state: _Stream


def _quietest_cut(pieces: tuple[np.ndarray, ...], length: int) -> int:
    """Offline max length: the middle of the quietest 100 ms (20 ms steps) in the buffer's last
    quarter (at most 5 s), so the cut falls in a pause, not inside a word (no CTC frames yet)."""
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


class Recognizer(Node):
    """Streaming CTC recognition of every stream that passes (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        config: RecognizerConfig = RecognizerConfig(),
        *,
        executor: Executor | None = None,
        decoder: Any = None,
        name: str = "recognizer",
    ):
        super().__init__(name)
        self.model_arg = model  # a LoadedModel, or a path / hub id loaded at start
        self.config = config
        self.model: Any = None
        self.decoder: Any = decoder  # a prebuilt engines.ctc.StreamingCTCDecoder (else built at start)
        self._executor = executor
        self._own_executor = executor is None
        self._streams: dict[str, _Stream] = {}
        self._segments: dict[str, _Segment] = {}  # offline mode
        # cross-stream batching: (chunk, samples, state) waiting for the next forward, one per stream
        self._pending: tuple[_Pending, ...] = ()
        self._batch_lock = asyncio.Lock()  # the node task and the wait timer take turns
        self._timer: asyncio.Task[None] | None = None
        self._timer_error: BaseException | None = None  # bug_policy="raise": re-raised by the node task
        # multilingual checkpoints: a stream's language (set_language) and one decoder per language
        # (its vocabulary); the engine keeps one adapter view per language, the base weights shared
        self._stream_languages: dict[str, str] = {}
        self.engine: Any = None  # the engines.online.OnlineRecognizer, built at start
        self.stats = RecognizerStats()  # shared with the engine-side recogniser (its counters)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.config.max_batch < 1 or self.config.max_wait_ms < 0:
            c = self.config
            raise ConfigError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {c.max_batch}, {c.max_wait_ms}")
        if self._executor is None:
            self._executor = Executor(max_workers=1, name=self.name)
        try:
            self.model, self.decoder = await self._executor.run(self._load)
        except BaseException:
            await self.stop()
            raise

    def _load(self) -> tuple[Any, Any]:
        # ConfigError on a model that cannot load, a bad mode or geometry, a decoder that does not fit
        rec = OnlineRecognizer.from_pretrained(self.model_arg, self.config, decoder=self.decoder, stats=self.stats)
        self.engine = rec
        for language in set(self._stream_languages.values()):  # set before start
            check_model_language(rec.model, language)
        return rec.model, rec.decoder_for(OnlineState(None, None, 0, 0, rec.language))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._own_executor and self._executor is not None:
            await self._executor.aclose()
            self._executor = None

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)
        self._segments.pop(stream_id, None)
        self._stream_languages.pop(stream_id, None)

    # ------------------------------------------------------------------ languages

    def set_language(self, stream_id: str, language: str | None) -> None:
        """Recognise ``stream_id`` in ``language`` (multilingual checkpoints), from its first audio on.
        Cheap (no file is read here: the adapter loads on the executor with the stream's first chunk).
        Raises ConfigError, listing the available codes, for one the model does not have (checked at
        start for languages set before it)."""
        if language is None:
            self._stream_languages.pop(stream_id, None)
            return
        if self.model is not None:
            check_model_language(self.model, language)
        if stream_id in self._streams or stream_id in self._segments:
            raise ConfigError(f"stream {stream_id!r} is already running; its language is set before its audio")
        self._stream_languages[stream_id] = language

    def _language_of(self, stream_id: str) -> str | None:
        return self._stream_languages.get(stream_id, getattr(self.model, "language", None))

    def _prepare_language(self, language: str | None) -> Any:
        """(executor) The decoder of ``language``, building its engine view (adapter file) first."""
        return self.engine.prepare_language(language)

    def _prepare_language_or_fail(self, language: str | None) -> Any:
        """As _prepare_language; a language whose files cannot be read fails this stream only."""
        try:
            return self._prepare_language(language)
        except (EngineError, ConfigError) as exc:
            raise StreamError(f"language {language!r}: {exc}", code="language_unavailable") from exc

    def _decoder_of(self, st: _Stream) -> Any:
        return self.engine.decoder_for(st)

    # ------------------------------------------------------------------ sync work (executor)

    def _new_stream(self, first_sample: int, language: str | None = None) -> _Stream:
        return self.engine.init_state(first_sample, language)

    def _step(self, samples: np.ndarray, st: _Stream, end: bool) -> tuple[tuple[Any, ...], _Stream]:
        return self.engine.step(samples, st, end=end)

    def _step_many(self, batch: tuple[_Pending, ...]) -> list[tuple[tuple[Any, ...], _Stream]]:
        """One batched forward for chunks of distinct streams (OnlineRecognizer.step_many)."""
        return self.engine.step_many([(x, st) for _, x, st in batch])

    # ------------------------------------------------------------------ batching

    async def _drain(self) -> None:
        """Run the pending batch (caller holds ``_batch_lock``) and emit in arrival order."""
        if self._timer_error is not None:
            raise self._timer_error
        batch, self._pending = self._pending, ()
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
        if not batch:
            return
        try:
            results = await self._executor.run(self._step_many, batch) if len(batch) > 1 else None
        except Exception:  # redo stream by stream: only the bad stream fails (error policy per stream)
            # logged, so a bug in step_batch itself is not hidden by the per-stream redo succeeding
            log.warning("batched step of %d streams failed; redoing them one by one", len(batch), exc_info=True)
            results = None
        for i, (chunk, x, st) in enumerate(batch):
            one = results[i] if results is not None else None
            await self._guarded(chunk.stream_id, chunk.sample, chunk.sample_rate_hz, self._finish, (chunk, x, st, one))

    async def _finish(self, item: tuple[AudioChunk, np.ndarray, _Stream, Any]) -> None:
        chunk, x, st, result = item
        updates, st = result if result is not None else await self._executor.run(self._step, x, st, False)
        self._streams[chunk.stream_id] = st
        await self._emit(chunk.stream_id, st.origin, updates)
        await self.push(chunk)

    async def _drain_later(self) -> None:
        await asyncio.sleep(self.config.max_wait_ms / 1000)
        async with self._batch_lock:
            if self._timer is asyncio.current_task():
                try:
                    await self._drain()
                except Exception as exc:  # only with bug_policy="raise" (else the error policy caught it)
                    self._timer_error = exc

    # ------------------------------------------------------------------ hooks

    # -- offline mode: whole segments --------------------------------------------------------

    def _decode_segment(
        self, seg: _Segment, reason: str, language: str | None = None
    ) -> tuple[tuple[Any, ...], _Segment]:
        """Forward the buffered segment, greedy/LM decode it with the endpoint rules; finals only."""
        x = np.concatenate(seg.pieces) if seg.pieces else np.zeros(0, np.float32)
        self._prepare_language_or_fail(language)
        finals, next_index = self.engine.decode_segment(x, reason=reason, language=language, next_index=seg.next_index)
        return finals, _Segment(next_index=next_index)

    async def _offline_close(self, sid: str, reason: str, upto: int | None = None) -> None:
        seg = self._segments.get(sid)
        if seg is None or not seg.length:
            return
        rest: tuple[np.ndarray, ...] = ()
        if upto is not None and upto < seg.start + seg.length:  # the speech ended inside the buffer
            keep = max(0, upto - seg.start)
            x = np.concatenate(seg.pieces)
            rest = (x[keep:],)
            seg = dataclasses.replace(seg, pieces=(x[:keep],), length=keep)
        finals, new = await self._executor.run(self._decode_segment, seg, reason, self._language_of(sid))
        if rest:  # what follows the cut starts the next segment
            new = dataclasses.replace(new, pieces=rest, start=seg.start + seg.length, length=int(rest[0].shape[0]))
        self._segments[sid] = new
        await self._emit(sid, seg.start, finals)

    async def _offline_audio(self, chunk: AudioChunk) -> None:
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
            await self._offline_close(sid, "max_length", upto=seg.start + _quietest_cut(seg.pieces, seg.length))
        await self.push(chunk)

    # -- hooks ---------------------------------------------------------------------------------

    async def process(self, event: Event) -> None:
        if self.config.mode == "offline":
            if isinstance(event, AudioChunk):
                await self._offline_audio(event)
                return
            if isinstance(event, SpeechEnded) and self.config.vad_endpoints:
                await self._offline_close(event.stream_id, "vad", upto=event.sample)
            await self.push(event)
            return
        async with self._batch_lock:
            if isinstance(event, AudioChunk):
                await self._audio(event)
                return
            await self._drain()  # every other event goes after the audio before it
            if isinstance(event, SpeechEnded) and self.config.vad_endpoints and event.stream_id in self._streams:
                st = self._streams[event.stream_id]
                updates, st = await self._executor.run(self._vad_end, st, event.sample)
                self._streams[event.stream_id] = st
                await self._emit(event.stream_id, st.origin, updates)
        await self.push(event)

    def _vad_end(self, st: _Stream, sample: int) -> tuple[tuple[Any, ...], _Stream]:
        """Close the segment at a VAD speech end (OnlineRecognizer.endpoint_at: peeks at the frames the
        engine still buffers, so the final comes now, not when the chunk is complete)."""
        return self.engine.endpoint_at(st, sample)

    async def _audio(self, chunk: AudioChunk) -> None:
        sid = chunk.stream_id
        if any(c.stream_id == sid for c, _, _ in self._pending):  # its state is an input of this step
            await self._drain()
            if sid in self._failed:  # its pending chunk failed it
                return
        samples = self._check(chunk)
        st = self._streams.get(sid)
        if st is None:
            language = self._language_of(sid)
            if not self.engine.has_language(language):  # a language's first stream: its adapter file loads off the loop
                await self._executor.run(self._prepare_language_or_fail, language)
            st = self._new_stream(chunk.sample, language)
        gap = chunk.sample - st.next_sample
        if gap > 0:  # audio was dropped upstream: keep stream time exact
            samples = np.concatenate([np.zeros(gap, np.float32), samples])
        elif gap < 0:
            samples = samples[-gap:]
        if not samples.shape[0]:
            await self.push(chunk)
            return
        self._pending += (_Pending(chunk, samples, st),)
        if len(self._pending) >= self.config.max_batch:
            await self._drain()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._drain_later())

    def _check(self, chunk: AudioChunk) -> np.ndarray:
        if chunk.sample_rate_hz != SAMPLE_RATE_HZ or chunk.channels != 1 or chunk.samples.ndim != 1:
            raise BadAudioError(
                f"the recogniser needs 16 kHz mono audio, got {chunk.sample_rate_hz} Hz x {chunk.channels} ch "
                "(put a Resample node in front of it)"
            )
        x = chunk.samples
        if chunk.sample_format == "s16" or x.dtype == np.int16:
            x = x.astype(np.float32) / 32768.0
        x = np.asarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise BadAudioError(f"non-finite samples at {chunk.sample}", fatal=False)
        return x

    async def flush(self, stream_id: str) -> None:
        """Close the open segment now (the engine keeps its buffered audio and goes on)."""
        if self.config.mode == "offline":
            await self._offline_close(stream_id, "eos")
            return
        async with self._batch_lock:
            await self._drain()
        st = self._streams.get(stream_id)
        if st is None:
            return
        updates, self._streams[stream_id] = self.engine.close_segment(st)
        await self._emit(stream_id, st.origin, updates)

    async def end_of_stream(self, eos: EndOfStream) -> None:
        sid = eos.stream_id
        if self.config.mode == "offline":
            await self._offline_close(sid, "eos")
            await self.push(eos)
            return
        async with self._batch_lock:
            await self._drain()
        st = self._streams.get(sid)
        if st is not None and not self.cancelled(sid):  # a cancelled stream's finals go nowhere
            updates, st = await self._executor.run(self.engine.finish, st)
            self._streams[sid] = st
            await self._emit(sid, st.origin, updates, eos_sample=eos.sample)
        await self.push(eos)

    # ------------------------------------------------------------------ events

    async def _emit(self, sid: str, o: int, updates: tuple[Any, ...], eos_sample: int | None = None) -> None:
        for u in updates:
            seg = f"{sid}-{u.index}"
            words = tuple(Word(w.text, w.start_sample + o, w.end_sample + o, w.confidence) for w in u.words)
            cls = FinalTranscript if u.is_final else PartialTranscript
            await self.push(
                cls(
                    sid,
                    u.start_sample + o,
                    segment_id=seg,
                    revision=u.revision,
                    text=u.text,
                    end_sample=u.end_sample + o,
                    words=words,
                )
            )
            if u.is_final:
                at = u.endpoint_sample + o
                if eos_sample is not None and u.reason == "eos":
                    at = max(at, eos_sample)
                await self.push(Endpoint(sid, at, segment_id=seg, reason=u.reason))
