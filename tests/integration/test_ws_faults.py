"""WebSocket server under faults: vanishing clients, slow consumers, a malformed-frame fuzz."""

from __future__ import annotations

import asyncio
import json
import random
import socket

import numpy as np
import pytest
import websockets
from websockets.asyncio.client import connect

from speechstream.net.protocol import Limits, encode_audio
from speechstream.net.ws import CaptionServer, ServerConfig
from stream.resample import Resample
from tests.integration.netkit import EnergyCaptioner, assert_stream_well_formed, sine, stream_audio

pytestmark = pytest.mark.timeout(90)


async def _until(pred, timeout_s: float = 10.0) -> None:
    async def loop():
        while not pred():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout_s)


def _server_tasks() -> set[asyncio.Task]:
    """Every task but the test's own and the polling helper's."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.get_name().startswith("test:")}


async def test_client_vanishing_mid_stream_frees_everything():
    asyncio.current_task().set_name("test:main")
    cap = EnergyCaptioner()
    async with CaptionServer([Resample(), cap], ServerConfig(port=0)) as srv:
        await asyncio.sleep(0.05)
        baseline = {t.get_name() for t in _server_tasks()}
        for _ in range(3):
            ws = await connect(srv.url)
            await ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000}))
            sid = json.loads(await ws.recv())["stream_id"]
            for _i in range(20):
                await ws.send(encode_audio(sine(0.02, 16000)))
            await asyncio.sleep(0.1)
            assert sid in srv.active_streams and sid in cap.state
            ws.transport.abort()  # the client vanishes: no close frame, TCP reset
            await _until(lambda: sid not in srv.active_streams and not srv._handlers)
            await _until(lambda: sid not in cap.state)  # the recogniser forgot the stream
            try:
                await _until(lambda: {t.get_name() for t in _server_tasks()} <= baseline)
            except TimeoutError:
                raise AssertionError([repr(t) for t in _server_tasks() if t.get_name() not in baseline]) from None
        # Still serving.
        s = await stream_audio(srv.url, sine(1.0, 16000), 16000)
        assert s.close_code == 1000 and len(s.finals) == 1


async def test_client_vanishing_before_start_and_half_open():
    async with CaptionServer([Resample(), EnergyCaptioner()], ServerConfig(port=0, start_timeout_s=0.5)) as srv:
        # TCP connect and silence: the opening handshake times out and the server hangs up.
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.settimeout(5)
        # WebSocket open but no "start": the start timeout closes it with 1008.
        ws = await connect(srv.url)
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1008
        assert await asyncio.to_thread(sock.recv, 100) == b""
        sock.close()
        # A client that connects, starts and vanishes at once.
        ws = await connect(srv.url)
        await ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000}))
        ws.transport.abort()
        await _until(lambda: not srv._handlers and not srv.active_streams, 5)


async def test_slow_consumer_drops_partials_with_overflow_events_and_keeps_finals():
    # 300 partials per 0.25 s of audio, 8-event outbound queue, a client that reads nothing for a while.
    cap = EnergyCaptioner(partial_samples=4000, flood_partials=300)
    async with CaptionServer([Resample(), cap], ServerConfig(port=0, outbound_queue=8)) as srv:
        async with connect(srv.url, max_queue=4) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000}))
            await ws.recv()
            for _ in range(150):  # 3 s
                await ws.send(encode_audio(sine(0.02, 16000)))
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.sleep(1.0)  # not reading
            events = []
            async for msg in ws:
                events.append(json.loads(msg))
            assert ws.close_code == 1000
    kinds = [e["type"] for e in events]
    overflow = [e for e in events if e["type"] == "queue_overflow"]
    assert overflow, "drops must be reported"
    assert overflow[-1]["dropped_total"] > 0 and overflow[-1]["edge"].startswith("ws:")
    sent_partials = 300 * 3 * 3  # 3 partials per 1 s segment, 3 segments
    assert kinds.count("partial_transcript") + overflow[-1]["dropped_total"] == sent_partials
    assert [f["text"] for f in events if f["type"] == "final_transcript"] == ["seg0 rms35", "seg1 rms35", "seg2 rms35"]
    assert kinds[-1] == "end_of_stream"


async def test_client_that_never_reads_is_closed_and_others_unaffected():
    # Every event a final (never droppable): a client that never reads fills its queue and is closed.
    cap = EnergyCaptioner(segment_samples=160, partial_samples=10**9)
    cfg = ServerConfig(port=0, outbound_queue=16, close_timeout_s=0.5)
    async with CaptionServer([Resample(), cap], cfg) as srv:
        stuck = await connect(srv.url, max_queue=1)
        await stuck.send(json.dumps({"type": "start", "sample_rate_hz": 16000}))
        for _ in range(300):  # 300 x 2 finals per frame, ~60 kB of JSON, never read
            await stuck.send(encode_audio(sine(0.02, 16000)))
        good = await stream_audio(srv.url, sine(1.0, 16000), 16000, realtime=True)
        assert good.close_code == 1000 and len(good.finals) == 100
        assert_stream_well_formed(good)
        await _until(lambda: srv.stats["slow_consumers"] == 1 and not srv._handlers, 15)
        stuck.transport.abort()


async def test_fuzz_thousands_of_malformed_frames_then_a_good_client_is_served_correctly():
    rng = random.Random(20261122)
    lim = Limits(
        max_frame_bytes=2048, max_messages_per_s=1e6, burst_messages=10**6, max_realtime_factor=1e3, burst_audio_s=1e3
    )
    async with CaptionServer([Resample(), EnergyCaptioner()], ServerConfig(port=0, limits=lim)) as srv:
        good_during = asyncio.create_task(stream_audio(srv.url, sine(2.0, 16000, 0.3), 16000, realtime=True))

        async def fuzzer(n: int, seed: int) -> None:
            r = random.Random(seed)
            try:
                async with connect(srv.url, max_size=None) as ws:
                    if r.random() < 0.8:
                        await ws.send(
                            json.dumps(
                                {
                                    "type": "start",
                                    "sample_rate_hz": r.choice([8000, 16000, 48000]),
                                    "format": r.choice(["s16", "f32"]),
                                }
                            )
                        )
                    drain = asyncio.create_task(_drain(ws))
                    for _ in range(n):
                        kind = r.random()
                        if kind < 0.5:
                            frame: bytes | str = r.randbytes(r.choice([1, 3, 7, 64, 333, 2048, 2049, 5000]))
                        elif kind < 0.7:
                            frame = np.array([r.choice([np.nan, np.inf, 1e9, 0.5])] * 8, dtype="<f4").tobytes()
                        elif kind < 0.9:
                            frame = r.choice(
                                [
                                    '{"type":',
                                    "null",
                                    "[]",
                                    '{"type":"start"}',
                                    '{"type":"set_speakers"}',
                                    '{"type":"start","sample_rate_hz":1e99}',
                                    "\u0000" * 50,
                                    json.dumps({"type": r.random()}),
                                    "x" * 5000,
                                ]
                            )
                        else:
                            frame = r.randbytes(r.randint(0, 300)).decode("latin-1")
                        await ws.send(frame)
                    if r.random() < 0.5:
                        await ws.send(json.dumps({"type": "end"}))
                        await asyncio.wait_for(drain, 20)
                    else:
                        drain.cancel()
                        ws.transport.abort()
            except websockets.ConnectionClosed:
                pass

        await asyncio.gather(*(fuzzer(500, rng.randrange(2**31)) for _ in range(8)))  # 4000 frames
        during = await good_during
        after = await stream_audio(srv.url, sine(2.0, 16000, 0.3), 16000)
        assert srv.stats["protocol_errors"] > 1000
        await _until(lambda: not srv._handlers and not srv.active_streams, 20)
    for s in (during, after):
        assert s.close_code == 1000
        assert_stream_well_formed(s)
        assert [f["text"] for f in s.finals] == ["seg0 rms21", "seg1 rms21"]
        assert not s.of("error")


async def _drain(ws) -> list:
    out = []
    try:
        async for msg in ws:
            out.append(msg)
    except websockets.ConnectionClosed:
        pass
    return out
