"""The server's shared state, and the routing of the graph's events to each connection.

:class:`ServerCore` declares what every part of :class:`~speechstream.net.ws.CaptionServer`
reads (its config, graph, metrics, live connections, counters); the server sets them in
``__init__``. Its methods run synchronously on the loop: the graph's tail hands each event to
:meth:`ServerCore._dispatch`, which puts it on the connection's bounded outbound edge, and a
client that cannot keep up is abandoned, never waited for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server

from speechstream.ops import ServerMetrics
from stream.events import SAMPLE_RATE_HZ, AudioChunk, EndOfStream, ErrorEvent, Event, FinalTranscript, PartialTranscript
from stream.graph import Graph

from ..protocol import ProtocolError
from .config import ServerConfig
from .conn import MALLOC_TRIM, Conn, Wake

__all__ = ["ServerCore", "log"]

log = logging.getLogger("speechstream.net.ws")  # one logger for the room, like speechstream.mqtt


class ServerCore:
    """State shared by the server's parts, and the event routing (graph tail -> connections)."""

    config: ServerConfig
    graph: Graph
    metrics: ServerMetrics
    stats: dict[str, Any]
    draining: bool
    _on_event: Callable[[Event], None] | None
    _conns: dict[str, Conn]
    _server: Server | None
    _handlers: set[asyncio.Task[Any]]
    _trim_handle: asyncio.TimerHandle | None
    _trimming: bool

    # ------------------------------------------------------------------ event routing (graph tail)

    def _dispatch(self, event: Event) -> None:
        """Called synchronously by the graph's tail for every event: never blocks."""
        if self._on_event is not None:
            self._on_event(event)
        self.metrics.observe(event)
        if isinstance(event, AudioChunk):
            return
        conn = self._conns.get(event.stream_id)
        if conn is None:
            return
        self._observe_latency(conn, event)
        if isinstance(event, EndOfStream):
            self._conns.pop(event.stream_id, None)
            self._schedule_trim()
        if conn.gone:
            return
        if isinstance(event, PartialTranscript) and not conn.cfg.partials:
            return
        if not conn.out.put_nowait(event):
            # Full of events that must arrive (finals, errors): the client does not read.
            self._slow_consumer(conn, "outbound queue full")

    def _observe_latency(self, conn: Conn, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, PartialTranscript) and not conn.partial_seen and conn.first_audio_t is not None:
            conn.partial_seen = True
            self.metrics.first_partial.observe(now - conn.first_audio_t)
        elif isinstance(event, FinalTranscript) and event.end_sample is not None:
            arrived = None
            while conn.arrivals and conn.arrivals[0][0] < event.end_sample:
                conn.arrivals.popleft()  # audio before this final's end: not needed again
            if conn.arrivals:
                arrived = conn.arrivals[0][1]  # the block that held the final's last sample
            if arrived is not None:
                self.metrics.finalization.observe(now - arrived)

    def _emit_local(self, conn: Conn, exc: ProtocolError) -> None:
        """A protocol error of this connection: an ``error`` event on its own outbound edge."""
        self.metrics.errors.labels(code=exc.code).inc()
        self.stats["protocol_errors"] += 1
        if conn.gone:
            return
        sample = conn.source.samples_fed * SAMPLE_RATE_HZ // conn.cfg.sample_rate_hz
        ev = ErrorEvent(conn.stream_id, sample, code=exc.code, message=exc.message, fatal=exc.fatal)
        if not conn.out.put_nowait(ev):
            self._slow_consumer(conn, "outbound queue full")

    def _abandon(self, conn: Conn, code: int, reason: str) -> None:
        """Stop serving ``conn``: end its stream and close the socket without waiting for the client."""
        if conn.gone:
            return
        conn.gone = True
        conn.close_code, conn.close_reason = code, reason
        self._discard(conn)
        conn.out.put_control(Wake())

    def _slow_consumer(self, conn: Conn, why: str) -> None:
        if not conn.gone:
            self.stats["slow_consumers"] += 1
            log.warning("stream %s: closed as a slow consumer (1008): %s", conn.stream_id, why)
        self._abandon(conn, 1008, f"slow consumer: {why}")

    def _discard(self, conn: Conn) -> None:
        """Nobody will read this stream's results: drop its audio not yet processed, end it."""
        rate = conn.cfg.sample_rate_hz
        n = conn.source.discard() + self.graph.cancel_stream(conn.stream_id)
        self.stats["discarded_s"] += n / rate

    # ------------------------------------------------------------------ memory

    def _schedule_trim(self) -> None:
        """A stream ended: in ``trim_memory_s``, give freed heap pages back to the OS.

        Per-stream objects are gone once a stream ends, but glibc keeps the freed memory of its
        arenas (the recogniser's executor threads allocate in their own), so RSS stays at its
        peak; ``malloc_trim(0)`` releases it. It runs in a thread, never on the loop."""
        if self.config.trim_memory_s is None or MALLOC_TRIM is None or self._trim_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._trim_handle = loop.call_later(self.config.trim_memory_s, self._trim)

    def _trim(self) -> None:
        self._trim_handle = None
        if self._trimming or MALLOC_TRIM is None:
            return
        self._trimming = True
        self.stats["memory_trims"] += 1
        fut = asyncio.get_running_loop().run_in_executor(None, MALLOC_TRIM, 0)

        def done(_: Any) -> None:
            self._trimming = False

        fut.add_done_callback(done)
