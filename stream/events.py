"""Every event the speechstream pipeline emits, in one module.

Events are immutable (``frozen=True, slots=True``) and carry:

- ``stream_id``: which stream they belong to;
- ``sample``: stream time as an integer sample offset at ``sample_rate_hz``
  (16 kHz after resampling).  Seconds are derived at the edges
  (:meth:`Event.to_dict`), so hours of audio never drift.

Event kinds (the ``type`` tag in JSON)::

    audio_chunk         a block of PCM samples (sample format in ``sample_format``; after the
                        VAD, ``speech`` says whether it lies inside a speech segment)
    speech_started      VAD found speech starting at ``sample``
    speech_ended        VAD found speech ending at ``sample`` (started at ``start_sample``)
    endpoint            the recogniser closed a segment (``reason``: vad | silence | max_length | eos)
    partial_transcript  hypothesis for an open segment; replaces the previous partial of its segment
    final_transcript    the settled text of a segment; never revised
    speaker_turn        who spoke from ``sample`` to ``end_sample``; a changed label carries a higher ``revision``
    error               something went wrong on this stream; other streams keep running
    queue_overflow      a drop-oldest edge dropped items; ``dropped_total`` counts them
    audio_lost          input audio from ``sample`` to ``end_sample`` never arrived (a transport lost
                        it); the stream carries silence there, so stream time stays exact
    end_of_stream       the source is exhausted; every pending final precedes it

One internal event stays inside the graph (not in ``EVENT_TYPES``, never serialised: sinks skip
events whose class has ``internal = True``): :class:`SpeechPausing`, the VAD's hint that a
pause began and its segment's audio is all out, which the recogniser uses to decode the segment
while the rest of the silence arrives, and consumes.

Segment semantics: ``segment_id`` is stable for the life of a segment.  A
partial's ``revision`` increases by one per partial; the final carries the
next revision and closes the segment.

``python -m stream.events`` writes the JSON Schema (``events.schema.json``,
next to this file) generated from these dataclasses.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import numpy as np

__all__ = [
    "SAMPLE_RATE_HZ",
    "Event",
    "Word",
    "AudioChunk",
    "SpeechStarted",
    "SpeechEnded",
    "SpeechPausing",
    "Endpoint",
    "PartialTranscript",
    "FinalTranscript",
    "SpeakerTurn",
    "ErrorEvent",
    "QueueOverflow",
    "AudioLost",
    "EndOfStream",
    "EVENT_TYPES",
    "event_from_dict",
    "event_from_json",
    "json_schema",
    "SCHEMA_PATH",
]

SAMPLE_RATE_HZ = 16_000  # the pipeline's internal rate after resampling
SCHEMA_PATH = Path(__file__).with_name("events.schema.json")

SampleFormat = Literal["f32", "s16"]


def _seconds(sample: int, rate: int) -> float:
    # Rounded to the microsecond: enough for captions, stable in JSON.
    return round(sample / rate, 6)


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word; times are sample offsets in stream time."""

    text: str
    start_sample: int
    end_sample: int
    confidence: float | None = None
    speaker: str | None = None

    def to_dict(self, sample_rate_hz: int = SAMPLE_RATE_HZ) -> dict[str, Any]:
        d = {
            "text": self.text,
            "start_sample": self.start_sample,
            "end_sample": self.end_sample,
            "start_s": _seconds(self.start_sample, sample_rate_hz),
            "end_s": _seconds(self.end_sample, sample_rate_hz),
        }
        if self.confidence is not None:
            d["confidence"] = self.confidence
        if self.speaker is not None:
            d["speaker"] = self.speaker
        return d


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events: which stream, and when (integer samples)."""

    type: ClassVar[str] = "event"
    internal: ClassVar[bool] = False  # True: a hint between nodes; sinks skip it

    stream_id: str
    sample: int
    sample_rate_hz: int = field(default=SAMPLE_RATE_HZ, kw_only=True)

    @property
    def time_s(self) -> float:
        return self.sample / self.sample_rate_hz

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: every field, plus ``type`` and derived ``*_s`` seconds."""
        out: dict[str, Any] = {"type": self.type}
        rate = self.sample_rate_hz
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "samples":
                continue  # audio payloads are not serialised into the event log
            if isinstance(value, tuple):
                value = [v.to_dict(rate) if isinstance(v, Word) else v for v in value]
            out[f.name] = value
            if f.name == "sample":
                out["time_s"] = _seconds(value, rate)
            elif f.name.endswith("_sample") and isinstance(value, int):
                out[f.name[: -len("_sample")] + "_s"] = _seconds(value, rate)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class AudioChunk(Event):
    """A block of PCM, ``(n,)`` mono or ``(n, channels)``. ``samples`` is read-only; ``sample``
    is the offset of its first frame. ``speech`` is the VAD's label (None before the VAD)."""

    type: ClassVar[str] = "audio_chunk"

    samples: np.ndarray[Any, Any] = field(repr=False, compare=False)
    sample_format: SampleFormat = "f32"
    channels: int = 1
    speech: bool | None = None  # VAD label: True inside a speech segment, None before the VAD

    def __post_init__(self) -> None:
        if self.samples.flags.writeable:
            # Frames are never mutated downstream; freeze the buffer we were given.
            arr = self.samples.view()
            arr.flags.writeable = False
            object.__setattr__(self, "samples", arr)

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def end_sample(self) -> int:
        return self.sample + self.num_samples

    def to_dict(self) -> dict[str, Any]:
        d = Event.to_dict(self)
        d["num_samples"] = self.num_samples
        return d


