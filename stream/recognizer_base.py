"""What the two recogniser nodes share: loading, languages, audio checks and events.

:class:`~stream.recognizer.Recognizer` (streaming modes) and
:class:`~stream.offline_recognizer.OfflineRecognizer` (``mode="offline"``) both derive from
:class:`RecognizerNode`: it loads the :class:`engines.online.recognizer.OnlineRecognizer` on the
node's :class:`~stream.executor.Executor` at start, keeps each stream's language, checks incoming
audio (16 kHz mono, finite; int16 scaled) and turns the engine's segment updates into
:class:`PartialTranscript` / :class:`FinalTranscript` / :class:`Endpoint` events.

Decoding ahead: at the VAD's internal :class:`~stream.events.SpeechPausing` a node starts its
VAD-end work (the final's decode) on the executor with the stream's state as it is then, which
is the state it will have at the ``SpeechEnded`` if the pause lasts (no audio of the stream comes
in between). At the ``SpeechEnded`` the result is used if the state and the end sample are the
very same (the work is a pure function of them, so the final is the one a fresh call would give),
else it is dropped and the work done then. The hint is consumed, not passed on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from engines.ctc import SegmentUpdate, StreamingCTCDecoder
from engines.errors import EngineError
from engines.online.config import RecognizerConfig
from engines.online.decoder import check_model_language
from engines.online.recognizer import OnlineRecognizer, OnlineState, RecognizerStats, Samples

from .errors import BadAudioError, ConfigError, GraphStateError, StreamError
from .events import SAMPLE_RATE_HZ, AudioChunk, Endpoint, FinalTranscript, PartialTranscript, Word
from .executor import Executor
from .node import Node

__all__ = ["RecognizerNode"]


class RecognizerNode(Node):
    """Base of the recogniser nodes (see the module docstring); not a node to place in a graph itself."""

    def __init__(
        self,
        model: Any,
        config: RecognizerConfig = RecognizerConfig(),
        *,
        executor: Executor | None = None,
        decoder: StreamingCTCDecoder | None = None,
        name: str = "recognizer",
    ):
        super().__init__(name)
        self.model_arg = model  # a LoadedModel, or a path / hub id loaded at start
        self.config = config
        self.model: Any = None  # the LoadedModel, once started
        self.decoder = decoder  # a prebuilt engines.ctc.StreamingCTCDecoder (else built at start)
        self._executor = executor
        self._own_executor = executor is None
        # multilingual checkpoints: a stream's language (set_language); the engine keeps one decoder
        # (vocabulary) and one adapter view per language, the base weights shared
        self._stream_languages: dict[str, str] = {}
        self.engine: OnlineRecognizer | None = None  # built at start
        self.stats = RecognizerStats()  # shared with the engine-side recogniser (its counters)
        # decoding ahead: per stream, (the state it started from, the end sample, its task)
        self._ahead: dict[str, tuple[object, int, asyncio.Future[Any]]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        c = self.config
        if c.max_batch < 1 or c.max_wait_ms < 0:
            raise ConfigError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {c.max_batch}, {c.max_wait_ms}")
        if self._executor is None:
            self._executor = Executor(max_workers=1, name=self.name)
        try:
            self.model, self.decoder = await self._executor.run(self._load)
        except BaseException:
            await self.stop()
            raise

    def _load(self) -> tuple[Any, StreamingCTCDecoder]:
        # ConfigError on a model that cannot load, a bad mode or geometry, a decoder that does not fit
        rec = OnlineRecognizer.from_pretrained(self.model_arg, self.config, decoder=self.decoder, stats=self.stats)
        self.engine = rec
        for language in set(self._stream_languages.values()):  # set before start
            check_model_language(rec.model, language)
        return rec.model, rec.decoder_for(OnlineState(None, None, 0, 0, rec.language))

    async def stop(self) -> None:
        for _, _, task in self._ahead.values():
            task.cancel()
        self._ahead.clear()
        if self._own_executor and self._executor is not None:
            await self._executor.aclose()
            self._executor = None

    def forget(self, stream_id: str) -> None:
        self._stream_languages.pop(stream_id, None)
        self._ahead.pop(stream_id, None)

    # ------------------------------------------------------------------ decoding ahead

    def _decode_ahead(self, stream_id: str, state: object, sample: int, fn: Callable[..., Any], *args: Any) -> None:
        """Start ``fn(*args)`` (the VAD-end work for ``state`` ending at ``sample``) on the executor."""
        task = asyncio.ensure_future(self.executor.run(fn, *args))
        task.add_done_callback(_retrieve)  # an unused one's error is not "never retrieved"
        self._ahead[stream_id] = (state, sample, task)
        self.stats.ahead += 1

    def _taken_ahead(self, stream_id: str, state: object, sample: int) -> asyncio.Future[Any] | None:
        """The work started ahead for exactly this state and end sample, if any (each is taken once)."""
        ahead = self._ahead.pop(stream_id, None)
        if ahead is None or ahead[0] is not state or ahead[1] != sample:
            return None
        self.stats.ahead_used += 1
        return ahead[2]

    @property
    def executor(self) -> Executor:
        """The executor the engine runs on (GraphStateError before start)."""
        if self._executor is None:
            raise GraphStateError(f"node {self.name!r} is not started")
        return self._executor

    @property
    def online(self) -> OnlineRecognizer:
        """The engine-side recogniser (GraphStateError before start)."""
        if self.engine is None:
            raise GraphStateError(f"node {self.name!r} is not started")
        return self.engine

    # ------------------------------------------------------------------ languages

    def _has_stream(self, stream_id: str) -> bool:
        """Whether ``stream_id`` has audio in this node already (its language is then fixed)."""
        raise NotImplementedError

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
        if self._has_stream(stream_id):
            raise ConfigError(f"stream {stream_id!r} is already running; its language is set before its audio")
        self._stream_languages[stream_id] = language

    def _language_of(self, stream_id: str) -> str | None:
        return self._stream_languages.get(stream_id, getattr(self.model, "language", None))

    def _prepare_language(self, language: str | None) -> StreamingCTCDecoder:
        """(executor) The decoder of ``language``, building its engine view (adapter file) first."""
        return self.online.prepare_language(language)

    def _prepare_language_or_fail(self, language: str | None) -> StreamingCTCDecoder:
        """As _prepare_language; a language whose files cannot be read fails this stream only."""
        try:
            return self._prepare_language(language)
        except (EngineError, ConfigError) as exc:
            raise StreamError(f"language {language!r}: {exc}", code="language_unavailable") from exc

    # ------------------------------------------------------------------ audio and events

    def _check(self, chunk: AudioChunk) -> Samples:
        """The chunk's samples as float32 (int16 scaled); BadAudioError unless 16 kHz mono and finite."""
        if chunk.sample_rate_hz != SAMPLE_RATE_HZ or chunk.channels != 1 or chunk.samples.ndim != 1:
            raise BadAudioError(
                f"the recogniser needs 16 kHz mono audio, got {chunk.sample_rate_hz} Hz x {chunk.channels} ch "
                "(put a Resample node in front of it)"
            )
        x = chunk.samples
        if chunk.sample_format == "s16" or x.dtype == np.int16:
            x = x.astype(np.float32) / 32768.0
        out: Samples = np.asarray(x, dtype=np.float32)
        if not np.isfinite(out).all():
            raise BadAudioError(f"non-finite samples at {chunk.sample}", fatal=False)
        return out

    async def _emit(self, sid: str, o: int, updates: tuple[SegmentUpdate, ...], eos_sample: int | None = None) -> None:
        """Push ``updates`` (sample times relative to stream time ``o``) as transcript events; each
        final is followed by its Endpoint (at the end of stream no earlier than ``eos_sample``)."""
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
                assert u.endpoint_sample is not None and u.reason is not None, "a final carries its endpoint"
                at = u.endpoint_sample + o
                if eos_sample is not None and u.reason == "eos":
                    at = max(at, eos_sample)
                await self.push(Endpoint(sid, at, segment_id=seg, reason=u.reason))


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
