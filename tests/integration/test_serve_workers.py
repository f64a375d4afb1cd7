"""serve --workers N: N processes on one port (SO_REUSEPORT), each with its own graph; SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.integration.netkit import send_start

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def _active(http: str) -> float:
    with urllib.request.urlopen(http + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("speechstream_active_streams "):
                return float(line.split()[1])
    raise AssertionError("no speechstream_active_streams in /metrics")


def test_two_workers_share_one_port_and_drain_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "speechstream.cli", "serve", "--port", "0", "--model", "none", "--workers", "2"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group: the finally below reaches the workers too
    )
    try:
        lines, urls = [], []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(urls) < 2:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "WebSocket ws://" in line:
                urls.append(line.split("WebSocket ")[1].strip())
        # both workers report the same address: one port
        assert len(lines) and any("2 workers on port" in ln for ln in lines), "".join(lines)
        assert len(urls) == 2 and urls[0] == urls[1], "".join(lines)
        url = urls[0]
        http = url.replace("ws://", "http://").removesuffix("/ws")

        async def scenario() -> set[float]:
            conns = [await connect(url) for _ in range(8)]
            try:
                for ws in conns:
                    await send_start(ws)
                seen = set()
                for _ in range(40):  # each scrape is a new connection, placed by the kernel on either worker
                    seen.add(await asyncio.to_thread(_active, http))
                    if len(seen) == 2:
                        break
                return seen
            finally:
                for ws in conns:
                    await ws.close()

        seen = asyncio.run(scenario())
        # two processes, each with part of the 8 streams: no scrape sees all 8 (all on one worker:
        # probability 2/256), and two different counts add up to 8
        assert max(seen) < 8 and (len(seen) == 1 or sum(seen) == 8), seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        proc.stderr.close()
