"""Events to a WebSocket peer as JSON text frames (the same JSON as ``stream/events.py``).

For pushing one graph's events to a remote dashboard or relay (``speechstream serve``
already streams events back to each of its own clients)::

    sink = WebSocketSink("ws://127.0.0.1:9000/events")
    graph = Graph(..., nodes=[..., FanOut([SinkNode(sink)], edge=EdgeSpec(256, "drop_oldest"))])

The connection opens on the first event. ``consume`` waits while the socket's write
buffer is full, so put the sink on a ``drop_oldest`` FanOut edge (partials then drop
before finals do). A lost connection disables this sink only (``Sink.failed``), like a
broken file; audio chunks are never sent.
"""

from __future__ import annotations

from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from sinks.base import Sink, SinkErrorHandler
from stream.events import AudioChunk, Event

__all__ = ["WebSocketSink"]


class WebSocketSink(Sink):
    kind = "websocket"

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        stream_id: str | None = None,
        on_error: SinkErrorHandler | None = None,
        **connect_kw: Any,
    ) -> None:
        super().__init__(stream_id=stream_id, on_error=on_error)
        self.url = url
        self.headers = headers
        self.connect_kw = connect_kw
        self._ws: ClientConnection | None = None
        self.sent = 0

    def describe(self) -> str:
        return f"websocket sink {self.url}"

    async def consume(self, event: Event) -> None:
        if self.failed is not None or self.closed or isinstance(event, AudioChunk):
            return
        if self.stream_id is not None and event.stream_id != self.stream_id:
            return
        try:
            if self._ws is None:
                self._ws = await connect(self.url, additional_headers=self.headers, compression=None, **self.connect_kw)
            await self._ws.send(event.to_json())
            self.sent += 1
        except (OSError, websockets.WebSocketException) as exc:
            err = exc if isinstance(exc, OSError) else OSError(f"{self.url}: {exc}")
            self._fail(err)

    def handle(self, event: Event) -> bool:  # the async consume above does the work
        raise NotImplementedError

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                await ws.close()
            except (OSError, websockets.WebSocketException):
                pass

    def release(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.transport.abort()