@dataclass(frozen=True, slots=True)
class SpeechStarted(Event):
    type: ClassVar[str] = "speech_started"


@dataclass(frozen=True, slots=True)
class SpeechEnded(Event):
    """Speech ended at ``sample``; it started at ``start_sample``."""

    type: ClassVar[str] = "speech_ended"

    start_sample: int = 0


@dataclass(frozen=True, slots=True)
class SpeechPausing(Event):
    """Internal (see the module docstring): a pause began in the segment that started at
    ``start_sample``, and its audio up to ``sample`` has all been passed on. If the pause
    lasts, ``SpeechEnded(sample)`` follows with no audio of this stream in between; if speech
    resumes, more ``speech=True`` audio comes instead."""

    type: ClassVar[str] = "speech_pausing"
    internal: ClassVar[bool] = True

    start_sample: int = 0


EndpointReason = Literal["vad", "silence", "max_length", "eos"]


@dataclass(frozen=True, slots=True)
class Endpoint(Event):
    """The recogniser closed ``segment_id`` at ``sample`` for ``reason``."""

    type: ClassVar[str] = "endpoint"

    segment_id: str = ""
    reason: EndpointReason = "vad"


@dataclass(frozen=True, slots=True)
class _Transcript(Event):
    """Fields shared by partial and final transcripts; ``sample`` is the segment start."""

    segment_id: str = ""
    revision: int = 0
    text: str = ""
    end_sample: int = 0
    words: tuple[Word, ...] = ()
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class PartialTranscript(_Transcript):
    """Open hypothesis of a segment; replaces the previous partial of its segment."""

    type: ClassVar[str] = "partial_transcript"


@dataclass(frozen=True, slots=True)
class FinalTranscript(_Transcript):
    """Settled text of a segment; never revised."""

    type: ClassVar[str] = "final_transcript"


@dataclass(frozen=True, slots=True)
class SpeakerTurn(Event):
    """``speaker`` talked from ``sample`` to ``end_sample``; a relabelled turn keeps ``turn_id`` and bumps ``revision``."""

    type: ClassVar[str] = "speaker_turn"

    turn_id: str = ""
    speaker: str = ""
    end_sample: int = 0
    revision: int = 0


@dataclass(frozen=True, slots=True)
class ErrorEvent(Event):
    """A run-time error on one stream. ``fatal`` means this stream stops; others go on."""

    type: ClassVar[str] = "error"

    code: str = "error"
    message: str = ""
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class QueueOverflow(Event):
    """A drop-oldest edge named ``edge`` dropped items; ``dropped_total`` is its running count."""

    type: ClassVar[str] = "queue_overflow"

    edge: str = ""
    dropped_total: int = 0


