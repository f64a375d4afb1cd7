"""``speechstream serve``: a WebSocket server hosting many concurrent streams, plus the web page.

Each WebSocket connection is one stream of ONE shared :class:`~stream.graph.Graph`
(so model work can be batched across streams).  A connection speaks the protocol
of :mod:`speechstream.net.protocol`; its audio goes into a
:class:`~stream.sources.push.PushSource`; the graph's tail hands every event to
a router that puts it on that connection's outbound edge; a sender task writes
the events to the socket as JSON (``stream/events.py``).

The same port serves the live-caption page (``/``, files of ``speechstream/web``) and
the event schema (``/events.schema.json``); the WebSocket endpoint is ``/ws``.

Safety (defaults in :class:`ServerConfig` and :class:`~speechstream.net.protocol.Limits`):

- binds 127.0.0.1 unless told otherwise; optional token (``?token=`` or
  ``Authorization: Bearer``), refused with HTTP 401 before the upgrade;
- WebSocket upgrades from a browser page of another origin are refused with
  HTTP 403 before the upgrade (same origin only, plus ``allow_origins``);
- only GET answers on the HTTP side (405 otherwise);
- at most ``max_connections`` streams (HTTP 503 past that); a stream that sends
  no audio for ``idle_timeout_s`` is closed (``idle_timeout`` error, 1008);
- frames above ``max_frame_bytes`` are skipped with an ``oversize`` error;
  frames above 4x that are refused by the WebSocket layer (close 1009);
- per-connection audio-rate and message-rate token buckets applied as
  back-pressure: over the rate the server stops reading the socket until the
  bucket allows the frame, so TCP flow control slows the client; no frame and
  no control message is ever dropped for rate;
- malformed frames give an ``error`` event and are skipped; a missing or bad
  ``start`` is fatal for that connection only (error event, then close 1008);
- a graph that falls behind slows each stream's reading the same way (a
  ``block`` capture edge): audio is delayed, never dropped on the way in;
- every queue is bounded: the outbound edge of each connection is
  ``drop_oldest`` for partials (drops reported as ``queue_overflow`` events); a
  client that does not read even its finals, answers no ping within
  ``ping_timeout_s`` or accepts no data for that long is closed with 1008
  "slow consumer: ..." so one slow client never stalls the shared graph;
- a client that vanishes ends its stream: its audio not yet processed is
  discarded (nobody will read the result), the graph flushes and forgets the
  stream, and the connection's tasks end; afterwards the server hands freed
  heap back to the OS (``malloc_trim``, glibc), so memory returns to its level.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import dataclasses
import json
import logging
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from speechstream.ops import CONTENT_TYPE as METRICS_CONTENT_TYPE
from speechstream.ops import ServerMetrics
from stream.events import (
    SAMPLE_RATE_HZ,
    SCHEMA_PATH,
    AudioChunk,
    EndOfStream,
    ErrorEvent,
    Event,
    FinalTranscript,
    PartialTranscript,
)
from stream.graph import Graph
from stream.node import Node
from stream.queues import ControlFrame, Edge, EdgeSpec
from stream.sources.push import PushSource

from .languages import start_stream
from .protocol import (
    EndOfAudio,
    Limits,
    ProtocolError,
    SetSpeakers,
    StartConfig,
    TokenBucket,
    bucket_debit,
    check_token,
    decode_audio,
    origin_allowed,
    parse_control,
    ready_message,
    split_offset_header,
    token_from_request,
)
from .speakers import set_stream_speakers, start_speakers

__all__ = ["ServerConfig", "CaptionServer", "WEB_DIR"]

log = logging.getLogger("speechstream.net.ws_server")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8765  # 0: any free port (see CaptionServer.port)
    reuse_port: bool = False  # SO_REUSEPORT: several worker processes share the port (serve --workers)
    token: str | None = None
    limits: Limits = Limits()
    max_connections: int = 64
    outbound_queue: int = 256  # events waiting for one client; partials drop first
    start_timeout_s: float = 10.0  # the client must send "start" within this
    idle_timeout_s: float | None = 30.0  # after "start", a stream without audio this long is closed
    eos_timeout_s: float = 30.0  # after "end", wait at most this for the stream's last events
    close_timeout_s: float = 2.0
    ping_interval_s: float | None = 5.0
    # A client that answers no ping, or accepts no event, within this is a slow consumer.
    ping_timeout_s: float = 10.0
    # Origins (``scheme://host[:port]``) allowed besides the page's own; "*" allows any.
    allow_origins: tuple[str, ...] = ()
    serve_web: bool = True
    # After streams end, hand freed heap back to the OS (glibc malloc_trim) this many
    # seconds later, at most once per that interval; None: never.
    trim_memory_s: float | None = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.max_connections < 1 or self.outbound_queue < 1:
            raise ValueError(f"max_connections and outbound_queue must be >= 1: {self!r}")
        if self.token is not None and not self.token:
            raise ValueError("token must be a non-empty string or None")
        for name in ("idle_timeout_s", "ping_interval_s", "trim_memory_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0 or None, got {v!r}")
        if not self.ping_timeout_s > 0:
            raise ValueError(f"ping_timeout_s must be > 0, got {self.ping_timeout_s!r}")
        for o in self.allow_origins:
            if o != "*" and not (o.startswith(("http://", "https://")) and "/" not in o.split("://", 1)[1].rstrip("/")):
                raise ValueError(f"allowed origin must be 'scheme://host[:port]' or '*', got {o!r}")


@dataclass(eq=False)
class _Conn:
    """Mutable bookkeeping of one live connection (owned by its handler task)."""

    stream_id: str
    ws: ServerConnection
    cfg: StartConfig
    source: PushSource
    out: Edge
    gone: bool = False  # the socket is closed or abandoned; drop its events
    finishing: bool = False  # "end" (or a fatal error, an idle close): the stream's last events are due
    held: bool = False  # the reader is holding back (rate limit, or a graph that is behind)
    held_until: float = 0.0  # monotonic time it last stopped holding back
    close_code: int = 1000
    close_reason: str = ""
    # for the latency metrics: (16 kHz samples received so far, monotonic time), oldest first
    arrivals: collections.deque[tuple[int, float]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=4096)  # bounded: a VAD-only stream has no finals
    )
    first_audio_t: float | None = None
    partial_seen: bool = False


class CaptionServer:
    """One graph, many WebSocket streams. ``async with CaptionServer(nodes, cfg) as srv: ...``."""

    def __init__(
        self,
        nodes: Sequence[Node],
        config: ServerConfig = ServerConfig(),
        *,
        on_event: Callable[[Event], None] | None = None,
    ):
        self.config = config
        self._on_event = on_event
        self.graph = Graph(nodes=nodes, on_event=self._dispatch, name="serve")
        self.metrics = ServerMetrics(self.graph)
        self.metrics.active_streams.set_function(lambda: len(self._conns))
        self.draining = False  # drain(): /readyz says 503 and new streams are refused; open ones finish
        self._conns: dict[str, _Conn] = {}
        self._server: Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.stats: dict[str, Any] = {
            "connections": 0,
            "rejected": 0,
            "protocol_errors": 0,
            "slow_consumers": 0,
            "idle_closed": 0,
            "throttled_s": 0.0,
            "discarded_s": 0.0,
            "memory_trims": 0,
            "lost_samples": 0,
            "lost_spans": 0,
        }
        self._trim_handle: asyncio.TimerHandle | None = None
        self._trimming = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/"

    @property
    def active_streams(self) -> tuple[str, ...]:
        return tuple(self._conns)

    async def start(self) -> None:
        if not self.graph.running:
            await self.graph.start()
        lim = self.config.limits
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            reuse_port=self.config.reuse_port or None,
            compression=None,  # PCM does not compress; deflate only costs CPU and invites bombs
            max_size=max(lim.max_frame_bytes * 4, lim.max_control_bytes * 4),
            max_queue=16,
            ping_interval=None,  # our own keepalive per stream, see _keepalive
            close_timeout=self.config.close_timeout_s,
            open_timeout=self.config.start_timeout_s,
        )
        log.info("serving on %s", self.http_url)

    @property
    def ready(self) -> bool:
        """What /readyz answers: the model is loaded (graph running), the server accepts, it is not draining."""
        return self._server is not None and self.graph.running and not self.draining

    async def drain(self, timeout_s: float = 30.0) -> int:
        """Graceful drain (SIGTERM): /readyz fails first, new streams are refused (503), open streams run
        until their clients end them, at most ``timeout_s``; then :meth:`stop` ends the rest (their finals
        still go out, close 1001). Returns how many streams were still open at the deadline."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while self._conns and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = len(self._conns)
        await self.stop()
        return left

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, end every stream (their finals go out), close, stop the graph."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close(close_connections=False)
        for conn in list(self._conns.values()):
            conn.close_code, conn.close_reason = 1001, "server shutting down"
            conn.finishing = True
            conn.source.end()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=timeout_s)
        server.close(close_connections=True)
        await server.wait_closed()
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None
        await self.graph.stop(timeout_s)

    async def __aenter__(self) -> CaptionServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    # ------------------------------------------------------------------ HTTP side

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.method != "GET":
            response = connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, "only GET\n")
            response.headers["Allow"] = "GET"
            return response
        path = urlsplit(request.path).path
        is_upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if not is_upgrade and path in ("/healthz", "/readyz", "/metrics"):
            return self._ops(connection, path)
        if not is_upgrade:
            return self._static(connection, path)
        if self.draining:
            self.stats["rejected"] += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "draining: connect to another worker\n")
        if path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "WebSocket endpoint is /ws\n")
        loopback = self.config.host in ("127.0.0.1", "localhost", "::1")
        if not origin_allowed(
            request.headers.get("Origin"),
            request.headers.get("Host"),
            self.config.allow_origins,
            loopback_only=loopback,
        ):
            self.stats["rejected"] += 1
            return connection.respond(HTTPStatus.FORBIDDEN, "origin not allowed (see --allow-origin)\n")
        if not check_token(self.config.token, token_from_request(request.path, request.headers)):
            self.stats["rejected"] += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        if len(self._handlers) >= self.config.max_connections:
            self.stats["rejected"] += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None

    def _ops(self, connection: ServerConnection, path: str) -> Response:
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            if self.ready:
                return connection.respond(HTTPStatus.OK, "ready\n")
            why = "draining" if self.draining else "not started"
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"{why}\n")
        body = self.metrics.render()
        headers = Headers([("Content-Type", METRICS_CONTENT_TYPE), ("Content-Length", str(len(body)))])
        return Response(HTTPStatus.OK.value, "OK", headers, body)

    def _static(self, connection: ServerConnection, path: str) -> Response:
        if not self.config.serve_web:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        name = path.lstrip("/") or "index.html"
        if name == "ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "WebSocket endpoint: upgrade requests only\n")
        if name == "events.schema.json":
            file = SCHEMA_PATH
        else:
            # Only plain files directly inside speechstream/web with a known type: no traversal.
            file = WEB_DIR / name
            if "/" in name or name.startswith((".", "_")) or file.suffix not in _CONTENT_TYPES or not file.is_file():
                return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        body = file.read_bytes()
        headers = Headers(
            [
                ("Content-Type", _CONTENT_TYPES[file.suffix]),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
            ]
        )
        return Response(HTTPStatus.OK.value, "OK", headers, body)

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

    def _observe_latency(self, conn: _Conn, event: Event) -> None:
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

    def _emit_local(self, conn: _Conn, exc: ProtocolError) -> None:
        """A protocol error of this connection: an ``error`` event on its own outbound edge."""
        self.metrics.errors.labels(code=exc.code).inc()
        self.stats["protocol_errors"] += 1
        if conn.gone:
            return
        sample = conn.source.samples_fed * SAMPLE_RATE_HZ // conn.cfg.sample_rate_hz
        ev = ErrorEvent(conn.stream_id, sample, code=exc.code, message=exc.message, fatal=exc.fatal)
        if not conn.out.put_nowait(ev):
            self._slow_consumer(conn, "outbound queue full")

    def _abandon(self, conn: _Conn, code: int, reason: str) -> None:
        """Stop serving ``conn``: end its stream and close the socket without waiting for the client."""
        if conn.gone:
            return
        conn.gone = True
        conn.close_code, conn.close_reason = code, reason
        self._discard(conn)
        conn.out.put_control(_Wake())

    def _slow_consumer(self, conn: _Conn, why: str) -> None:
        if not conn.gone:
            self.stats["slow_consumers"] += 1
            log.warning("stream %s: closed as a slow consumer (1008): %s", conn.stream_id, why)
        self._abandon(conn, 1008, f"slow consumer: {why}")

    def _discard(self, conn: _Conn) -> None:
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
        if self.config.trim_memory_s is None or _MALLOC_TRIM is None or self._trim_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._trim_handle = loop.call_later(self.config.trim_memory_s, self._trim)

    def _trim(self) -> None:
        self._trim_handle = None
        if self._trimming or _MALLOC_TRIM is None:
            return
        self._trimming = True
        self.stats["memory_trims"] += 1
        fut = asyncio.get_running_loop().run_in_executor(None, _MALLOC_TRIM, 0)

        def done(_: Any) -> None:
            self._trimming = False

        fut.add_done_callback(done)

    # ------------------------------------------------------------------ one connection

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.stats["connections"] += 1
        conn: _Conn | None = None
        try:
            cfg = await self._await_start(ws)
            if cfg is None:
                return
            conn = await self._open_stream(ws, cfg)
            if conn is None:
                return
            await self._serve_stream(conn)
        finally:
            if conn is not None:
                conn.gone = True
                conn.source.end()  # idempotent: a vanished client still ends its stream
            self._handlers.discard(task)

    async def _close_with_error(self, ws: ServerConnection, sid: str, exc: ProtocolError) -> None:
        self.stats["protocol_errors"] += 1
        ev = ErrorEvent(sid, 0, code=exc.code, message=exc.message, fatal=True)
        try:
            await ws.send(ev.to_json())
            await ws.close(1008, exc.code)
        except websockets.ConnectionClosed:
            pass

    async def _await_start(self, ws: ServerConnection) -> StartConfig | None:
        lim = self.config.limits
        try:
            first = await asyncio.wait_for(ws.recv(), self.config.start_timeout_s)
        except asyncio.TimeoutError:
            await self._close_with_error(ws, "-", ProtocolError("no_start", "no 'start' message in time", fatal=True))
            return None
        except websockets.ConnectionClosed:
            return None
        try:
            if isinstance(first, bytes):
                raise ProtocolError("no_start", "the first message must be a JSON 'start' message", fatal=True)
            msg = parse_control(first, lim)
            if not isinstance(msg, StartConfig):
                raise ProtocolError("no_start", "the first message must be a JSON 'start' message", fatal=True)
        except ProtocolError as exc:
            exc.fatal = True
            await self._close_with_error(ws, "-", exc)
            return None
        return msg

    async def _open_stream(self, ws: ServerConnection, cfg: StartConfig) -> _Conn | None:
        sid = cfg.stream_id or f"ws-{secrets.token_hex(4)}"
        if sid in self._conns:
            await self._close_with_error(
                ws, sid, ProtocolError("stream_id_in_use", f"stream {sid!r} is live", fatal=True)
            )
            return None
        # A ``block`` capture edge: when the shared graph falls behind, feed() waits, this
        # connection's reader stops reading its socket and TCP slows the client down. A
        # WebSocket client can be slowed, so its audio is delayed, never dropped.
        source = PushSource(sid, cfg.sample_rate_hz, capture_edge=EdgeSpec(64, "block"))
        out = Edge(f"ws:{sid}", EdgeSpec(self.config.outbound_queue, "drop_oldest"))
        conn = _Conn(sid, ws, cfg, source, out)
        self._conns[sid] = conn
        self.metrics.streams.inc()
        try:  # unknown_language (this stream only, before any audio) or unavailable (stopping, refused)
            await start_stream(self.graph, source, cfg.language)
        except ProtocolError as exc:
            self._conns.pop(sid, None)
            await self._close_with_error(ws, sid, exc)
            return None
        try:
            await ws.send(json.dumps(ready_message(sid, cfg, self.config.limits)))
        except websockets.ConnectionClosed:
            conn.gone = True
            source.end()
            return None
        speakers = start_speakers(cfg)
        if speakers is not None:  # before any audio; a refusal is a non-fatal error, the stream runs on
            try:
                self._set_speakers(conn, speakers)
            except ProtocolError as exc:
                self._emit_local(conn, exc)
        return conn

    async def _serve_stream(self, conn: _Conn) -> None:
        sender = asyncio.create_task(self._send_loop(conn), name=f"ws-send:{conn.stream_id}")
        reader = asyncio.create_task(self._read_loop(conn), name=f"ws-read:{conn.stream_id}")
        tasks = {sender, reader}
        tasks.add(asyncio.create_task(self._watch_close(conn), name=f"ws-watch:{conn.stream_id}"))
        if self.config.ping_interval_s is not None:
            tasks.add(asyncio.create_task(self._keepalive(conn), name=f"ws-ping:{conn.stream_id}"))
        try:
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not sender.done():
                # "end", an idle close or a fatal error: the stream's last events go out (bounded);
                # if the client closed or vanished, its socket is no longer OPEN and nobody reads.
                if reader.exception() is None and conn.ws.state is websockets.State.OPEN:
                    await asyncio.wait({sender}, timeout=self.config.eos_timeout_s)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(
                    conn.ws.close(conn.close_code, conn.close_reason), self.config.close_timeout_s * 2
                )
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                pass

    async def _send_loop(self, conn: _Conn) -> None:
        limit = self.config.ping_timeout_s
        while True:
            item = await conn.out.get()
            if conn.gone:
                return
            if not isinstance(item, Event):
                continue
            try:
                # Blocks only while the socket's buffers are full: the client reads nothing.
                await _within(conn.ws.send(item.to_json()), limit)
            except asyncio.TimeoutError:
                self._slow_consumer(conn, f"no data accepted for {limit:g} s")
                return
            if isinstance(item, EndOfStream):
                return

    async def _watch_close(self, conn: _Conn) -> None:
        """The connection closed (or vanished) while its stream still had audio to come: nobody
        will read the results, so its pending audio goes, even while the reader is held back."""
        await conn.ws.wait_closed()
        if not conn.finishing:
            self._discard(conn)

    async def _keepalive(self, conn: _Conn) -> None:
        """Ping every ``ping_interval_s``; no pong within ``ping_timeout_s`` means the client does
        not read its socket (or is gone): close it as a slow consumer, with code and reason, rather
        than let a keepalive failure reset the connection."""
        interval, limit = self.config.ping_interval_s, self.config.ping_timeout_s
        assert interval is not None
        try:
            while not conn.gone:
                await asyncio.sleep(interval)
                pong = await _within(conn.ws.ping(), limit)
                sent = time.monotonic()
                while True:
                    try:
                        await _within(asyncio.shield(pong), limit)
                        break
                    except asyncio.TimeoutError:
                        # While the server itself holds back reading (back-pressure), the pong
                        # waits behind the client's audio: that is not the client's fault.
                        if not (conn.held or conn.held_until > sent):
                            raise
                        sent = time.monotonic()
        except asyncio.TimeoutError:
            self._slow_consumer(conn, f"no pong within {limit:g} s")
        except websockets.ConnectionClosed:
            pass

    async def _read_loop(self, conn: _Conn) -> None:
        lim = self.config.limits
        idle = self.config.idle_timeout_s
        now = time.monotonic()
        audio_bucket = TokenBucket.full(lim.burst_audio_s, lim.max_realtime_factor, now)
        msg_bucket = TokenBucket.full(float(lim.burst_messages), lim.max_messages_per_s, now)
        last_audio = now
        ended = False
        try:
            while True:
                timeout = None if ended or idle is None else max(0.0, last_audio + idle - time.monotonic())
                try:
                    message = await _within(conn.ws.recv(), timeout)
                except asyncio.TimeoutError:
                    self.stats["idle_closed"] += 1
                    self._emit_local(conn, ProtocolError("idle_timeout", f"no audio for {idle:g} s", fatal=True))
                    conn.close_code, conn.close_reason = 1008, f"idle: no audio for {idle:g} s"
                    ended = conn.finishing = True
                    break
                if conn.gone:
                    break
                if not ended and conn.ws.state is not websockets.State.OPEN:
                    self._discard(conn)  # messages queued before the client vanished: nobody reads the result
                    break
                now = time.monotonic()
                # Back-pressure, never drops: over the message or audio rate, stop reading the socket
                # until the bucket allows this message (TCP flow control holds the client back).
                wait, msg_bucket = bucket_debit(msg_bucket, 1.0, now)
                try:
                    if isinstance(message, bytes):
                        if ended:
                            continue  # audio after "end" is ignored
                        offset = None
                        if conn.cfg.offset_header:
                            offset, message = split_offset_header(message)
                        x = decode_audio(message, conn.cfg.sample_format, lim)
                        last_audio = now
                        audio_wait, audio_bucket = bucket_debit(audio_bucket, x.shape[0] / conn.cfg.sample_rate_hz, now)
                        wait = max(wait, audio_wait)
                        await self._throttle(conn, wait)
                        wait = 0.0
                        max_gap = int(lim.max_gap_s * conn.cfg.sample_rate_hz)
                        # A jump in the offsets is silence and an audio_lost event before it (PushSource.feed_at).
                        t_in = time.monotonic()  # arrival: latency metrics count queueing behind the graph too
                        feed = conn.source.feed(x) if offset is None else conn.source.feed_at(x, offset, max_gap)
                        if conn.source.inbox_full:  # the graph is behind: wait, not reading the socket
                            conn.held = True
                            try:
                                lost = await feed
                            finally:
                                conn.held, conn.held_until = False, time.monotonic()
                        else:
                            lost = await feed
                        conn.arrivals.append(
                            (conn.source.samples_fed * SAMPLE_RATE_HZ // conn.cfg.sample_rate_hz, t_in)
                        )
                        if conn.first_audio_t is None:
                            conn.first_audio_t = t_in
                        self.metrics.audio_seconds.inc(x.shape[0] / conn.cfg.sample_rate_hz)
                        if lost is not None:
                            self.stats["lost_samples"] += lost.lost_samples
                            self.stats["lost_spans"] += 1
                            log.warning("ws stream %s: %s", conn.stream_id, lost.message)
                        last_audio = time.monotonic()  # idle time counts from here, not during a hold
                    else:
                        await self._throttle(conn, wait)
                        wait = 0.0
                        msg = parse_control(message, lim)
                        if isinstance(msg, EndOfAudio):
                            ended = conn.finishing = True
                            conn.source.end()
                        elif isinstance(msg, SetSpeakers):
                            self._set_speakers(conn, msg)
                        elif isinstance(msg, StartConfig):
                            raise ProtocolError("bad_control", "'start' was already received; ignored")
                except ProtocolError as exc:
                    await self._throttle(conn, wait)
                    self._emit_local(conn, exc)
                    if exc.fatal:
                        conn.close_code, conn.close_reason = 1008, exc.code
                        conn.source.end()
                        ended = conn.finishing = True
        except websockets.ConnectionClosed:
            if not ended:
                self._discard(conn)  # the client closed or vanished without "end": nobody reads the rest
        conn.source.end()

    async def _throttle(self, conn: _Conn, wait: float) -> None:
        if wait > 0:
            self.stats["throttled_s"] += wait
            conn.held = True
            try:
                await asyncio.sleep(wait)
            finally:
                conn.held, conn.held_until = False, time.monotonic()

    def _set_speakers(self, conn: _Conn, msg: SetSpeakers) -> None:
        # The diarizer (serve --diarize) caps and names this stream's speakers; raises a
        # non-fatal ProtocolError without one, or for a setting it cannot keep.
        set_stream_speakers(self.graph.nodes(), conn.stream_id, msg)


if sys.version_info >= (3, 11):

    async def _within(aw: Any, timeout: float | None) -> Any:
        """``await aw`` with a timeout (None: none). Unlike 3.11's ``wait_for``, a cancellation
        that arrives as ``aw`` completes is never swallowed, so a cancelled reader stops."""
        async with asyncio.timeout(timeout):
            return await aw

else:  # pragma: no cover
    _within = asyncio.wait_for


def _find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_MALLOC_TRIM = _find_malloc_trim()


@dataclass(frozen=True, slots=True)
class _Wake(ControlFrame):
    """Jumps a connection's outbound edge to wake its sender (so an abandoned one returns)."""
