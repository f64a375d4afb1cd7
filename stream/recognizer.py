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
the word's end, see :meth:`engines.ctc.StreamingCTCDecoder.request_endpoint`; that work starts
at the VAD's ``SpeechPausing`` hint, while the pause's silence arrives, see :mod:`stream.recognizer_base`), on a ``Flush``
control frame (decoder only: the engine keeps its audio), and at end of stream (engine flushed,
then the decoder; every final precedes the stream's ``EndOfStream``).

``mode="offline"`` (each VAD segment recognised whole, finals only) is the node
:class:`~stream.offline_recognizer.OfflineRecognizer`; ``Recognizer(model, config)`` with an offline
``config`` builds that node, for compatibility.

Cross-stream batching: chunks of several streams that arrive together go through one
``LoadedModel.step_batch`` forward (:meth:`OnlineRecognizer.step_many`), at most ``max_batch`` of
them (one per stream) and no chunk waits more than ``max_wait_ms``. The collect/flush decisions are
:class:`engines.batching.BatchQueue`'s; this node owns the clock. A chunk joins the queue; the batch
runs when it is full or its oldest chunk has waited ``max_wait_ms`` (on arrival, or by a timer), when
its stream sends another chunk, and before any other event (so output order is input order). A batch
that raises is redone stream by stream, so one bad stream only fails itself. ``max_batch=1`` (or
``max_wait_ms=0``) steps each chunk on its own, at once.

Languages (multilingual checkpoints, MMS): ``RecognizerConfig.language`` is every stream's default;
``set_language(stream_id, code)`` before a stream's first audio picks another for that stream (the
WebSocket server calls it with the ``start`` message's ``language``). The engine runs each stream on
its language's view of the one loaded model (adapter weights, shared base weights: loaded on the
executor with the first stream of a language, then cached) and one decoder per language holds its
vocabulary. Streams of different languages may share a batch; the engine runs one forward per language.

Stream time: a chunk whose ``sample`` jumps ahead (a drop-oldest edge dropped audio) is
preceded by zeros so word times stay exact; overlapping samples are skipped.

Every event is passed on (audio included, for speaker nodes downstream) but the VAD's internal
``SpeechPausing`` hint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import Any

from engines.batching import BatchPolicy, BatchQueue, Request
from engines.ctc import SegmentUpdate, StreamingCTCDecoder
from engines.online.config import RecognizerConfig
from engines.online.decoder import build_decoder
from engines.online.recognizer import OnlineRecognizer, OnlineState, RecognizerStats, Samples

from .errors import ConfigError
from .events import AudioChunk, EndOfStream, Event, SpeechEnded, SpeechPausing
from .executor import Executor
from .offline_recognizer import OfflineRecognizer
from .recognizer_base import RecognizerNode

__all__ = ["RecognizerConfig", "Recognizer", "OfflineRecognizer", "RecognizerNode", "RecognizerStats", "build_decoder"]

log = logging.getLogger(__name__)

_Stream = OnlineState  # one stream's state (engine, decoder, stream time), kept by the node
_Updates = tuple[SegmentUpdate, ...]
_Result = tuple[_Updates, _Stream]


