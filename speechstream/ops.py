"""Operations for a server process: Prometheus metrics, liveness and readiness.

``ServerMetrics`` keeps one ``prometheus_client`` registry per server (not the process-global one,
so several servers in one process, as in tests, do not collide) and renders ``/metrics`` in the
Prometheus text format. The WebSocket server answers ``/healthz`` (the process is alive and its
loop answers), ``/readyz`` (the model is loaded, the server accepts streams and is not draining;
503 otherwise, which is what a load balancer's health check reads) and ``/metrics`` on its own port.

Metrics (all prefixed ``speechstream_``):

- ``active_streams`` (gauge), ``streams_total`` (counter), ``audio_seconds_total`` (counter: audio received,
  counted where the transport feeds it), ``realtime_factor`` (gauge: the recogniser's compute seconds per audio second);
- ``queue_depth{edge}`` and ``queue_dropped_total{edge}`` for every bounded edge of the graph;
- ``first_partial_latency_seconds`` (histogram: from a stream's first audio to its first partial) and
  ``finalization_latency_seconds`` (histogram: from the arrival of the audio a final ends at to the final);
- ``model_forward_seconds_total`` and ``model_steps_total``, ``model_batch_size_max`` (the recogniser's counters);
  ``decode_ahead_total`` (VAD ends decoded at the pause hint) and ``decode_ahead_used_total`` (of which the
  pause became the segment's end: the rest were decodes for nothing, when speech resumed);
- ``errors_total{code}`` (every error event, by code), ``finals_total``, ``partials_total``.

:class:`StreamLatency` is the per-stream bookkeeping for the two latency histograms, for a transport
that calls ``audio()`` as it feeds and ``event()`` at the graph's tail (the MQTT worker).
:mod:`speechstream.ops_http` serves the three paths for a process without an HTTP server of its own.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from stream.events import ErrorEvent, Event, FinalTranscript, PartialTranscript
from stream.graph import Graph

__all__ = ["ServerMetrics", "StreamLatency", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class _GraphCollector(Collector):
    """Read at scrape time: edge depths and drops, and the recogniser's counters (no bookkeeping on the hot path)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def collect(self) -> Iterable[Any]:
        depth = GaugeMetricFamily("speechstream_queue_depth", "Items waiting on a bounded edge", labels=["edge"])
        dropped = CounterMetricFamily("speechstream_queue_dropped", "Items a drop-oldest edge dropped", labels=["edge"])
        rtf = GaugeMetricFamily("speechstream_realtime_factor", "Recogniser compute seconds per audio second")
        fwd = CounterMetricFamily("speechstream_model_forward_seconds", "Seconds spent in model forwards")
        steps = CounterMetricFamily("speechstream_model_steps", "Model steps (one per chunk or batch)")
        batch = GaugeMetricFamily("speechstream_model_batch_size_max", "Largest cross-stream batch so far")
        ahead = CounterMetricFamily(
            "speechstream_decode_ahead", "VAD ends decoded ahead, at the VAD's pause hint (speech may resume)"
        )
        ahead_used = CounterMetricFamily(
            "speechstream_decode_ahead_used", "Decodes started ahead whose pause did end the segment"
        )
        for node in self.graph.nodes():
            edges = getattr(node, "edges", None)  # containers (Pipeline, FanOut) own the edges of their children
            if isinstance(edges, list):
                for edge in edges:
                    depth.add_metric([edge.name], len(edge))
                    dropped.add_metric([edge.name], edge.dropped())
            stats = getattr(node, "stats", None)
            if stats is not None and hasattr(stats, "compute_s") and hasattr(stats, "rtf"):
                rtf.add_metric([], stats.rtf if stats.audio_samples else 0.0)
                fwd.add_metric([], stats.compute_s)
                steps.add_metric([], stats.steps)
                batch.add_metric([], stats.largest_batch)
                ahead.add_metric([], getattr(stats, "ahead", 0))
                ahead_used.add_metric([], getattr(stats, "ahead_used", 0))
        yield from (depth, dropped, rtf, fwd, steps, batch, ahead, ahead_used)


class ServerMetrics:
    """The metrics of one server; ``observe(event)`` is called for every event at the graph's tail."""

    def __init__(self, graph: Graph) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active_streams = Gauge("speechstream_active_streams", "Streams open now", registry=r)
        self.streams = Counter("speechstream_streams", "Streams opened", registry=r)
        self.audio_seconds = Counter("speechstream_audio_seconds", "Audio seconds received", registry=r)
        self.finals = Counter("speechstream_finals", "Final transcripts sent", registry=r)
        self.partials = Counter("speechstream_partials", "Partial transcripts sent", registry=r)
        self.errors = Counter("speechstream_errors", "Error events, by code", ["code"], registry=r)
        self.first_partial = Histogram(
            "speechstream_first_partial_latency_seconds",
            "From a stream's first audio to its first partial",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.finalization = Histogram(
            "speechstream_finalization_latency_seconds",
            "From the arrival of the audio a final ends at to the final",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_GraphCollector(graph))

    def observe(self, event: Event) -> None:
        if isinstance(event, FinalTranscript):
            self.finals.inc()
        elif isinstance(event, PartialTranscript):
            self.partials.inc()
        elif isinstance(event, ErrorEvent):
            self.errors.labels(code=event.code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StreamLatency:
    """One stream's audio arrivals, for the first-partial and finalisation histograms of ``metrics``."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        # (16 kHz samples received so far, monotonic arrival time), oldest first; bounded: a VAD-only stream has no finals
        self.arrivals: collections.deque[tuple[int, float]] = collections.deque(maxlen=4096)
        self.first_audio_t: float | None = None
        self.partial_seen = False

    def audio(self, samples_16k: int, t_in: float) -> None:
        self.arrivals.append((samples_16k, t_in))
        if self.first_audio_t is None:
            self.first_audio_t = t_in

    def event(self, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, PartialTranscript) and not self.partial_seen and self.first_audio_t is not None:
            self.partial_seen = True
            self.metrics.first_partial.observe(now - self.first_audio_t)
        elif isinstance(event, FinalTranscript) and event.end_sample is not None:
            while self.arrivals and self.arrivals[0][0] < event.end_sample:
                self.arrivals.popleft()  # audio before this final's end: not needed again
            if self.arrivals:  # the block that held the final's last sample
                self.metrics.finalization.observe(now - self.arrivals[0][1])
