"""The HTTP side of the WebSocket port: who may upgrade to ``/ws``, the ops routes and the web page.

Answered before any WebSocket upgrade: ``/healthz``, ``/readyz`` and ``/metrics`` (no token),
the live-caption page (``/``, plain files of ``speechstream/web``) and the event schema
(``/events.schema.json``). An upgrade is refused with 503 (draining, too many connections),
404 (not ``/ws``), 403 (another origin) or 401 (missing or wrong token); only GET answers.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from speechstream.ops import CONTENT_TYPE as METRICS_CONTENT_TYPE
from stream.events import SCHEMA_PATH

from ..protocol import check_token, origin_allowed, token_from_request
from .core import ServerCore

__all__ = ["HttpRoutes", "WEB_DIR"]

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
}


class HttpRoutes(ServerCore):
    """``process_request`` of the WebSocket server: the answer to every plain HTTP request."""

    @property
    def ready(self) -> bool:
        """What /readyz answers: the model is loaded (graph running), the server accepts, it is not draining."""
        return self._server is not None and self.graph.running and not self.draining

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
