"""Diarization nodes: who is speaking, while the audio is still coming in.

Two small nodes, placed around the recogniser::

    Resample -> VadNode -> Diarizer -> Recognizer -> SpeakerLabeler -> FanOut(sinks)

``Diarizer`` reads 16 kHz ``AudioChunk``s and the VAD's ``SpeechStarted``/``SpeechEnded``
(or, with ``DiarizerConfig(use_vad_events=False)``, needs no VAD upstream),
runs :mod:`engines.speakers.online` in an executor (embeddings over sliding windows, online
clustering, enrollment) and pushes ``SpeakerTurn`` events.  It passes every event on, *after*
the turns that audio decided, and closes a segment's turns before it forwards that segment's
``SpeechEnded``: so a final the recogniser emits at a segment end finds its turns already
upstream of it.  Every sample gets its first label at most ``right_ms + hop_ms / 2 + 10 ms`` (0.885 s by
default; ``engines.speakers.online.latency_samples``) of stream time after it was heard.

``SpeakerTurn`` semantics: ``turn_id`` is stable; ``revision`` rises by one on every update of
that turn (a later end while it grows, a changed label, a merge of two speakers).  A changed
label is never silent: it is a new event with a higher revision.  The highest revision wins.

``SpeakerLabeler`` sets ``speaker`` on every word of ``FinalTranscript``/``PartialTranscript``
(the turn overlapping the word most; the nearest turn when none overlaps) and on the segment
(the speaker of most of its word time).  Partials are labelled with what is known and pass at
once.  A final is held until the turns cover its end, or a ``SpeechEnded`` at or after its end
went by, or stream time passed its end by ``max_hold_ms``, or on flush / end of stream: a final
is delayed by at most ``max_hold_ms`` of stream time.  Finals are never revised, so a turn
relabelled after its final went out does not change that final.

Per-stream speaker settings (the network protocol's ``start``/``set_speakers``):
``Diarizer.set_speakers(stream_id, num_speakers, names)``.  ``num_speakers`` caps that stream's
clustering (at most that many speakers from then on; within the node's ``max_speakers``, and
not below its enrolled count; embedding diarization only); ``names`` are display names given to
the stream's anonymous speakers in order of first appearance (``S1`` -> ``names[0]``, ...), on
its ``SpeakerTurn`` events and so on every label downstream.  ``None`` / ``()`` leave a setting as
it is.  The settings are data of that stream alone, dropped when it ends.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from engines.online.config import check_max_speakers
from engines.speakers import online
from engines.speakers.online import DiarizerConfig, DiarizerState, TurnUpdate

from .errors import BadAudioError, ConfigError
from .events import (
    SAMPLE_RATE_HZ,
    AudioChunk,
    EndOfStream,
    Event,
    FinalTranscript,
    PartialTranscript,
    SpeakerTurn,
    SpeechEnded,
    SpeechStarted,
    Word,
)
from .executor import Executor
from .node import Node

if TYPE_CHECKING:  # (both import torch: loaded in start(), not at import)
    from engines.speakers.embedding import SpeakerEmbedder
    from engines.speakers.frames import FrameDiarizer, FrameState

__all__ = ["Diarizer", "StreamSpeakers", "SpeakerLabeler", "label_words", "diarization_nodes"]


@dataclass
class StreamSpeakers:
    """One stream's speaker settings in the :class:`Diarizer` (see the module docstring)."""

    config: DiarizerConfig  # the node's config with this stream's speaker cap
    names: tuple[str, ...] = ()
    order: list[str] = field(default_factory=list)  # anonymous labels in order of first appearance

    def display(self, label: str) -> str:
        if not self.names:
            return label
        if label not in self.order:
            self.order.append(label)
        i = self.order.index(label)
        return self.names[i] if i < len(self.names) else label


