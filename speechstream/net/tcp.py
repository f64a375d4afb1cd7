"""Raw PCM over TCP: pipe ``ffmpeg``, ``arecord`` or ``sox`` straight into a graph.

::

    # one stream: the source listens, takes ONE connection, and the stream ends when it closes
    src = TcpPcmSource(port=9000, sample_rate_hz=16000, sample_format="s16", stream_id="tcp")
    await Graph(sources=[src], nodes=[Resample(), VadNode.webrtc(), recognizer, sinks]).run()

    # many streams: each connection is its own stream of a running graph (``tcp-1``, ``tcp-2``, ...)
    async with TcpPcmServer(graph, port=9000, sample_rate_hz=16000):
        ...

Clients, with the receiving end on 127.0.0.1:9000::

    ffmpeg -re -i talk.mp3 -f s16le -ac 1 -ar 16000 tcp://127.0.0.1:9000
    arecord -f S16_LE -c 1 -r 16000 -t raw | nc -N 127.0.0.1 9000
    sox talk.wav -t raw -e signed -b 16 -c 1 -r 16000 - | nc -N 127.0.0.1 9000

The byte stream is mono little-endian PCM in the configured format and rate (no
header; TCP keeps order and loses nothing, so stream time is the byte count).
Bytes are cut into blocks of ``block_ms`` on sample boundaries, whatever the
socket's read sizes.

Start line (:class:`TcpPcmServer`). A connection may begin with the protocol's JSON ``start``
message (:mod:`speechstream.net.protocol`) on one line, then the PCM::

    (echo '{"type":"start","sample_rate_hz":16000,"format":"s16","language":"fra"}'; \\
     sox talk.wav -t raw -e signed -b 16 -c 1 -r 16000 -) | nc -N 127.0.0.1 9000

It sets that stream's rate, format, id, language (multilingual checkpoints; see
:mod:`speechstream.net.languages`) and speaker settings (``num_speakers``/``names``, for a diarizer in the
graph; otherwise a non-fatal ``speakers_unsupported`` error line after ``ready``:
:mod:`speechstream.net.speakers`); the server answers one JSON line, ``ready`` or a fatal
``error`` (``bad_json``, ``bad_control``, ``no_start``, ``stream_id_in_use``,
``unknown_language``, ``unavailable``) after which it closes that connection only. The stream's
events go to the graph's sinks, not back over TCP. A connection whose first bytes are ``{``
followed by ``"`` or whitespace is read as a start line (raw s16 audio would have to begin with
the sample 0x227b or 0x207b for that); ``start_line=False`` reads every byte as PCM.  Float32 NaN/inf or absurd values are bad audio: a fatal
``error`` event for that stream, and its connection is closed.  Binds 127.0.0.1
unless told otherwise; there is no authentication, so expose it only behind
something that has.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any

from stream.errors import BadAudioError, ConfigError
from stream.events import AudioChunk, ErrorEvent
from stream.graph import Graph
from stream.sources.base import Emit, Source
from stream.sources.push import PushSource

from .languages import start_stream
from .protocol import Limits, ProtocolError, SampleFormat, StartConfig, decode_audio, parse_control, ready_message
from .speakers import set_stream_speakers, start_speakers

__all__ = ["TcpPcmSource", "TcpPcmServer", "PcmFramer"]

log = logging.getLogger("speechstream.net.tcp")

_WIDTH = {"s16": 2, "f32": 4}


class PcmFramer:
    """Cuts an arbitrary byte stream into float32 blocks of ``block_samples`` (last block may be shorter)."""

    def __init__(self, sample_format: SampleFormat, block_samples: int):
        self.fmt = sample_format
        self.block_bytes = block_samples * _WIDTH[sample_format]
        self._buf = bytearray()
        self._limits = Limits(max_frame_bytes=self.block_bytes)

    def push(self, data: bytes) -> list[Any]:
        self._buf += data
        out = []
        while len(self._buf) >= self.block_bytes:
            block = bytes(self._buf[: self.block_bytes])
            del self._buf[: self.block_bytes]
            out.append(decode_audio(block, self.fmt, self._limits))
        return out

    def flush(self) -> list[Any]:
        """What is left at end of stream; a trailing partial sample is dropped."""
        width = _WIDTH[self.fmt]
        n = len(self._buf) // width * width
        block, self._buf = bytes(self._buf[:n]), bytearray()
        return [decode_audio(block, self.fmt, self._limits)] if n else []


def _check(sample_rate_hz: int, sample_format: str, block_ms: int) -> None:
    if sample_format not in _WIDTH:
        raise ConfigError(f"sample format must be 's16' or 'f32', got {sample_format!r}")
    if not 8000 <= sample_rate_hz <= 192_000:
        raise ConfigError(f"sample rate must be in [8000, 192000] Hz, got {sample_rate_hz}")
    if not 1 <= block_ms <= 1000:
        raise ConfigError(f"block_ms must be in [1, 1000], got {block_ms}")


class TcpPcmSource(Source):
    """Listens on ``host:port``, takes one connection, and emits its PCM as one stream."""

    realtime = True

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        sample_rate_hz: int = 16_000,
        sample_format: SampleFormat = "s16",
        stream_id: str = "tcp",
        block_ms: int = 20,
        accept_timeout_s: float | None = None,
    ):
        super().__init__(stream_id)
        _check(sample_rate_hz, sample_format, block_ms)
        self.host, self.port = host, port
        self._rate = sample_rate_hz
        self.fmt = sample_format
        self.block_samples = sample_rate_hz * block_ms // 1000
        self.accept_timeout_s = accept_timeout_s
        self._server: asyncio.base_events.Server | None = None
        self._conn: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue(1)
        self._writer: asyncio.StreamWriter | None = None
        self._stop = asyncio.Event()

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    @property
    def bound_port(self) -> int:
        return _bound_port(self._server)

    async def start(self) -> None:
        self._server = await _listen(self._accept, self.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None or self._conn.full():
            writer.close()  # one stream per source: later connections are refused
            return
        self._writer = writer
        self._conn.put_nowait((reader, writer))

    def request_stop(self) -> None:
        super().request_stop()
        self._stop.set()

    async def run(self, emit: Emit) -> None:
        got = asyncio.create_task(self._conn.get())
        stop = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({got, stop}, timeout=self.accept_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if got not in done:
            got.cancel()
            return
        reader, writer = got.result()
        if self._server is not None:
            self._server.close()  # no further connections
        framer = PcmFramer(self.fmt, self.block_samples)
        sample = 0
        try:
            while not self.stop_requested:
                data = await reader.read(65536)
                blocks = framer.push(data) if data else framer.flush()
                for x in blocks:
                    chunk = AudioChunk(self.stream_id, sample, samples=x, sample_rate_hz=self._rate)
                    sample = chunk.end_sample
                    await emit(chunk)
                if not data:
                    return
        except ProtocolError as exc:
            raise BadAudioError(f"TCP audio: {exc.message}", code="bad_audio") from exc
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._writer is not None:
            self._writer.close()


class TcpPcmServer:
    """Each TCP connection becomes a stream (``<prefix>-<n>``, or its start line's ``stream_id``) of a
    running graph; an optional JSON start line sets its rate, format and language (module docstring)."""

    def __init__(
        self,
        graph: Graph,
        port: int,
        *,
        host: str = "127.0.0.1",
        sample_rate_hz: int = 16_000,
        sample_format: SampleFormat = "s16",
        prefix: str = "tcp",
        block_ms: int = 20,
        max_connections: int = 16,
        start_line: bool = True,  # a connection may begin with a JSON "start" line (module docstring)
        start_timeout_s: float = 10.0,  # a start line begun must end within this
        limits: Limits = Limits(),
        on_error: Callable[[ErrorEvent], None] | None = None,  # refused streams' error events
    ):
        _check(sample_rate_hz, sample_format, block_ms)
        self.graph = graph
        self.host, self.port = host, port
        self.rate, self.fmt = sample_rate_hz, sample_format
        self.prefix = prefix
        self.block_ms = block_ms
        self.block_samples = sample_rate_hz * block_ms // 1000
        self.max_connections = max_connections
        self.start_line = start_line
        self.start_timeout_s = start_timeout_s
        self.limits = limits
        self.on_error = on_error
        self._ids = itertools.count(1)
        self._server: asyncio.base_events.Server | None = None
        self.live: dict[str, asyncio.StreamWriter] = {}
        self.errors: list[tuple[str, str]] = []

    @property
    def bound_port(self) -> int:
        return _bound_port(self._server)

    async def start(self) -> None:
        self._server = await _listen(self._handle, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self.live.values()):
                w.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpPcmServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.live) >= self.max_connections:
            writer.close()
            return
        sid = f"{self.prefix}-{next(self._ids)}"
        try:
            opened = await self._open(sid, reader, writer)
        except (ConnectionError, OSError):  # the client left (or reset) during its start
            opened = None
        if opened is None:
            writer.close()
            return
        source, framer, first = opened
        sid = source.stream_id
        try:
            data = first
            while True:
                for x in framer.push(data) if data else framer.flush():
                    await source.feed(x)
                if not data:
                    break
                data = await reader.read(65536)
        except ProtocolError as exc:
            self.errors.append((sid, exc.code))
            source.fail(f"TCP audio: {exc.message}", code="bad_audio")
        except (ConnectionError, OSError):
            pass
        finally:
            source.end()
            self.live.pop(sid, None)
            writer.close()

    async def _open(
        self, sid: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[PushSource, PcmFramer, bytes] | None:
        """Read the optional start line and start the stream: (source, framer, first PCM bytes), or
        None when the client left before sending anything or the stream was refused (an error line)."""
        first = await reader.read(65536)
        cfg = None
        if self.start_line and first:
            try:
                cfg, first = await _read_start_line(reader, first, self.limits, self.start_timeout_s)
                if cfg is not None:
                    sid = cfg.stream_id or sid
                    if cfg.offset_header:
                        raise ProtocolError(
                            "bad_control", "'offset_header' is for framed transports; TCP keeps every byte"
                        )
                    if sid in self.live:
                        raise ProtocolError("stream_id_in_use", f"stream {sid!r} is live", fatal=True)
            except ProtocolError as exc:
                await self._refuse(reader, writer, sid, exc)
                return None
        rate = cfg.sample_rate_hz if cfg is not None else self.rate
        fmt = cfg.sample_format if cfg is not None else self.fmt
        source = PushSource(sid, rate)
        self.live[sid] = writer
        try:
            await start_stream(self.graph, source, cfg.language if cfg is not None else None)
        except ProtocolError as exc:  # unknown_language, unavailable: this connection only
            self.live.pop(sid, None)
            await self._refuse(reader, writer, sid, exc)
            return None
        if cfg is not None:
            writer.write((json.dumps(ready_message(sid, cfg, self.limits)) + "\n").encode())
            speakers = start_speakers(cfg)
            if speakers is not None:  # before any audio; never fatal: one more error line, the stream runs on
                try:
                    set_stream_speakers(self.graph.nodes(), sid, speakers)
                except ProtocolError as exc:
                    self.errors.append((sid, exc.code))
                    ev = ErrorEvent(sid, 0, code=exc.code, message=exc.message, fatal=False)
                    if self.on_error is not None:
                        self.on_error(ev)
                    writer.write((ev.to_json() + "\n").encode())
        return source, PcmFramer(fmt, rate * self.block_ms // 1000), first

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sid: str, exc: ProtocolError
    ) -> None:
        """A refused stream: a fatal error event as one JSON line to the client (and ``on_error``)."""
        self.errors.append((sid, exc.code))
        log.warning("tcp: stream %s refused: %s", sid, exc.message)
        ev = ErrorEvent(sid, 0, code=exc.code, message=exc.message, fatal=True)
        if self.on_error is not None:
            self.on_error(ev)
        writer.write((ev.to_json() + "\n").encode())
        writer.write_eof()
        # Closing with the client's audio unread would reset the connection and could lose the error
        # line on its way: read and drop what it sends, until it closes (at most 2 s, 16 MiB).
        try:
            async with asyncio.timeout(2.0):
                for _ in range(256):
                    if not await reader.read(65536):
                        break
        except TimeoutError:
            pass


_JSON_SECOND = (b'"', b" ", b"\t", b"\r", b"\n")  # what follows the "{" of a JSON object's first key


async def _read_start_line(
    reader: asyncio.StreamReader, data: bytes, limits: Limits, timeout_s: float
) -> tuple[StartConfig | None, bytes]:
    """(the start message, the PCM bytes after its line), or (None, data) for a raw PCM connection.
    Raises ProtocolError (fatal) for a start line that is malformed, too long, not 'start' or late."""
    if data[:1] != b"{":
        return None, data
    buf = bytearray(data)

    async def line_end() -> int:
        while len(buf) < 2:  # a lone "{" so far: the next byte decides
            more = await reader.read(65536)
            if not more:
                return -1
            buf.extend(more)
        if bytes(buf[1:2]) not in _JSON_SECOND:
            return -1  # PCM that happens to begin with the byte "{"
        while (end := buf.find(b"\n")) < 0:
            if len(buf) > limits.max_control_bytes:
                break
            more = await reader.read(65536)
            if not more:
                raise ProtocolError("no_start", "the connection ended inside its start line", fatal=True)
            buf.extend(more)
        if end < 0 or end > limits.max_control_bytes:
            raise ProtocolError("oversize", f"start line longer than {limits.max_control_bytes} bytes", fatal=True)
        return end

    try:
        end = await asyncio.wait_for(line_end(), timeout_s)
    except asyncio.TimeoutError:
        raise ProtocolError(
            "no_start", f"the start line did not end (newline) within {timeout_s:g} s", fatal=True
        ) from None
    if end < 0:
        return None, bytes(buf)
    try:
        msg = parse_control(bytes(buf[:end]), limits)
    except ProtocolError as exc:
        exc.fatal = True
        raise
    if not isinstance(msg, StartConfig):
        raise ProtocolError("no_start", "a JSON line before the audio must be a 'start' message", fatal=True)
    return msg, bytes(buf[end + 1 :])


async def _listen(handler, host: str, port: int) -> asyncio.base_events.Server:
    """Start a TCP server; a port that cannot be bound is a configuration error naming it."""
    try:
        return await asyncio.start_server(handler, host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def _bound_port(server: asyncio.base_events.Server | None) -> int:
    assert server is not None
    return server.sockets[0].getsockname()[1]
