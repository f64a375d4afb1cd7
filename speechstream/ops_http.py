"""A small HTTP/1.1 listener for a server's operations paths: ``/healthz``, ``/readyz``, ``/metrics``.

For a process that has no HTTP server of its own (the MQTT worker); ``serve`` answers the same
paths on its WebSocket port. One request per connection (``Connection: close``), GET or HEAD
only, the request head bounded in size and time::

    ops = OpsServer(metrics.render, lambda: (worker.ready, worker.not_ready_reason))
    await ops.start("127.0.0.1", 9102)
    ...
    await ops.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus

from speechstream import defaults

from .ops import CONTENT_TYPE

__all__ = ["OpsServer"]

log = logging.getLogger("speechstream.ops")

_MAX_HEAD = 8192  # bytes of request line and headers
_READ_TIMEOUT_S = 5.0


class OpsServer:
    """Answers ``/healthz`` (200 while the loop runs), ``/readyz`` (200 or 503 with the reason), ``/metrics``.

    ``render`` returns the Prometheus text; ``readiness`` returns ``(ready, reason)``."""

    def __init__(self, render: Callable[[], bytes], readiness: Callable[[], tuple[bool, str]]):
        self._render = render
        self._readiness = readiness
        self._server: asyncio.Server | None = None

    async def start(self, host: str = defaults.OPS_HOST, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)

    @property
    def port(self) -> int:
        """The bound port (the one picked when started with port 0)."""
        if self._server is None:
            raise RuntimeError("the ops server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()

    def respond(self, method: str, target: str) -> tuple[HTTPStatus, str, bytes]:
        """Status, content type and body for one request (no I/O)."""
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, text, b"only GET\n"
        path = target.split("?", 1)[0]
        if path == "/healthz":
            return HTTPStatus.OK, text, b"ok\n"
        if path == "/readyz":
            ready, reason = self._readiness()
            if ready:
                return HTTPStatus.OK, text, b"ready\n"
            return HTTPStatus.SERVICE_UNAVAILABLE, text, f"{reason or 'not ready'}\n".encode()
        if path == "/metrics":
            return HTTPStatus.OK, CONTENT_TYPE, self._render()
        return HTTPStatus.NOT_FOUND, text, b"not found (paths: /healthz /readyz /metrics)\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            except asyncio.LimitOverrunError:
                head = b""
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                return
            parts = head[:_MAX_HEAD].split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(head) > _MAX_HEAD or len(parts) != 3 or not parts[2].startswith("HTTP/"):
                status, ctype, body = HTTPStatus.BAD_REQUEST, "text/plain; charset=utf-8", b"bad request\n"
                method = "GET"
            else:
                method = parts[0]
                try:
                    status, ctype, body = self.respond(method, parts[1])
                except Exception:  # a failing collector: the scrape fails, the server goes on
                    log.exception("ops: %s %s failed", method, parts[1])
                    status, ctype, body = HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", b"error\n"
            lines = [
                f"HTTP/1.1 {status.value} {status.phrase}",
                f"Content-Type: {ctype}",
                f"Content-Length: {len(body)}",
                "Cache-Control: no-cache",
                "Connection: close",
            ]
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                lines.append("Allow: GET, HEAD")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT_S)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