class Diarizer(Node):
    """Speaker turns from audio + VAD boundaries.

    ``embedder``: ``None`` / ``"voice-encoder"`` (bundled) or an HF ``*ForXVector`` checkpoint,
    or an already loaded ``SpeakerEmbedder``.  ``speakers``: ``{name: clip path}`` to enroll.
    ``frame_model``: an HF ``*ForAudioFrameClassification`` diarization checkpoint; when given,
    turns come from its per-frame speaker activity (``engines.speakers.frames``, overlap
    allowed, labels from its ``id2label``) instead of embeddings + clustering, and VAD events
    are not needed.
    """

    def __init__(
        self,
        config: DiarizerConfig | None = None,
        *,
        embedder: object = None,
        speakers: Mapping[str, str | Path] | None = None,
        frame_model: str | Path | None = None,
        frame_chunk_ms: int = 320,
        name: str = "diarizer",
        executor: Executor | None = None,
    ):
        super().__init__(name)
        self.frame_model = frame_model
        self.frame_chunk_ms = frame_chunk_ms
        self.frames: FrameDiarizer | None = None  # when frame_model is given
        self._frame_states: dict[str, FrameState] = {}
        self.config = config or DiarizerConfig()
        self._embedder_arg = embedder
        self.embedder: SpeakerEmbedder | None = None
        self.speaker_clips = dict(speakers or {})
        self.enrolled: dict[str, npt.NDArray[np.float32]] = {}
        self._states: dict[str, DiarizerState] = {}
        self._speakers: dict[str, StreamSpeakers] = {}  # per-stream settings (set_speakers)
        self._executor = executor
        self._own_executor = executor is None

    async def start(self) -> None:
        from engines.errors import EngineError
        from engines.speakers.embedding import load_embedder
        from engines.speakers.enrollment import EnrollmentError, enroll

        if self._executor is None:
            self._executor = Executor(1, name=self.name)
        arg = self._embedder_arg
        if self.frame_model is not None:
            from engines.speakers.frames import FrameDiarizer

            if self.speaker_clips:
                raise ConfigError("--speaker enrollment needs embedding diarization, not a frame-classification model")
            try:
                self.frames = await self._executor.run(FrameDiarizer.load, self.frame_model)
            except EngineError as exc:
                raise ConfigError(str(exc)) from exc
            return
        try:
            embedder: SpeakerEmbedder
            if arg is None or isinstance(arg, (str, Path)):
                embedder = await self._executor.run(load_embedder, arg)
            else:
                embedder = cast("SpeakerEmbedder", arg)  # an already loaded embedder, used as given
            self.embedder = embedder
            self.enrolled = await self._executor.run(enroll, embedder, self.speaker_clips)
            online.init_state(self.config, self.enrolled)  # validates limits against enrolled names
        except (EnrollmentError, EngineError) as exc:
            raise ConfigError(str(exc)) from exc
        except ValueError as exc:
            raise ConfigError(f"diarization: {exc}") from exc

    async def stop(self) -> None:
        if self._own_executor and self._executor is not None:
            await self._executor.aclose()
            self._executor = None

    def forget(self, stream_id: str) -> None:
        self._states.pop(stream_id, None)
        self._frame_states.pop(stream_id, None)
        self._speakers.pop(stream_id, None)

    def set_speakers(self, stream_id: str, num_speakers: int | None = None, names: tuple[str, ...] = ()) -> None:
        """This stream's speaker cap and display names (``None`` / ``()``: unchanged); ConfigError
        for a cap this node cannot keep, leaving the stream's settings as they were."""
        names = tuple(names)
        if any(not isinstance(n, str) or not n for n in names):
            raise ConfigError(f"speaker names must be non-empty strings, got {names!r}")
        st = self._speakers.get(stream_id) or StreamSpeakers(self.config)
        config = st.config
        if num_speakers is not None:
            if isinstance(num_speakers, bool) or not isinstance(num_speakers, int) or num_speakers < 1:
                raise ConfigError(f"num_speakers must be an integer >= 1, got {num_speakers!r}")
            if self.frame_model is not None:
                raise ConfigError(
                    "num_speakers needs embedding diarization; this server's frame-classification "
                    "model has a fixed set of speakers"
                )
            limit = self.config.cluster.max_speakers
            if limit is not None and num_speakers > limit:
                raise ConfigError(f"num_speakers {num_speakers} exceeds this server's --max-speakers {limit}")
            if num_speakers < len(self.speaker_clips):
                raise ConfigError(
                    f"num_speakers {num_speakers} is below the {len(self.speaker_clips)} enrolled speakers"
                )
            config = dataclasses.replace(config, cluster=dataclasses.replace(config.cluster, max_speakers=num_speakers))
        self._speakers[stream_id] = StreamSpeakers(config, names or st.names, st.order)

    def _config(self, sid: str) -> DiarizerConfig:
        st = self._speakers.get(sid)
        return self.config if st is None else st.config

    def _display(self, sid: str, label: str) -> str:
        st = self._speakers.get(sid)
        if st is None or label in self.speaker_clips:  # an enrolled voice keeps its name
            return label
        return st.display(label)

    async def _process_frames(self, event: Event) -> None:
        assert self._executor is not None and self.frames is not None
        if isinstance(event, AudioChunk):
            sid = event.stream_id
            st = self._frame_states.get(sid) or self.frames.init_state(chunk_ms=self.frame_chunk_ms)
            updates, st = await self._executor.run(self.frames.step, event.samples, st)
            self._frame_states[sid] = st
            await self._push_turns(sid, updates)
        await self.push(event)

    async def end_of_stream(self, eos: EndOfStream) -> None:
        if self.frames is not None and eos.stream_id in self._frame_states:
            assert self._executor is not None
            updates, st = await self._executor.run(self.frames.flush, self._frame_states.pop(eos.stream_id))
            await self._push_turns(eos.stream_id, updates)
        await super().end_of_stream(eos)

    def _state(self, sid: str) -> DiarizerState:
        st = self._states.get(sid)
        if st is None:
            st = online.init_state(self._config(sid), self.enrolled)
        return st

    async def _push_turns(self, sid: str, updates: list[TurnUpdate]) -> None:
        for u in updates:
            await self.push(
                SpeakerTurn(
                    sid,
                    u.start,
                    turn_id=f"t{u.turn_id}",
                    speaker=self._display(sid, u.speaker),
                    end_sample=u.end,
                    revision=u.revision,
                )
            )

    def _feed(
        self,
        st: DiarizerState,
        samples: npt.NDArray[np.floating[Any]],
        start: int,
        embedder: SpeakerEmbedder,
        config: DiarizerConfig,
    ) -> tuple[list[TurnUpdate], DiarizerState]:
        st = online.feed_audio(st, samples, start, config)
        return online.decide(st, embedder, config)

    def _loaded_embedder(self) -> SpeakerEmbedder:
        assert self.embedder is not None, "Diarizer.start() loads the embedder"
        return self.embedder

    async def process(self, event: Event) -> None:
        sid = event.stream_id
        assert self._executor is not None
        if isinstance(event, AudioChunk) and (event.sample_rate_hz != SAMPLE_RATE_HZ or event.samples.ndim != 1):
            raise BadAudioError(
                f"diarizer needs 16 kHz mono audio, got {event.sample_rate_hz} Hz shape {event.samples.shape}"
            )
        if self.frames is not None:
            await self._process_frames(event)
            return
        config = self._config(sid)
        if isinstance(event, AudioChunk):
            updates, st = await self._executor.run(
                self._feed, self._state(sid), event.samples, event.sample, self._loaded_embedder(), config
            )
            self._states[sid] = st
            await self._push_turns(sid, updates)
        elif not config.use_vad_events:
            pass  # the diarizer finds speech itself
        elif isinstance(event, SpeechStarted):
            self._states[sid] = online.speech_start(self._state(sid), event.sample)
        elif isinstance(event, SpeechEnded):
            updates, st = await self._executor.run(
                online.speech_end, self._state(sid), event.sample, self._loaded_embedder(), config
            )
            self._states[sid] = st
            await self._push_turns(sid, updates)
        await self.push(event)

    async def flush(self, stream_id: str) -> None:
        # (frame mode closes its runs at end of stream only: its engine state cannot resume after a flush)
        old = self._states.get(stream_id)
        if old is None or self._executor is None:
            return
        updates, st = await self._executor.run(online.flush, old, self._loaded_embedder(), self._config(stream_id))
        self._states[stream_id] = st
        await self._push_turns(stream_id, updates)