class Recognizer(RecognizerNode):
    """Streaming CTC recognition of every stream that passes (see the module docstring)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # compatibility: Recognizer(model, RecognizerConfig(mode="offline")) is the offline node
        # (typed as Any: the node built is a RecognizerNode, not always a Recognizer)
        config = kwargs.get("config", args[1] if len(args) > 1 else None)
        if cls is Recognizer and isinstance(config, RecognizerConfig) and config.mode == "offline":
            return OfflineRecognizer(*args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        model: Any,
        config: RecognizerConfig = RecognizerConfig(),
        *,
        executor: Executor | None = None,
        decoder: StreamingCTCDecoder | None = None,
        name: str = "recognizer",
    ):
        if config.mode == "offline":  # only a subclass gets here (Recognizer itself builds the offline node)
            raise ConfigError(f"{type(self).__name__} streams; mode='offline' is OfflineRecognizer's")
        super().__init__(model, config, executor=executor, decoder=decoder, name=name)
        self._streams: dict[str, _Stream] = {}
        # cross-stream batching: (samples, state) of chunks waiting for the next forward (engines.batching),
        # at most one per stream, and their events (passed on once stepped)
        self._policy = BatchPolicy()  # set from the config at start
        self._queue = BatchQueue()
        self._queued: dict[Hashable, AudioChunk] = {}
        self._batch_lock = asyncio.Lock()  # the node task and the wait timer take turns
        self._timer: asyncio.Task[None] | None = None
        self._timer_error: BaseException | None = None  # bug_policy="raise": re-raised by the node task

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await super().start()  # ConfigError for bad batch settings
        self._policy = BatchPolicy(max_batch=self.config.max_batch, max_wait_ms=self.config.max_wait_ms)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await super().stop()

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)
        super().forget(stream_id)

    def _has_stream(self, stream_id: str) -> bool:
        return stream_id in self._streams

    # ------------------------------------------------------------------ sync work (executor)

    def _new_stream(self, first_sample: int, language: str | None = None) -> _Stream:
        return self.online.init_state(first_sample, language)

    def _step(self, samples: Samples, st: _Stream, end: bool) -> _Result:
        return self.online.step(samples, st, end=end)

    def _step_many(self, batch: list[Request]) -> list[_Result]:
        """One batched forward for chunks of distinct streams (OnlineRecognizer.step_many)."""
        return self.online.step_many([(r.chunk, r.state) for r in batch])

    def _vad_end(self, st: _Stream, sample: int) -> _Result:
        """Close the segment at a VAD speech end (OnlineRecognizer.endpoint_at: peeks at the frames the
        engine still buffers, so the final comes now, not when the chunk is complete)."""
        return self.online.endpoint_at(st, sample)

    # ------------------------------------------------------------------ batching

    @staticmethod
    def _now_ms() -> int:
        return int(asyncio.get_running_loop().time() * 1000)

    async def _drain(self) -> None:
        """Run every queued chunk (caller holds ``_batch_lock``) and emit in arrival order."""
        if self._timer_error is not None:
            raise self._timer_error
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
        while self._queue:
            batch, self._queue = self._queue.take(self._policy)
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[Request]) -> None:
        chunks = [self._queued.pop(r.stream_id) for r in batch]
        results: list[_Result] | None = None
        if len(batch) > 1:
            try:
                results = await self.executor.run(self._step_many, batch)
            except Exception:  # redo stream by stream: only the bad stream fails (error policy per stream)
                # logged, so a bug in step_batch itself is not hidden by the per-stream redo succeeding
                log.warning("batched step of %d streams failed; redoing them one by one", len(batch), exc_info=True)
                results = None
        for i, (chunk, request) in enumerate(zip(chunks, batch)):
            one = results[i] if results is not None else None
            await self._guarded(
                chunk.stream_id, chunk.sample, chunk.sample_rate_hz, self._finish, (chunk, request, one)
            )

    async def _finish(self, item: tuple[AudioChunk, Request, _Result | None]) -> None:
        chunk, request, result = item
        if result is None:
            result = await self.executor.run(self._step, request.chunk, request.state, False)
        updates, st = result
        self._streams[chunk.stream_id] = st
        self._ahead.pop(chunk.stream_id, None)  # speech went on: work decoded ahead is stale
        await self._emit(chunk.stream_id, st.origin, updates)
        await self.push(chunk)

    async def _drain_later(self, delay_ms: int) -> None:
        await asyncio.sleep(delay_ms / 1000)
        async with self._batch_lock:
            if self._timer is asyncio.current_task():
                try:
                    await self._drain()
                except Exception as exc:  # only with bug_policy="raise" (else the error policy caught it)
                    self._timer_error = exc

    # ------------------------------------------------------------------ hooks

    async def process(self, event: Event) -> None:
        async with self._batch_lock:
            if isinstance(event, AudioChunk):
                await self._audio(event)
                return
            await self._drain()  # every other event goes after the audio before it
            sid = event.stream_id
            if isinstance(event, SpeechPausing):  # decode ahead (RecognizerNode); the hint goes no further
                st = self._streams.get(sid)
                if st is not None and self.config.vad_endpoints and self.config.decode_ahead:
                    self._decode_ahead(sid, st, event.sample, self._vad_end, st, event.sample)
                return
            if isinstance(event, SpeechEnded) and self.config.vad_endpoints and sid in self._streams:
                st = self._streams[sid]
                ahead = self._taken_ahead(sid, st, event.sample)
                updates, st = await (ahead if ahead is not None else self.executor.run(self._vad_end, st, event.sample))
                self._streams[sid] = st
                await self._emit(sid, st.origin, updates)
        await self.push(event)

    async def _audio(self, chunk: AudioChunk) -> None:
        sid = chunk.stream_id
        if sid in self._queued:  # its state is an input of this step
            await self._drain()
            if sid in self._failed:  # its queued chunk failed it
                return
        samples = self._check(chunk)
        st = self._streams.get(sid)
        if st is None:
            language = self._language_of(sid)
            if not self.online.has_language(language):  # a language's first stream: its adapter file loads off the loop
                await self.executor.run(self._prepare_language_or_fail, language)
            st = self._new_stream(chunk.sample, language)
        samples = OnlineRecognizer.align(samples, st, chunk.sample)  # dropped audio: zeros; overlap: skipped
        if not samples.shape[0]:
            await self.push(chunk)
            return
        now = self._now_ms()
        self._queue = self._queue.add(Request(sid, samples, st), now)
        self._queued[sid] = chunk
        if self._queue.due(self._policy, now):  # full, or the oldest chunk waited max_wait_ms
            await self._drain()
        elif self._timer is None:
            wait = self._queue.wait_ms(self._policy, now)
            self._timer = asyncio.create_task(self._drain_later(wait or 0))

    async def flush(self, stream_id: str) -> None:
        """Close the open segment now (the engine keeps its buffered audio and goes on)."""
        async with self._batch_lock:
            await self._drain()
        st = self._streams.get(stream_id)
        if st is None:
            return
        updates, self._streams[stream_id] = self.online.close_segment(st)
        await self._emit(stream_id, st.origin, updates)

    async def end_of_stream(self, eos: EndOfStream) -> None:
        sid = eos.stream_id
        async with self._batch_lock:
            await self._drain()
        self._ahead.pop(sid, None)
        last = self._streams.get(sid)
        if last is not None and not self.cancelled(sid):  # a cancelled stream's finals go nowhere
            updates, st = await self.executor.run(self.online.finish, last)
            self._streams[sid] = st
            await self._emit(sid, st.origin, updates, eos_sample=eos.sample)
        await self.push(eos)
