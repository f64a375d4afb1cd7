"""/healthz, /readyz, /metrics and the SIGTERM drain of the WebSocket server (speechstream.ops)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from speechstream.net.protocol import encode_audio
from speechstream.net.ws import CaptionServer, ServerConfig
from stream.resample import Resample
from tests.integration.netkit import EnergyCaptioner, read_until_closed, send_start, sine, stream_audio

pytestmark = pytest.mark.timeout(90)


def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def _get(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(_fetch, url)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_are_prometheus_text_and_count_what_happened():
    async with CaptionServer([Resample(), EnergyCaptioner()], ServerConfig(port=0)) as srv:
        base = srv.http_url.rstrip("/")
        assert await _get(base + "/healthz") == (200, "ok\n")
        assert await _get(base + "/readyz") == (200, "ready\n")
        s1 = await stream_audio(srv.url, sine(2.5, 16000), 16000)
        s2 = await stream_audio(srv.url, sine(1.5, 48000), 48000)
        status, text = await _get(base + "/metrics")
    assert status == 200
    m = _samples(text)
    assert m[("speechstream_streams_total", ())] == 2
    assert m[("speechstream_active_streams", ())] == 0
    assert m[("speechstream_audio_seconds_total", ())] == pytest.approx(4.0, abs=0.05)
    finals = len(s1.finals) + len(s2.finals)
    assert finals > 0 and m[("speechstream_finals_total", ())] == finals
    assert m[("speechstream_finalization_latency_seconds_count", ())] == finals
    assert m[("speechstream_first_partial_latency_seconds_count", ())] == 2
    assert any(name == "speechstream_queue_depth" for name, _ in m)  # one per bounded edge of the graph


async def test_error_events_are_counted_by_code():
    async with CaptionServer([Resample(), EnergyCaptioner()], ServerConfig(port=0)) as srv:
        async with connect(srv.url) as ws:
            await send_start(ws)
            await ws.send(b"\x01")  # an odd byte count is not s16 PCM: a non-fatal bad_frame error
            await ws.send('{"type": "end"}')
            await read_until_closed(ws)
        _, text = await _get(srv.http_url + "metrics")
    codes = {
        dict(lbl).get("code"): v for (name, lbl), v in _samples(text).items() if name == "speechstream_errors_total"
    }
    assert codes.get("bad_frame", 0) >= 1, codes


async def test_drain_fails_readyz_refuses_new_streams_and_lets_open_ones_finish():
    srv = CaptionServer([Resample(), EnergyCaptioner()], ServerConfig(port=0))
    await srv.start()
    base = srv.http_url.rstrip("/")
    async with connect(srv.url) as ws:
        await send_start(ws)
        await ws.send(encode_audio(sine(0.6, 16000)))
        drain = asyncio.create_task(srv.drain(timeout_s=10.0))
        await asyncio.sleep(0.2)
        assert await _get(base + "/readyz") == (503, "draining\n")
        assert (await _get(base + "/healthz"))[0] == 200
        with pytest.raises(Exception, match="503"):
            async with connect(srv.url):
                pass
        assert not drain.done()  # the open stream still runs
        await ws.send(encode_audio(sine(0.6, 16000)))
        await ws.send('{"type": "end"}')
        events = await read_until_closed(ws)
        assert ws.close_code == 1000  # it ended as its client asked, not cut by the server
    assert await asyncio.wait_for(drain, 10) == 0
    assert events[-1]["type"] == "end_of_stream"
    assert sum(1 for e in events if e["type"] == "final_transcript") >= 1


async def test_drain_deadline_ends_streams_that_do_not_finish():
    srv = CaptionServer([Resample(), EnergyCaptioner()], ServerConfig(port=0, idle_timeout_s=None))
    await srv.start()
    async with connect(srv.url) as ws:
        await send_start(ws)
        await ws.send(encode_audio(sine(0.5, 16000)))
        t0 = time.monotonic()
        left = await srv.drain(timeout_s=0.5)
        events = await read_until_closed(ws)
        assert ws.close_code == 1001
    assert left == 1 and time.monotonic() - t0 < 8
    assert events[-1]["type"] == "end_of_stream" and any(e["type"] == "final_transcript" for e in events)


def test_serve_drains_on_sigterm(tmp_path):
    """The real command: SIGTERM -> 'draining' on stderr, /readyz 503 while a stream is open, exit 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "speechstream.cli", "serve", "--port", "0", "--model", "none", "--drain-timeout", "3"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline and url is None:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "WebSocket ws://" in line:
                url = line.split("WebSocket ")[1].strip()
        assert url, "".join(lines)
        http = url.replace("ws://", "http://").removesuffix("/ws")

        async def scenario():
            async with connect(url) as ws:
                await send_start(ws)
                await ws.send(encode_audio(sine(0.3, 16000)))
                proc.send_signal(signal.SIGTERM)
                for _ in range(50):
                    status, _ = await _get(http + "/readyz")
                    if status == 503:
                        break
                    await asyncio.sleep(0.1)
                assert status == 503
                await ws.send('{"type": "end"}')
                await read_until_closed(ws)
                return ws.close_code

        assert asyncio.run(scenario()) == 1000
        assert proc.wait(timeout=30) == 0
        rest = proc.stderr.read()
        assert "draining" in "".join(lines) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