# --------------------------------------------------------------------------------- labelling


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def label_words(words: tuple[Word, ...], turns: list[SpeakerTurn]) -> tuple[tuple[Word, ...], str | None]:
    """Label each word with the turn it overlaps most (nearest turn if none); the segment gets
    the speaker of most of its word time.  ``turns`` holds the latest revision of each turn."""
    if not turns:
        return words, None
    turns = sorted(turns, key=lambda t: t.sample)
    starts = [t.sample for t in turns]
    out: list[Word] = []
    time_by: dict[str, int] = {}
    for w in words:
        lo = max(bisect.bisect_right(starts, w.end_sample) - 1, 0)
        best, best_ov = None, 0
        # turns overlapping the word: scan back from the last one starting before its end
        for t in reversed(turns[: lo + 1]):
            ov = _overlap(w.start_sample, w.end_sample, t.sample, t.end_sample)
            if ov > best_ov:
                best, best_ov = t, ov
            if t.end_sample < w.start_sample - 10 * SAMPLE_RATE_HZ:
                break
        if best is None:  # in a pause: the nearest turn in time
            mid = (w.start_sample + w.end_sample) // 2
            best = min(
                turns,
                key=lambda t: (
                    0 if t.sample <= mid <= t.end_sample else min(abs(t.sample - mid), abs(t.end_sample - mid))
                ),
            )
        out.append(dataclasses.replace(w, speaker=best.speaker))
        time_by[best.speaker] = time_by.get(best.speaker, 0) + max(w.end_sample - w.start_sample, 1)
    seg = max(time_by, key=lambda s: time_by[s]) if time_by else None
    return tuple(out), seg


