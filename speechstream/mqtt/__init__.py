"""MQTT transport (aiomqtt): audio in per stream, events out as JSON, workers alone or in a pool.

- :mod:`.settings`: :class:`MqttSettings` (broker, auth, TLS, session, reconnect)
- :mod:`.topics`: the topic scheme and its parsing
- :mod:`.outbox`, :mod:`.publisher`: :class:`MqttPublisher` (QoS 1 survives broker restarts), :func:`mqtt_sink`
- :mod:`.source`: :class:`MqttIngest`, audio in (shared control subscription in a pool)
- :mod:`.worker`: :class:`MqttWorker`, ingest -> graph -> events
- :mod:`.consumer`: :class:`FinalDeduper`, :func:`decode_event` for programs that read the events
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sinks.mqtt import MqttSink

    from .consumer import FinalDeduper, decode_event
    from .publisher import MqttPublisher, PublisherStats, mqtt_sink
    from .settings import MqttSettings
    from .source import MqttIngest
    from .topics import check_publish_topic, control_filter, parse_topic, route, topic, topic_segment
    from .worker import MqttWorker

# Loaded on first use: the CLI imports speechstream.mqtt.cli before it parses, and --help must not pull in
# numpy, aiomqtt or the graph.
_WHERE = {
    "MqttSink": "sinks.mqtt",
    "FinalDeduper": ".consumer",
    "decode_event": ".consumer",
    "MqttPublisher": ".publisher",
    "PublisherStats": ".publisher",
    "mqtt_sink": ".publisher",
    "MqttSettings": ".settings",
    "MqttIngest": ".source",
    "check_publish_topic": ".topics",
    "control_filter": ".topics",
    "parse_topic": ".topics",
    "route": ".topics",
    "topic": ".topics",
    "topic_segment": ".topics",
    "MqttWorker": ".worker",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "MqttSettings",
    "topic",
    "topic_segment",
    "route",
    "check_publish_topic",
    "parse_topic",
    "control_filter",
    "MqttPublisher",
    "PublisherStats",
    "mqtt_sink",
    "MqttSink",
    "MqttIngest",
    "MqttWorker",
    "FinalDeduper",
    "decode_event",
]
