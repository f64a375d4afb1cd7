"""Events to MQTT: JSON on ``<prefix>/<stream>/{transcript,speaker,vad,error}``; the topic scheme lives here.

Finals, speaker turns, errors and end-of-stream go out at QoS 1, partials and VAD events at QoS 0.
The sink knows only the events and the topic scheme: it hands ``(topic, payload, qos)`` to a
publisher (anything with ``start``, ``publish`` and ``close``, see :class:`Publisher`).
``speechstream.mqtt.mqtt_sink(settings)`` gives one whose publisher is the aiomqtt client with
its outbox, so finals survive a broker restart; ``consume`` never waits for the network, and
``close`` sends what is queued, up to ``close_timeout_s``::

    sink = mqtt_sink(MqttSettings(host="broker.local", username="asr", password="..."))
    graph = Graph(..., nodes=[..., FanOut([SinkNode(sink)])])
"""

from __future__ import annotations

from typing import Protocol

from sinks.base import Sink, SinkErrorHandler
from stream.events import (
    AudioChunk,
    AudioLost,
    EndOfStream,
    Endpoint,
    ErrorEvent,
    Event,
    FinalTranscript,
    PartialTranscript,
    QueueOverflow,
    SpeakerTurn,
    SpeechEnded,
    SpeechStarted,
)

__all__ = ["MqttSink", "Publisher", "route", "topic", "topic_segment"]


class Publisher(Protocol):
    """What the sink publishes through (``speechstream.mqtt.MqttPublisher`` in the product)."""

    async def start(self) -> None: ...

    def publish(self, topic_: str, payload: bytes | str, qos: int = 0) -> None: ...

    async def close(self, timeout_s: float = 10.0) -> None: ...


_TOPIC_UNSAFE = str.maketrans({c: "_" for c in "/+#\x00"})


def topic_segment(stream_id: str) -> str:
    """A stream id as one topic level: ``/``, ``+``, ``#`` and NUL become ``_`` (never a wildcard)."""
    return stream_id.translate(_TOPIC_UNSAFE) or "_"


def topic(prefix: str, stream_id: str, kind: str) -> str:
    return f"{prefix}/{topic_segment(stream_id)}/{kind}"


_ROUTES: dict[type[Event], tuple[str, int]] = {
    PartialTranscript: ("transcript", 0),
    FinalTranscript: ("transcript", 1),
    EndOfStream: ("transcript", 1),
    SpeakerTurn: ("speaker", 1),
    SpeechStarted: ("vad", 0),
    SpeechEnded: ("vad", 0),
    Endpoint: ("vad", 0),
    ErrorEvent: ("error", 1),
    QueueOverflow: ("error", 1),
    AudioLost: ("error", 1),
}


def route(event: Event) -> tuple[str, int] | None:
    """(topic kind, QoS) of an event; None for events that are not published (audio)."""
    if isinstance(event, AudioChunk):
        return None
    return _ROUTES.get(type(event))


class MqttSink(Sink):
    kind = "mqtt"

    def __init__(
        self,
        publisher: Publisher,
        *,
        prefix: str = "speechstream",
        where: str = "",
        close_timeout_s: float = 10.0,
        stream_id: str | None = None,
        on_error: SinkErrorHandler | None = None,
    ) -> None:
        super().__init__(stream_id=stream_id, on_error=on_error)
        self.publisher = publisher
        self.prefix = prefix
        self.where = where or prefix
        self.close_timeout_s = close_timeout_s
        self._started = False

    def describe(self) -> str:
        return f"mqtt sink {self.where}"

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.publisher.start()

    async def consume(self, event: Event) -> None:
        if self.closed or (self.stream_id is not None and event.stream_id != self.stream_id):
            return
        await self.start()
        self.handle(event)

    def handle(self, event: Event) -> bool:
        r = route(event)
        if r is None:
            return False
        kind, qos = r
        self.publisher.publish(topic(self.prefix, event.stream_id, kind), event.to_json(), qos)
        return True

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.publisher.close(self.close_timeout_s)