@dataclass(frozen=True, slots=True)
class AudioLost(Event):
    """Input audio from ``sample`` to ``end_sample`` was lost on the way in (e.g. MQTT frames a broker
    restart swallowed, seen as a jump in the offset header) and is silence in the stream.

    ``message`` says it in words, with the sender's own offsets and rate. Not fatal: the stream
    goes on (a gap too long to fill is a fatal ``error`` with code ``gap`` instead).
    """

    type: ClassVar[str] = "audio_lost"

    end_sample: int = 0
    message: str = ""

    @property
    def lost_samples(self) -> int:
        return self.end_sample - self.sample


@dataclass(frozen=True, slots=True)
class EndOfStream(Event):
    """The stream is over at ``sample``; nothing of this stream follows."""

    type: ClassVar[str] = "end_of_stream"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        AudioChunk,
        SpeechStarted,
        SpeechEnded,
        Endpoint,
        PartialTranscript,
        FinalTranscript,
        SpeakerTurn,
        ErrorEvent,
        QueueOverflow,
        AudioLost,
        EndOfStream,
    )
}


# --------------------------------------------------------------------------- parsing


def event_from_dict(d: dict[str, Any]) -> Event:
    """Inverse of :meth:`Event.to_dict` (derived ``*_s`` keys are ignored).

    ``audio_chunk`` cannot be rebuilt (its samples are not serialised) and raises ``ValueError``.
    """
    try:
        cls = EVENT_TYPES[d["type"]]
    except KeyError as exc:
        raise ValueError(f"unknown event type: {d.get('type')!r}") from exc
    if cls is AudioChunk:
        raise ValueError("audio_chunk events carry no samples in JSON and cannot be rebuilt")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        value = d[f.name]
        if f.name == "words":
            value = tuple(
                Word(
                    text=w["text"],
                    start_sample=w["start_sample"],
                    end_sample=w["end_sample"],
                    confidence=w.get("confidence"),
                    speaker=w.get("speaker"),
                )
                for w in value
            )
        kwargs[f.name] = value
    return cls(**kwargs)


def event_from_json(text: str) -> Event:
    return event_from_dict(json.loads(text))


# --------------------------------------------------------------------------- JSON Schema


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is type(None):
        return {"type": "null"}
    if tp is Word:
        return {"$ref": "#/$defs/word"}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_type_schema(a) for a in args]}
    if origin is tuple:
        return {"type": "array", "items": _type_schema(args[0])}
    raise TypeError(f"no JSON Schema mapping for {tp!r}")


def _derived_seconds(names: list[str]) -> dict[str, Any]:
    props = {}
    for name in names:
        if name == "sample":
            props["time_s"] = {"type": "number"}
        elif name.endswith("_sample"):
            props[name[: -len("_sample")] + "_s"] = {"type": "number"}
    return props


def _object_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    names = []
    for f in dataclasses.fields(cls):
        if f.name == "samples":
            continue
        names.append(f.name)
        props[f.name] = _type_schema(hints[f.name])
        required.append(f.name)
    props.update(_derived_seconds([n for n in names if hints[n] is int]))
    return {"properties": props, "required": required}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every serialised event, built from the dataclasses."""
    word = _object_schema(Word)
    word_props = dict(word["properties"])
    word_required = ["text", "start_sample", "end_sample", "start_s", "end_s"]
    defs: dict[str, Any] = {
        "word": {
            "type": "object",
            "properties": word_props,
            "required": word_required,
            "additionalProperties": False,
        }
    }
    one_of = []
    for name, cls in EVENT_TYPES.items():
        obj = _object_schema(cls)
        props = {"type": {"const": name}, **obj["properties"]}
        required = ["type", *obj["required"], *[k for k in obj["properties"] if k.endswith("_s")]]
        if cls is AudioChunk:
            props["num_samples"] = {"type": "integer", "minimum": 0}
            required.append("num_samples")
        defs[name] = {
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": False,
        }
        one_of.append({"$ref": f"#/$defs/{name}"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://speechstream.invalid/events.schema.json",
        "title": "speechstream event",
        "oneOf": one_of,
        "$defs": defs,
    }


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=False) + "\n")
    return path


if __name__ == "__main__":  # pragma: no cover - tiny CLI
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_PATH
    print(write_schema(target))
