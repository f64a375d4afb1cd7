"""The WebSocket server against hostile or careless clients (issue 21), on a real loopback socket.

Bulk uploaders get every final (the rate limit is back-pressure, never a silent drop); idle
holders are closed and free their slot; other web pages cannot connect; a client that never
reads gets the documented slow-consumer close; a vanished client's audio is not processed and
leaves nothing behind; only GET answers on the HTTP side; ``examples/ws_client.py --speed 0``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
import websockets
from websockets.asyncio.client import connect

from speechstream.net.protocol import Limits, encode_audio
from speechstream.net.ws import CaptionServer, ServerConfig
from stream.events import AudioChunk, Event
from stream.node import Node
from stream.resample import Resample
from tests.integration.netkit import (
    EnergyCaptioner,
    SpeakerAwareCaptioner,
    assert_stream_well_formed,
    read_until_closed,
    send_start,
    sine,
    stream_audio,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def _server(**cfg) -> CaptionServer:
    nodes = cfg.pop("nodes", None) or [Resample(), EnergyCaptioner()]
    return CaptionServer(nodes, ServerConfig(port=0, **cfg))


async def _until(pred, timeout_s: float = 10.0) -> None:
    async def loop():
        while not pred():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout_s)


# --------------------------------------------------------------------------- defect 1: rate limit


async def test_bulk_upload_of_450_tiny_frames_then_end_gets_every_final_and_end_of_stream():
    # The probe: 450 frames in a burst (over the 400-message burst) lost frames and the final
    # {"type": "end"}, and the client hung. Default limits.
    async with _server() as srv:
        s = await stream_audio(srv.url, sine(9.0, 16000), 16000, chunk_ms=20, timeout_s=15)
        assert srv.stats["throttled_s"] > 0  # the message-rate limit held the reader back
    assert s.close_code == 1000
    assert_stream_well_formed(s)
    assert s.events[-1]["sample"] == 9 * 16000  # every frame reached the pipeline
    assert [f["text"] for f in s.finals] == [f"seg{i} rms35" for i in range(9)]
    assert not s.of("error")


async def test_unpaced_upload_over_the_audio_rate_is_slowed_down_not_dropped():
    # 4 s of audio sent as fast as possible to a stream allowed 1 s of burst at 4x real time:
    # the server stops reading for about (4 - 1) / 4 s, TCP flow control holds the client back.
    lim = Limits(max_realtime_factor=4.0, burst_audio_s=1.0)
    async with _server(limits=lim) as srv:
        t0 = time.monotonic()
        s = await stream_audio(srv.url, sine(4.0, 16000), 16000, chunk_ms=100)
        elapsed = time.monotonic() - t0
        assert srv.stats["throttled_s"] >= 0.5
    assert s.close_code == 1000 and not s.of("error")
    assert s.events[-1]["sample"] == 4 * 16000
    assert len(s.finals) == 4
    assert elapsed >= 0.6  # it was held to the rate (a lower bound, not a benchmark)


async def test_control_messages_are_never_rate_limited_away():
    # A flood of tiny frames against a low message rate: set_speakers and end still act.
    cap = SpeakerAwareCaptioner(speaker="spk_0")
    lim = Limits(max_messages_per_s=150.0, burst_messages=10)
    async with _server(nodes=[Resample(), cap], limits=lim) as srv:
        s = await stream_audio(
            srv.url,
            sine(1.5, 16000),
            16000,
            chunk_ms=10,
            timeout_s=15,
            controls={75: {"type": "set_speakers", "names": ["Ann"]}},
        )
    assert s.close_code == 1000 and not s.of("error")
    assert s.events[-1]["sample"] == 24000
    assert cap.speaker_settings[s.ready["stream_id"]] == [(None, ("Ann",))]


async def test_real_time_client_is_never_throttled():
    lim = Limits(max_realtime_factor=1.5, burst_audio_s=2.0, max_messages_per_s=80.0, burst_messages=100)
    async with _server(limits=lim) as srv:
        s = await stream_audio(srv.url, sine(2.0, 16000), 16000, chunk_ms=20, realtime=True)
        assert srv.stats["throttled_s"] == 0
    assert s.close_code == 1000 and not s.of("error") and len(s.finals) == 2


async def test_bulk_upload_into_a_pipeline_that_falls_behind_loses_nothing():
    # Within the rate limit, but faster than the pipeline: the stream's reading slows down
    # (TCP back-pressure) instead of its audio being dropped on the way into the graph.
    slow = _SlowCounter(delay_s=0.002)
    lim = Limits(max_realtime_factor=1e3, burst_audio_s=1e3, max_messages_per_s=1e6, burst_messages=10**6)
    async with _server(nodes=[Resample(), slow], limits=lim) as srv:
        s = await stream_audio(srv.url, sine(6.0, 16000), 16000, chunk_ms=10, timeout_s=30)
    assert s.close_code == 1000
    assert not s.of("queue_overflow") and not s.of("error")
    assert s.events[-1]["sample"] == 6 * 16000
    assert sum(slow.samples.values()) == 6 * 16000


# --------------------------------------------------------------------------- defect 3: idle, origin


async def test_idle_connections_are_closed_with_code_and_reason_and_free_their_slots():
    async with _server(max_connections=2, idle_timeout_s=0.5) as srv:
        holders = []
        for _ in range(2):
            ws = await connect(srv.url)
            await send_start(ws)
            holders.append(ws)
        await holders[1].send(encode_audio(sine(0.1, 16000)))  # a little audio, then nothing
        for ws in holders:
            events = await asyncio.wait_for(read_until_closed(ws), 5)
            assert (ws.close_code, ws.close_reason) == (1008, "idle: no audio for 0.5 s")
            errors = [e for e in events if e["type"] == "error"]
            assert [(e["code"], e["fatal"]) for e in errors] == [("idle_timeout", True)]
            assert events[-1]["type"] == "end_of_stream"
        assert [f["end_sample"] for f in events if f["type"] == "final_transcript"] == [1600]
        s = await stream_audio(srv.url, sine(1.0, 16000), 16000)  # the slots are free again
        assert s.close_code == 1000 and len(s.finals) == 1


async def test_a_streaming_client_is_not_idle():
    async with _server(idle_timeout_s=0.3) as srv:
        s = await stream_audio(srv.url, sine(1.5, 16000), 16000, realtime=True)
    assert s.close_code == 1000 and not s.of("error") and len(s.finals) == 2


async def _raw_upgrade(port: int, host: str, origin: str | None) -> int:
    """Status code of a hand-written upgrade request (a browser after DNS rebinding sends its own Host)."""

    def go() -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            lines = [
                "GET /ws HTTP/1.1",
                f"Host: {host}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            ]
            if origin is not None:
                lines.append(f"Origin: {origin}")
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            return int(sock.recv(200).split()[1])

    return await asyncio.to_thread(go)


async def test_cross_site_websocket_is_refused_before_the_upgrade():
    async with _server() as srv:
        for origin in ("http://evil.example", "null", f"http://localhost.evil.example:{srv.port}"):
            with pytest.raises(websockets.InvalidStatus) as err:
                async with connect(srv.url, origin=origin):
                    pass
            assert err.value.response.status_code == 403, origin
        # The page's own origin, and clients that are not browsers (no Origin), are served.
        s = await stream_audio(srv.url, sine(0.5, 16000), 16000, origin=f"http://127.0.0.1:{srv.port}")
        assert s.close_code == 1000 and s.finals
        s = await stream_audio(srv.url, sine(0.5, 16000), 16000)
        assert s.close_code == 1000 and s.finals
        # DNS rebinding: the evil page's origin equals the Host it sends, but that Host is not this server.
        assert await _raw_upgrade(srv.port, f"evil.example:{srv.port}", f"http://evil.example:{srv.port}") == 403
        assert await _raw_upgrade(srv.port, f"localhost:{srv.port}", f"http://localhost:{srv.port}") == 101
        assert srv.stats["rejected"] == 4
    async with _server(allow_origins=("https://app.example",)) as srv:
        s = await stream_audio(srv.url, sine(0.5, 16000), 16000, origin="https://app.example")
        assert s.close_code == 1000 and s.finals
        with pytest.raises(websockets.InvalidStatus) as err:
            async with connect(srv.url, origin="https://other.example"):
                pass
        assert err.value.response.status_code == 403


# --------------------------------------------------------------------------- defect 5: vanished clients


class _SlowCounter(Node):
    """Takes ``delay_s`` per audio chunk (a busy recogniser) and counts the samples it processed."""

    def __init__(self, delay_s: float):
        super().__init__("slow-counter")
        self.delay_s = delay_s
        self.samples: dict[str, int] = {}

    async def process(self, event: Event) -> None:
        if isinstance(event, AudioChunk):
            await asyncio.sleep(self.delay_s)
            self.samples[event.stream_id] = self.samples.get(event.stream_id, 0) + event.samples.shape[0]
        await self.push(event)


async def test_vanished_clients_audio_is_not_processed_and_nothing_is_left_behind():
    # Five clients each send 2 s of audio as fast as they can into a pipeline that needs 1 s of
    # wall time per second of audio, then vanish. Nobody will read what their audio would give.
    slow = _SlowCounter(delay_s=0.02)
    async with _server(nodes=[Resample(), slow]) as srv:
        for _ in range(5):
            ws = await connect(srv.url)
            await send_start(ws)
            for _ in range(100):
                await ws.send(encode_audio(sine(0.02, 16000)))
            await asyncio.sleep(0.1)
            ws.transport.abort()
        # Processing all of it would take 10 s.
        await _until(lambda: not srv._handlers and not srv.active_streams and not srv.graph.sources, 4)
        assert sum(slow.samples.values()) < 5 * 32000 // 2
        for node in srv.graph.nodes():
            assert not node.open_streams, node
        assert not srv._conns
        if sys.platform.startswith("linux"):  # freed heap handed back to the OS (glibc malloc_trim), 1 s later
            await _until(lambda: srv.stats["memory_trims"] >= 1, 3)
        s = await stream_audio(srv.url, sine(0.2, 16000), 16000)  # still serving
        assert s.close_code == 1000


# --------------------------------------------------------------------------- defect 7: slow consumer


async def test_client_that_never_reads_gets_the_slow_consumer_close_not_a_keepalive_reset():
    cap = EnergyCaptioner(segment_samples=1600, partial_samples=10**9)  # a final every 0.1 s: little data
    async with _server(nodes=[Resample(), cap], ping_interval_s=0.3, ping_timeout_s=0.6, close_timeout_s=5.0) as srv:
        # max_queue=1: once one message waits unread, the client library stops reading its
        # socket: no pong, no events read, as a client that never reads.
        ws = await connect(srv.url, max_queue=1, ping_interval=None)
        await send_start(ws)
        t0 = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(150):  # 3 s at real-time pace, at most
                await ws.send(encode_audio(sine(0.02, 16000)))
                await asyncio.sleep(0.02)
                if srv.stats["slow_consumers"]:
                    break
            else:
                raise AssertionError("not closed as a slow consumer")
            await asyncio.sleep(0.2)
            await ws.send(encode_audio(sine(0.02, 16000)))  # the server has closed
            for _ in range(100):
                await ws.recv()
        assert time.monotonic() - t0 < 3.0
        assert ws.close_code == 1008 and ws.close_reason.startswith("slow consumer"), (ws.close_code, ws.close_reason)
        await _until(lambda: not srv._handlers and not srv.active_streams, 5)
        good = await stream_audio(srv.url, sine(0.5, 16000), 16000)
        assert good.close_code == 1000


# --------------------------------------------------------------------------- smaller ones


async def _http(url: str, method: str, data: bytes | None = None) -> tuple[int, dict[str, str]]:
    def go():
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=5) as r:
                return r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers)

    return await asyncio.to_thread(go)


async def test_only_documented_methods_and_paths_answer():
    async with _server() as srv:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in ("", "app.js", "ws", "nope"):
                status, headers = await _http(srv.http_url + path, method)
                assert status == 405 and headers.get("Allow") == "GET", (method, path, status)
        assert (await _http(srv.http_url, "GET"))[0] == 200
        assert (await _http(srv.http_url + "events.schema.json", "GET"))[0] == 200
        assert (await _http(srv.http_url + "ws", "GET"))[0] == 404  # /ws answers WebSocket upgrades only
        assert (await _http(srv.http_url + "admin", "GET"))[0] == 404


async def test_ws_client_example_speed_0_sends_unpaced_and_prints_every_final():
    frames = sf.info(str(REPO / "examples" / "hello.wav")).frames
    async with _server() as srv:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "examples" / "ws_client.py"),
            str(REPO / "examples" / "hello.wav"),
            "--url",
            srv.url,
            "--speed",
            "0",
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    finals = re.findall(r"\d\.\d\ds  (seg\d+) ", out.decode())
    assert finals == [f"seg{i}" for i in range(-(-frames // 16000))]


def test_ws_client_example_rejects_a_negative_speed():
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "ws_client.py"), "x.wav", "--speed", "-1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "--speed" in proc.stderr.splitlines()[-1]
