"""speechstream sinks: consumers of events.

Every sink follows one contract (:class:`Sink`): ``await sink.consume(event)`` for each event,
then ``await sink.close()``. A write failure (disk full, broken pipe) disables only that sink.
"""

from sinks.base import FileSink, Sink
from sinks.captions import CaptionLimits, Cue, cues_for_final
from sinks.console import ConsoleSink
from sinks.jsonl import JsonlSink, JsonlStdoutSink, open_jsonl
from sinks.rttm import RttmSink
from sinks.srt_captions import SrtSink
from sinks.vtt_captions import VttSink

__all__ = [
    "Sink",
    "FileSink",
    "CaptionLimits",
    "Cue",
    "cues_for_final",
    "ConsoleSink",
    "JsonlSink",
    "JsonlStdoutSink",
    "open_jsonl",
    "RttmSink",
    "SrtSink",
    "VttSink",
]
