"""The JSON control messages of one connection: ``start`` first, then ``end`` and ``set_speakers``.

A missing or bad ``start`` is fatal for that connection only (an ``error`` event, then close
1008). After it, a bad control message is a non-fatal ``error`` event unless the protocol
marks it fatal (:mod:`speechstream.net.protocol`).
"""

from __future__ import annotations

import asyncio

import websockets
from websockets.asyncio.server import ServerConnection

from stream.events import ErrorEvent

from ..protocol import ControlMessage, EndOfAudio, ProtocolError, SetSpeakers, StartConfig, parse_control
from ..speakers import set_stream_speakers
from .conn import Conn
from .core import ServerCore

__all__ = ["ControlMessages"]


class ControlMessages(ServerCore):
    """The ``start`` handshake and the control messages that follow it."""

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

    def _control(self, conn: Conn, msg: ControlMessage) -> bool:
        """Act on a control message after ``start``; True when it ends the stream's audio (``end``)."""
        if isinstance(msg, EndOfAudio):
            conn.finishing = True
            conn.source.end()
            return True
        if isinstance(msg, SetSpeakers):
            self._set_speakers(conn, msg)
        elif isinstance(msg, StartConfig):
            raise ProtocolError("bad_control", "'start' was already received; ignored")
        return False

    def _set_speakers(self, conn: Conn, msg: SetSpeakers) -> None:
        # The diarizer (serve --diarize) caps and names this stream's speakers; raises a
        # non-fatal ProtocolError without one, or for a setting it cannot keep.
        set_stream_speakers(self.graph.nodes(), conn.stream_id, msg)
