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

Operations: ``metrics`` is a :class:`~speechstream.ops.ServerMetrics` (the names ``serve`` uses, plus
``speechstream_mqtt_*`` counters from :meth:`MqttWorker.stats`); ``ready`` is what ``/readyz`` answers;
:meth:`MqttWorker.drain` is the SIGTERM path (``speechstream mqtt-worker --ops-port``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from speechstream import defaults
from speechstream.net.languages import start_stream
from speechstream.net.protocol import Limits, SampleFormat, SetSpeakers
from speechstream.net.speakers import set_stream_speakers
from speechstream.ops import ServerMetrics, StreamLatency
from stream.events import EndOfStream, ErrorEvent, Event
from stream.graph import Graph
from stream.node import Node
from stream.sources.push import PushSource

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
        idle_timeout_s: float = defaults.MQTT_IDLE_TIMEOUT_S,
        max_streams: int = defaults.MQTT_MAX_STREAMS,
        group: str | None = None,
    ):
        self.settings = settings
        cid = settings.client_id
        pub = dataclasses.replace(settings, client_id=f"{cid}-events" if cid else None)
        sub = dataclasses.replace(settings, client_id=f"{cid}-ingest" if cid else None, clean_session=cid is None)
        self.sink = mqtt_sink(pub)
        self.graph = Graph(nodes=nodes, on_event=self._on_event, name="mqtt-worker")
        self.draining = False
        self._stopped = False
        self._latency: dict[str, StreamLatency] = {}
        self.ingest = MqttIngest(
            sub,
            self._start_stream,
            on_error=self._on_ingest_error,
            on_audio=self._on_audio,
            on_set_speakers=self._set_speakers,
            default_rate_hz=default_rate_hz,
            default_format=default_format,
            limits=limits,
            idle_timeout_s=idle_timeout_s,
            max_streams=max_streams,
            group=group,
            worker_id=cid,
        )
        self.metrics = ServerMetrics(self.graph)
        self.metrics.active_streams.set_function(lambda: len(self.ingest.streams))
        self.metrics.registry.register(_PoolCollector(self))

    async def _start_stream(self, source: PushSource, language: str | None) -> None:
        await start_stream(self.graph, source, language)  # honours the "start" message's "language"
        self.metrics.streams.inc()
        self._latency[source.stream_id] = StreamLatency(self.metrics)

    def _on_audio(self, sid: str, samples_16k: int, seconds: float, t_in: float) -> None:
        self.metrics.audio_seconds.inc(seconds)
        lat = self._latency.get(sid)
        if lat is not None:
            lat.audio(samples_16k, t_in)

    def _on_ingest_error(self, event: ErrorEvent) -> None:
        self.metrics.errors.labels(code=event.code).inc()
        self.sink.handle(event)

    def _on_event(self, event: Event) -> None:
        self.sink.handle(event)  # never waits: the publisher's outbox is in memory
        self.metrics.observe(event)
        lat = self._latency.get(event.stream_id)
        if lat is not None:
            lat.event(event)
            if isinstance(event, EndOfStream):
                del self._latency[event.stream_id]

    @property
    def publisher_connected(self) -> bool:
        return bool(getattr(getattr(self.sink, "publisher", None), "connected", False))

    def readiness(self) -> tuple[bool, str]:
        """What /readyz answers: the graph (model) runs, both broker connections are up, not draining."""
        if self.draining:
            return False, "draining"
        if not self.graph.running:
            return False, "not started"
        if not self.ingest.connected or not self.publisher_connected:
            return False, "not connected to the broker"
        return True, ""

    @property
    def ready(self) -> bool:
        return self.readiness()[0]

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
        await self.graph.start(timeout_s=defaults.MODEL_START_TIMEOUT_S)  # it loads the model
        await self.sink.start()
        await self.ingest.start()
        await self.ingest.wait_subscribed(self.settings.timeout_s)

    async def drain(self, timeout_s: float = defaults.MQTT_DRAIN_TIMEOUT_S) -> int:
        """Graceful drain (SIGTERM): /readyz fails first, no new stream is claimed (a pool member leaves the
        shared subscription), open streams run until they end, at most ``timeout_s``; then :meth:`stop`
        ends the rest (their finals still go out). Returns how many streams were open at the deadline."""
        self.draining = True
        await self.ingest.stop_claiming()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while self.ingest.streams and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = len(self.ingest.streams)
        await self.stop()
        return left

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
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


class _PoolCollector(Collector):
    """``speechstream_mqtt_*``: the ingest's and the publisher's counters (:meth:`MqttWorker.stats`), read at scrape time."""

    _INGEST = {
        "frames": "Audio frames received",
        "late_frames": "Audio frames after their stream ended (ignored)",
        "protocol_errors": "Bad controls or audio frames",
        "connects": "Ingest connections to the broker",
        "lost_samples": "Samples lost before the worker (offset jumps), filled with silence",
        "lost_spans": "Offset jumps (audio lost before the worker)",
        "claims": "Streams this pool member claimed (takeovers included)",
    }
    _PUBLISHER = {
        "published": "Messages the broker acknowledged or took (QoS 0)",
        "dropped_qos0": "QoS 0 messages dropped while disconnected",
        "dropped_outbox_full": "QoS 1 messages dropped on a full outbox",
        "dropped_invalid": "Messages the client library refused",
        "connects": "Publisher connections to the broker",
        "disconnects": "Publisher connections lost",
    }

    def __init__(self, worker: MqttWorker) -> None:
        self.worker = worker

    def collect(self) -> Iterable[Any]:
        w = self.worker
        ingest = w.ingest.stats
        for key, doc in self._INGEST.items():
            yield CounterMetricFamily(f"speechstream_mqtt_{key}", doc, value=ingest.get(key, 0))
        pub = w.sink_publisher_stats()
        for key, doc in self._PUBLISHER.items():
            yield CounterMetricFamily(f"speechstream_mqtt_publisher_{key}", doc, value=pub.get(key, 0))
        pending = getattr(getattr(w.sink, "publisher", None), "pending", 0)
        yield GaugeMetricFamily("speechstream_mqtt_outbox_pending", "Messages waiting for the broker", value=pending)
        yield GaugeMetricFamily(
            "speechstream_mqtt_connected",
            "1 while both broker connections (ingest, publisher) are up",
            value=float(w.ingest.connected and w.publisher_connected),
        )
        yield GaugeMetricFamily("speechstream_draining", "1 while the worker drains", value=float(w.draining))
