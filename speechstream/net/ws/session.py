"""One WebSocket connection, one stream of the shared graph: its tasks from ``start`` to close.

After the ``start`` handshake (:mod:`.control`) the connection gets a
:class:`~stream.sources.push.PushSource` on the shared graph and a bounded outbound edge, and
four tasks: a reader (audio and control in, with rate limits as back-pressure), a sender (events
out as JSON), a close watcher and a keepalive. Audio is delayed, never dropped, on the way in;
a client that vanishes has its pending audio discarded and its stream ended.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import websockets
from websockets.asyncio.server import ServerConnection

from stream.events import SAMPLE_RATE_HZ, EndOfStream, Event
from stream.queues import Edge, EdgeSpec
from stream.sources.push import PushSource

from ..languages import start_stream
from ..protocol import (
    ProtocolError,
    StartConfig,
    TokenBucket,
    bucket_debit,
    decode_audio,
    parse_control,
    ready_message,
    split_offset_header,
)
from ..speakers import start_speakers
from .conn import Conn, within
from .control import ControlMessages
from .core import log

__all__ = ["StreamSessions"]


class StreamSessions(ControlMessages):
    """The handler of every WebSocket connection (``websockets``' ``handler``)."""

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.stats["connections"] += 1
        conn: Conn | None = None
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

    async def _open_stream(self, ws: ServerConnection, cfg: StartConfig) -> Conn | None:
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
        conn = Conn(sid, ws, cfg, source, out)
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

    async def _serve_stream(self, conn: Conn) -> None:
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

    async def _send_loop(self, conn: Conn) -> None:
        limit = self.config.ping_timeout_s
        while True:
            item = await conn.out.get()
            if conn.gone:
                return
            if not isinstance(item, Event):
                continue
            try:
                # Blocks only while the socket's buffers are full: the client reads nothing.
                await within(conn.ws.send(item.to_json()), limit)
            except asyncio.TimeoutError:
                self._slow_consumer(conn, f"no data accepted for {limit:g} s")
                return
            if isinstance(item, EndOfStream):
                return

    async def _watch_close(self, conn: Conn) -> None:
        """The connection closed (or vanished) while its stream still had audio to come: nobody
        will read the results, so its pending audio goes, even while the reader is held back."""
        await conn.ws.wait_closed()
        if not conn.finishing:
            self._discard(conn)

    async def _keepalive(self, conn: Conn) -> None:
        """Ping every ``ping_interval_s``; no pong within ``ping_timeout_s`` means the client does
        not read its socket (or is gone): close it as a slow consumer, with code and reason, rather
        than let a keepalive failure reset the connection."""
        interval, limit = self.config.ping_interval_s, self.config.ping_timeout_s
        assert interval is not None
        try:
            while not conn.gone:
                await asyncio.sleep(interval)
                pong = await within(conn.ws.ping(), limit)
                sent = time.monotonic()
                while True:
                    try:
                        await within(asyncio.shield(pong), limit)
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

    async def _read_loop(self, conn: Conn) -> None:
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
                    message = await within(conn.ws.recv(), timeout)
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
                        if self._control(conn, parse_control(message, lim)):
                            ended = True  # "end": no more audio; the stream's last events are due
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

    async def _throttle(self, conn: Conn, wait: float) -> None:
        if wait > 0:
            self.stats["throttled_s"] += wait
            conn.held = True
            try:
                await asyncio.sleep(wait)
            finally:
                conn.held, conn.held_until = False, time.monotonic()
