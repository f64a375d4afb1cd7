"""``speechstream serve``: a WebSocket server hosting many concurrent streams, plus the web page.

Each WebSocket connection is one stream of ONE shared :class:`~stream.graph.Graph`
(so model work can be batched across streams).  A connection speaks the protocol
of :mod:`stream.net.protocol`; its audio goes into a
:class:`~stream.net.push_source.PushSource`; the graph's tail hands every event to
a router that puts it on that connection's outbound edge; a sender task writes
the events to the socket as JSON (``stream/events.py``).

The same port serves the live-caption page (``/``, files of ``stream/web``) and
the event schema (``/events.schema.json``); the WebSocket endpoint is ``/ws``.

Safety (defaults in :class:`ServerConfig` and :class:`~stream.net.protocol.Limits`):

- binds 127.0.0.1 unless told otherwise; optional token (``?token=`` or
  ``Authorization: Bearer``), refused with HTTP 401 before the upgrade;
- at most ``max_connections`` streams (HTTP 503 past that);
- frames above ``max_frame_bytes`` are skipped with an ``oversize`` error;
  frames above 4x that are refused by the WebSocket layer (close 1009);
- per-connection audio-rate and message-rate token buckets: excess frames are
  dropped and reported (at most one ``rate_limited`` error event per second);
- malformed frames give an ``error`` event and are skipped; a missing or bad
  ``start`` is fatal for that connection only (error event, then close 1008);
- every queue is bounded: the outbound edge of each connection is
  ``drop_oldest`` for partials (drops reported as ``queue_overflow`` events); a
  client that does not read even its finals is closed ("slow consumer"),
  so one slow client never stalls the shared graph;
- a client that vanishes ends its stream: the source ends, the graph flushes
  and forgets the stream, and the connection's tasks end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ..errors import ConfigError, GraphError
from ..events import (
    SAMPLE_RATE_HZ,
    SCHEMA_PATH,
    AudioChunk,
    EndOfStream,
    ErrorEvent,
    Event,
    FinalTranscript,
    PartialTranscript,
    SpeakerTurn,
    Word,
)
from ..graph import Graph
from ..node import Node
from ..queues import ControlFrame, Edge, EdgeSpec
from .protocol import (
    EndOfAudio,
    Limits,
    ProtocolError,
    SetSpeakers,
    StartConfig,
    TokenBucket,
    align_to_offset,
    bucket_take,
    check_token,
    decode_audio,
    parse_control,
    ready_message,
    split_offset_header,
    token_from_request,
)
from .push_source import PushSource

__all__ = ["ServerConfig", "CaptionServer", "WEB_DIR"]

log = logging.getLogger("stream.net.ws_server")

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
    token: str | None = None
    limits: Limits = Limits()
    max_connections: int = 64
    outbound_queue: int = 256  # events waiting for one client; partials drop first
    start_timeout_s: float = 10.0  # the client must send "start" within this
    eos_timeout_s: float = 30.0  # after "end", wait at most this for the stream's last events
    close_timeout_s: float = 2.0
    ping_interval_s: float | None = 20.0
    serve_web: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.max_connections < 1 or self.outbound_queue < 1:
            raise ValueError(f"max_connections and outbound_queue must be >= 1: {self!r}")
        if self.token is not None and not self.token:
            raise ValueError("token must be a non-empty string or None")


@dataclass(eq=False)
class _Conn:
    """Mutable bookkeeping of one live connection (owned by its handler task)."""

    stream_id: str
    ws: ServerConnection
    cfg: StartConfig
    source: PushSource
    out: Edge
    speaker_names: tuple[str, ...] = ()
    speaker_map: dict[str, str] = field(default_factory=dict)
    gone: bool = False  # the socket is closed or abandoned; drop its events
    close_code: int = 1000
    close_reason: str = ""


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
        self._conns: dict[str, _Conn] = {}
        self._server: Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.stats = {"connections": 0, "rejected": 0, "protocol_errors": 0, "slow_consumers": 0, "rate_limited": 0}

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
            compression=None,  # PCM does not compress; deflate only costs CPU and invites bombs
            max_size=max(lim.max_frame_bytes * 4, lim.max_control_bytes * 4),
            max_queue=16,
            ping_interval=self.config.ping_interval_s,
            close_timeout=self.config.close_timeout_s,
            open_timeout=self.config.start_timeout_s,
        )
        log.info("serving on %s", self.http_url)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, end every stream (their finals go out), close, stop the graph."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close(close_connections=False)
        for conn in list(self._conns.values()):
            conn.close_code, conn.close_reason = 1001, "server shutting down"
            conn.source.end()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=timeout_s)
        server.close(close_connections=True)
        await server.wait_closed()
        await self.graph.stop(timeout_s)

    async def __aenter__(self) -> "CaptionServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    # ------------------------------------------------------------------ HTTP side

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        is_upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if not is_upgrade:
            return self._static(connection, path)
        if path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "WebSocket endpoint is /ws\n")
        if not check_token(self.config.token, token_from_request(request.path, request.headers)):
            self.stats["rejected"] += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        if len(self._handlers) >= self.config.max_connections:
            self.stats["rejected"] += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None

    def _static(self, connection: ServerConnection, path: str) -> Response:
        if not self.config.serve_web:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        name = path.lstrip("/") or "index.html"
        if name == "events.schema.json":
            file = SCHEMA_PATH
        else:
            # Only plain files directly inside stream/web with a known type: no traversal.
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
        if isinstance(event, AudioChunk):
            return
        conn = self._conns.get(event.stream_id)
        if conn is None:
            return
        if isinstance(event, EndOfStream):
            self._conns.pop(event.stream_id, None)
        if conn.gone:
            return
        if isinstance(event, PartialTranscript) and not conn.cfg.partials:
            return
        if conn.speaker_names:
            event = self._rename_speakers(conn, event)
        if not conn.out.put_nowait(event):
            # Full of events that must arrive (finals, errors): the client does not read.
            self._abandon(conn, 1008, "slow consumer: outbound queue full")
            self.stats["slow_consumers"] += 1

    def _emit_local(self, conn: _Conn, exc: ProtocolError) -> None:
        """A protocol error of this connection: an ``error`` event on its own outbound edge."""
        self.stats["protocol_errors"] += 1
        if conn.gone:
            return
        sample = conn.source.samples_fed * SAMPLE_RATE_HZ // conn.cfg.sample_rate_hz
        ev = ErrorEvent(conn.stream_id, sample, code=exc.code, message=exc.message, fatal=exc.fatal)
        if not conn.out.put_nowait(ev):
            self._abandon(conn, 1008, "slow consumer: outbound queue full")
            self.stats["slow_consumers"] += 1

    def _abandon(self, conn: _Conn, code: int, reason: str) -> None:
        """Stop serving ``conn``: end its stream and close the socket without waiting for the client."""
        if conn.gone:
            return
        conn.gone = True
        conn.close_code, conn.close_reason = code, reason
        conn.source.end()
        conn.out.put_control(_Wake())

    def _rename_speakers(self, conn: _Conn, event: Event) -> Event:
        """Map engine speaker labels to the client's display names, in order of first appearance."""

        def name(label: str | None) -> str | None:
            if label is None:
                return None
            if label not in conn.speaker_map and len(conn.speaker_map) < len(conn.speaker_names):
                conn.speaker_map[label] = conn.speaker_names[len(conn.speaker_map)]
            return conn.speaker_map.get(label, label)

        if isinstance(event, SpeakerTurn):
            return dataclasses.replace(event, speaker=name(event.speaker) or "")
        if isinstance(event, (PartialTranscript, FinalTranscript)):
            words = tuple(dataclasses.replace(w, speaker=name(w.speaker)) if isinstance(w, Word) else w for w in event.words)
            return dataclasses.replace(event, speaker=name(event.speaker), words=words)
        return event

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
            await self._close_with_error(ws, sid, ProtocolError("stream_id_in_use", f"stream {sid!r} is live", fatal=True))
            return None
        try:  # a language the model does not have fails this stream only, before any audio
            self._set_language(sid, cfg.language)
        except ConfigError as exc:
            await self._close_with_error(ws, sid, ProtocolError("unknown_language", str(exc), fatal=True))
            return None
        source = PushSource(sid, cfg.sample_rate_hz)
        out = Edge(f"ws:{sid}", EdgeSpec(self.config.outbound_queue, "drop_oldest"))
        conn = _Conn(sid, ws, cfg, source, out)
        self._conns[sid] = conn
        try:
            await self.graph.start_source(source)
        except GraphError as exc:  # the server is stopping, or the graph refused this stream
            self._conns.pop(sid, None)
            if cfg.language is not None:
                self._set_language(sid, None, clear=True)
            await self._close_with_error(ws, sid, ProtocolError("unavailable", f"cannot start stream {sid!r}: {exc}", fatal=True))
            return None
        try:
            await ws.send(json.dumps(ready_message(sid, cfg, self.config.limits)))
        except websockets.ConnectionClosed:
            conn.gone = True
            source.end()
            return None
        if cfg.num_speakers is not None:
            self._set_speakers(conn, SetSpeakers(cfg.num_speakers))
        return conn

    async def _serve_stream(self, conn: _Conn) -> None:
        sender = asyncio.create_task(self._send_loop(conn), name=f"ws-send:{conn.stream_id}")
        reader = asyncio.create_task(self._read_loop(conn), name=f"ws-read:{conn.stream_id}")
        try:
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not sender.done():
                # The client closed or vanished: nobody will read what is left.
                if reader.exception() is None and conn.ws.state is websockets.State.OPEN:
                    await asyncio.wait({sender}, timeout=self.config.eos_timeout_s)
        finally:
            for t in (sender, reader):
                t.cancel()
            await asyncio.gather(sender, reader, return_exceptions=True)
            try:
                await asyncio.wait_for(conn.ws.close(conn.close_code, conn.close_reason), self.config.close_timeout_s * 2)
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                pass

    async def _send_loop(self, conn: _Conn) -> None:
        while True:
            item = await conn.out.get()
            if conn.gone:
                return
            if not isinstance(item, Event):
                continue
            await conn.ws.send(item.to_json())
            if isinstance(item, EndOfStream):
                return

    async def _read_loop(self, conn: _Conn) -> None:
        lim = self.config.limits
        now = time.monotonic()
        audio_bucket = TokenBucket.full(lim.burst_audio_s, lim.max_realtime_factor, now)
        msg_bucket = TokenBucket.full(float(lim.burst_messages), lim.max_messages_per_s, now)
        limited = 0
        last_limited_report = 0.0
        ended = False
        expected = 0  # next sample offset, for offset-header streams
        try:
            async for message in conn.ws:
                now = time.monotonic()
                ok, msg_bucket = bucket_take(msg_bucket, 1.0, now)
                try:
                    if not ok:
                        raise _RateLimited()
                    if isinstance(message, bytes):
                        if ended:
                            continue  # audio after "end" is ignored
                        offset = None
                        if conn.cfg.offset_header:
                            offset, message = split_offset_header(message)
                        x = decode_audio(message, conn.cfg.sample_format, lim)
                        ok, audio_bucket = bucket_take(audio_bucket, x.shape[0] / conn.cfg.sample_rate_hz, now)
                        if not ok:
                            raise _RateLimited()
                        if offset is not None:
                            max_gap = int(lim.max_gap_s * conn.cfg.sample_rate_hz)
                            x, expected, _ = align_to_offset(x, offset, expected, max_gap)
                        await conn.source.feed(x)
                    else:
                        msg = parse_control(message, lim)
                        if isinstance(msg, EndOfAudio):
                            ended = True
                            conn.source.end()
                        elif isinstance(msg, SetSpeakers):
                            self._set_speakers(conn, msg)
                        elif isinstance(msg, StartConfig):
                            raise ProtocolError("bad_control", "'start' was already received; ignored")
                except _RateLimited:
                    limited += 1
                    self.stats["rate_limited"] += 1
                    if now - last_limited_report >= 1.0:
                        last_limited_report = now
                        self._emit_local(conn, ProtocolError("rate_limited", f"rate limit exceeded: {limited} frames dropped so far"))
                except ProtocolError as exc:
                    self._emit_local(conn, exc)
                    if exc.fatal:
                        conn.close_code, conn.close_reason = 1008, exc.code
                        conn.source.end()
                        ended = True
        except websockets.ConnectionClosed:
            pass
        conn.source.end()

    def _set_language(self, stream_id: str, language: str | None, clear: bool = False) -> None:
        # Nodes that recognise per-stream languages expose ``set_language(stream_id, language)``
        # (None forgets a stream's language).
        if language is None and not clear:
            return
        hooks = [h for h in (getattr(n, "set_language", None) for n in self.graph.nodes()) if callable(h)]
        if not hooks and language is not None:
            raise ConfigError(f"language {language!r} asked for, but this server runs no recogniser")
        for hook in hooks:
            hook(stream_id, language)

    def _set_speakers(self, conn: _Conn, msg: SetSpeakers) -> None:
        if msg.names:
            conn.speaker_names = msg.names
        # Nodes that can take speaker settings expose ``set_speakers(stream_id, num_speakers, names)``.
        for node in self.graph.nodes():
            hook = getattr(node, "set_speakers", None)
            if callable(hook):
                hook(conn.stream_id, msg.num_speakers, msg.names)


class _RateLimited(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Wake(ControlFrame):
    """Jumps a connection's outbound edge to wake its sender (so an abandoned one returns)."""
