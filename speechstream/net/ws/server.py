""":class:`CaptionServer`: one shared graph, many WebSocket streams, on one port.

The server's lifecycle: start (graph first, then the socket), graceful drain (``/readyz`` fails,
new streams are refused, open ones run to their end or a deadline) and stop. The parts it is made
of: :mod:`.http` (requests before the upgrade), :mod:`.session` and :mod:`.control` (one
connection), :mod:`.core` (shared state, event routing, heap trim).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.server import Server, serve

from speechstream.ops import ServerMetrics
from stream.events import Event
from stream.graph import Graph
from stream.node import Node

from .config import ServerConfig
from .conn import Conn
from .core import log
from .http import HttpRoutes
from .session import StreamSessions

__all__ = ["CaptionServer"]


class CaptionServer(HttpRoutes, StreamSessions):
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
        self._conns: dict[str, Conn] = {}
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
