"""An MQTT transcription worker: audio from ``<prefix>/<stream>/audio`` -> one graph -> events back to MQTT.

::

    worker = MqttWorker([Resample(), VadNode.webrtc(), Recognizer(model)], MqttSettings(host=..., client_id="asr-1"))
    async with worker:
        await worker.serve_forever()

With ``group`` set the worker is one of a pool sharing the broker's streams
(:mod:`speechstream.mqtt.source`: shared subscription on the control topics).

With ``client_id`` set, the audio subscription is a persistent session
(``<client_id>-ingest``, ``clean_session=False``), so audio published while the
worker reconnects is queued by a broker with persistence; events go out through
the :class:`~sinks.mqtt.MqttSink` outbox (``<client_id>-events``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

from speechstream.net.languages import start_stream
from speechstream.net.protocol import Limits, SampleFormat, SetSpeakers
from speechstream.net.speakers import set_stream_speakers
from stream.events import Event
from stream.graph import Graph
from stream.node import Node

from .publisher import mqtt_sink
from .settings import MqttSettings
from .source import MqttIngest

__all__ = ["MqttWorker"]


class MqttWorker:
    def __init__(
        self,
        nodes: Sequence[Node],
        settings: MqttSettings = MqttSettings(),
        *,
        default_rate_hz: int = 16_000,
        default_format: SampleFormat = "s16",
        limits: Limits = Limits(),
        idle_timeout_s: float = 30.0,
        max_streams: int = 64,
        group: str | None = None,
    ):
        self.settings = settings
        cid = settings.client_id
        pub = dataclasses.replace(settings, client_id=f"{cid}-events" if cid else None)
        sub = dataclasses.replace(settings, client_id=f"{cid}-ingest" if cid else None, clean_session=cid is None)
        self.sink = mqtt_sink(pub)
        self.graph = Graph(nodes=nodes, on_event=self._on_event, name="mqtt-worker")
        self.ingest = MqttIngest(
            sub,
            functools.partial(start_stream, self.graph),  # honours the "start" message's "language"
            on_error=self.sink.handle,
            on_set_speakers=self._set_speakers,
            default_rate_hz=default_rate_hz,
            default_format=default_format,
            limits=limits,
            idle_timeout_s=idle_timeout_s,
            max_streams=max_streams,
            group=group,
            worker_id=cid,
        )

    def _on_event(self, event: Event) -> None:
        self.sink.handle(event)  # never waits: the publisher's outbox is in memory

    def stats(self) -> dict[str, Any]:
        """What a metrics endpoint reads: live streams, frames in, losses, protocol errors, publisher counters."""
        return {
            "active_streams": len(self.ingest.streams),
            "streams_started": len(self.ingest.used),
            **self.ingest.stats,
            "published": self.sink_publisher_stats(),
        }

    def sink_publisher_stats(self) -> dict[str, int]:
        pub = getattr(self.sink, "publisher", None)
        st = getattr(pub, "stats", None)
        return dict(vars(st)) if st is not None else {}

    def _set_speakers(self, sid: str, msg: SetSpeakers) -> None:
        # the diarizer caps and names this stream's speakers; a non-fatal ProtocolError without one
        set_stream_speakers(self.graph.nodes(), sid, msg)

    async def start(self) -> None:
        await self.graph.start()
        await self.sink.start()
        await self.ingest.start()
        await self.ingest.wait_subscribed(self.settings.timeout_s)

    async def stop(self, timeout_s: float = 10.0) -> None:
        await self.ingest.close()  # ends every live stream: their finals still go out
        await self.graph.stop(timeout_s)
        await self.sink.close()

    async def __aenter__(self) -> MqttWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await asyncio.Event().wait()
