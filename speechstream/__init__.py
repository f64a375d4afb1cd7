"""speechstream: real-time streaming speech processing.

The distribution's front door: the facade, the command line, the pipeline builder and the
servers. It composes the layers below it (``engines`` < ``stream`` < ``sinks``); none of them
imports it.

``from speechstream import Pipeline`` is the simple start (:mod:`speechstream.pipeline`);
``speechstream.Recognizer`` (:class:`engines.online.recognizer.OnlineRecognizer`) turns audio into
transcripts without asyncio, for callers with their own audio loop; the
names a custom sink or node needs (``Sink``, ``Node``, the event classes, the errors) are here
too, and so are the sources (``FileSource``, ``MicSource``) and the MQTT transport's pieces
(``MqttSettings``, ``MqttWorker``, ``MqttPublisher``, ``FinalDeduper``, ``mqtt_topic``, and the
audio frame helpers ``encode_audio``/``with_offset_header``), so a program needs few imports. They load on first use: ``import speechstream`` stays light
(the CLI imports this package before it parses its options).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.online.config import RecognizerConfig
    from engines.online.recognizer import OnlineRecognizer as Recognizer
    from engines.online.recognizer import OnlineStream
    from sinks.base import Sink
    from speechstream.mqtt.consumer import FinalDeduper
    from speechstream.mqtt.publisher import MqttPublisher
    from speechstream.mqtt.settings import MqttSettings
    from speechstream.mqtt.topics import topic as mqtt_topic
    from speechstream.mqtt.worker import MqttWorker
    from speechstream.net.protocol import encode_audio, with_offset_header
    from speechstream.pipeline import Pipeline, PipelineResult
    from stream.config import default_model_dir
    from stream.errors import ConfigError, SpeechStreamError, StreamError
    from stream.events import (
        AudioChunk,
        EndOfStream,
        ErrorEvent,
        Event,
        FinalTranscript,
        PartialTranscript,
        SpeakerTurn,
        SpeechEnded,
        SpeechStarted,
        Word,
    )
    from stream.node import Node
    from stream.resample import Resample
    from stream.sources.file import FileSource
    from stream.sources.mic import MicSource
    from stream.vad_node import VadNode

try:
    __version__ = version("speechstream")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0+unknown"

_LAZY: dict[str, str | tuple[str, str]] = {
    "Recognizer": ("engines.online.recognizer", "OnlineRecognizer"),
    "OnlineStream": ("engines.online.recognizer", "OnlineStream"),
    "RecognizerConfig": ("engines.online.config", "RecognizerConfig"),
    "Pipeline": "speechstream.pipeline",
    "PipelineResult": "speechstream.pipeline",
    "Sink": "sinks.base",
    "Node": "stream.node",
    "FileSource": "stream.sources.file",
    "MicSource": "stream.sources.mic",
    "MqttSettings": "speechstream.mqtt.settings",
    "MqttWorker": "speechstream.mqtt.worker",
    "MqttPublisher": "speechstream.mqtt.publisher",
    "FinalDeduper": "speechstream.mqtt.consumer",
    "mqtt_topic": ("speechstream.mqtt.topics", "topic"),
    "encode_audio": "speechstream.net.protocol",
    "with_offset_header": "speechstream.net.protocol",
    "Resample": "stream.resample",
    "VadNode": "stream.vad_node",
    "default_model_dir": "stream.config",
    "ConfigError": "stream.errors",
    "SpeechStreamError": "stream.errors",
    "StreamError": "stream.errors",
    **{
        name: "stream.events"
        for name in (
            "AudioChunk",
            "EndOfStream",
            "ErrorEvent",
            "Event",
            "FinalTranscript",
            "PartialTranscript",
            "SpeakerTurn",
            "SpeechEnded",
            "SpeechStarted",
            "Word",
        )
    },
}

__all__ = [
    "__version__",
    "Pipeline",
    "PipelineResult",
    "Recognizer",
    "OnlineStream",
    "RecognizerConfig",
    "Sink",
    "Node",
    "FileSource",
    "MicSource",
    "MqttSettings",
    "MqttWorker",
    "MqttPublisher",
    "FinalDeduper",
    "mqtt_topic",
    "encode_audio",
    "with_offset_header",
    "Resample",
    "VadNode",
    "default_model_dir",
    "ConfigError",
    "SpeechStreamError",
    "StreamError",
    "AudioChunk",
    "EndOfStream",
    "ErrorEvent",
    "Event",
    "FinalTranscript",
    "PartialTranscript",
    "SpeakerTurn",
    "SpeechEnded",
    "SpeechStarted",
    "Word",
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'speechstream' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
