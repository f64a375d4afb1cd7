"""Events to MQTT: JSON on ``<prefix>/<stream>/{transcript,speaker,vad,error}`` (topic scheme in :mod:`speechstream.net.mqtt`).

Finals, speaker turns, errors and end-of-stream are published at QoS 1 through the
publisher's outbox, so they survive a broker restart; partials and VAD events at QoS 0.
``consume`` never waits for the network (the outbox is in memory); ``close`` sends what
is queued, up to ``close_timeout_s``::

    sink = MqttSink(MqttSettings(host="broker.local", username="asr", password="..."))
    graph = Graph(..., nodes=[..., FanOut([SinkNode(sink)])])
"""

from __future__ import annotations

from sinks.base import Sink, SinkErrorHandler
from speechstream.net.mqtt import MqttPublisher, MqttSettings, route, topic
from stream.events import Event

__all__ = ["MqttSink"]


class MqttSink(Sink):
    kind = "mqtt"

    def __init__(
        self,
        settings: MqttSettings = MqttSettings(),
        *,
        publisher: MqttPublisher | None = None,
        close_timeout_s: float = 10.0,
        stream_id: str | None = None,
        on_error: SinkErrorHandler | None = None,
    ) -> None:
        super().__init__(stream_id=stream_id, on_error=on_error)
        self.settings = settings
        self.publisher = publisher or MqttPublisher(settings, name="mqtt-sink")
        self.close_timeout_s = close_timeout_s
        self._started = False

    def describe(self) -> str:
        return f"mqtt sink {self.settings.host}:{self.settings.port}/{self.settings.prefix}"

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
        self.publisher.publish(topic(self.settings.prefix, event.stream_id, kind), event.to_json(), qos)
        return True

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.publisher.close(self.close_timeout_s)