_T = TypeVar("_T", FinalTranscript, PartialTranscript)


def _label_segment(ev: _T, turns: list[SpeakerTurn]) -> _T:
    words, seg = label_words(ev.words, turns)
    if seg is None and turns and not ev.words:  # no word timings: the turn overlapping the span most
        best = max(turns, key=lambda t: _overlap(ev.sample, ev.end_sample, t.sample, t.end_sample))
        if _overlap(ev.sample, ev.end_sample, best.sample, best.end_sample) > 0:
            seg = best.speaker
    return dataclasses.replace(ev, words=words, speaker=seg)


@dataclass
class _Labels:
    turns: dict[str, SpeakerTurn] = field(default_factory=dict)  # turn_id -> latest revision
    covered: int = 0  # turns are known up to here
    now: int = 0  # latest stream time seen
    held: list[FinalTranscript] = field(default_factory=list)


class SpeakerLabeler(Node):
    """Puts speaker labels on transcripts from the ``SpeakerTurn`` events that pass by."""

    def __init__(self, *, max_hold_ms: int = 2000, history_s: float = 600.0, name: str = "speaker-labels"):
        super().__init__(name)
        if max_hold_ms < 0:
            raise ConfigError(f"max_hold_ms must be >= 0, got {max_hold_ms}")
        self.max_hold = max_hold_ms * SAMPLE_RATE_HZ // 1000
        self.history = int(history_s * SAMPLE_RATE_HZ)  # turns older than this are dropped
        self._streams: dict[str, _Labels] = {}

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)

    def _relevant(self, st: _Labels, ev: FinalTranscript | PartialTranscript) -> list[SpeakerTurn]:
        lo, hi = ev.sample - 10 * SAMPLE_RATE_HZ, ev.end_sample + 10 * SAMPLE_RATE_HZ
        return [t for t in st.turns.values() if t.end_sample >= lo and t.sample <= hi]

    async def _release(self, st: _Labels, force: bool = False) -> None:
        keep: list[FinalTranscript] = []
        for f in st.held:
            if force or st.covered >= f.end_sample or st.now >= f.end_sample + self.max_hold:
                await self.push(_label_segment(f, self._relevant(st, f)))
            else:
                keep.append(f)
        st.held = keep

    async def process(self, event: Event) -> None:
        st = self._streams.setdefault(event.stream_id, _Labels())
        end = getattr(event, "end_sample", event.sample)
        st.now = max(
            st.now, event.sample, end if isinstance(event, (SpeakerTurn, SpeechEnded, AudioChunk)) else event.sample
        )
        if isinstance(event, SpeakerTurn):
            known = st.turns.get(event.turn_id)
            if known is None or event.revision > known.revision:
                st.turns[event.turn_id] = event
            st.covered = max(st.covered, event.end_sample)
            if len(st.turns) > 64:
                cutoff = st.now - self.history
                st.turns = {k: t for k, t in st.turns.items() if t.end_sample >= cutoff}
            await self.push(event)
            await self._release(st)
            return
        if isinstance(event, SpeechEnded):
            st.covered = max(st.covered, event.sample)  # the diarizer closed that segment's turns before it
        await self._release(st)  # what this event's time settles goes out before the event itself
        if isinstance(event, FinalTranscript):
            st.held.append(event)
            await self._release(st)
        elif isinstance(event, PartialTranscript):
            await self.push(_label_segment(event, self._relevant(st, event)))
        else:
            await self.push(event)

    async def flush(self, stream_id: str) -> None:
        st = self._streams.get(stream_id)
        if st is not None:
            await self._release(st, force=True)


def diarization_nodes(
    config: DiarizerConfig | None = None,
    *,
    embedder: object = None,
    speakers: Mapping[str, str | Path] | None = None,
    max_speakers: int | None = None,
    frame_model: str | Path | None = None,
    max_hold_ms: int = 2000,
) -> tuple[Diarizer, SpeakerLabeler]:
    """The pair to put before and after the recogniser (``--diarize``, ``--speaker NAME=clip``,
    ``--max-speakers N``)."""
    config = config or DiarizerConfig()
    check_max_speakers(max_speakers, enrolled=len(speakers or ()))
    if max_speakers is not None:
        config = dataclasses.replace(config, cluster=dataclasses.replace(config.cluster, max_speakers=max_speakers))
    return (
        Diarizer(config, embedder=embedder, speakers=speakers, frame_model=frame_model),
        SpeakerLabeler(max_hold_ms=max_hold_ms),
    )
