"""Two `speechstream serve` workers behind a real HAProxy (docs/haproxy.cfg): leastconn, /readyz health
checks, and one worker killed mid-stream. Its client sees the connection drop, reconnects through the
balancer and finishes on the other worker; the other worker's stream never notices."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

from speechstream.net.protocol import encode_audio
from tests.integration.netkit import send_start, sine

REPO = Path(__file__).resolve().parents[2]
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not os.path.exists(HAPROXY), reason="needs haproxy (Debian package; make apt-deps)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _active(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("speechstream_active_streams "):
                return float(line.split()[1])
    return -1.0


@pytest.fixture
def cluster(tmp_path):
    ports = [_free_port() for _ in range(3)]
    front, workers = ports[0], ports[1:]
    procs = []
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("worker1", "worker2", "haproxy")]  # noqa: SIM115
    for p, log in zip(workers, logs):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "speechstream.cli", "serve", "--port", str(p), "--model", "none"],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        )
    env = {**os.environ, "FRONT_ADDR": f"127.0.0.1:{front}"}
    env.update({f"WORKER{i + 1}": f"127.0.0.1:{p}" for i, p in enumerate(workers)})
    try:
        for p in workers:
            _wait(lambda p=p: _status(f"http://127.0.0.1:{p}/readyz") == 200, 60, f"worker {p} ready")
        hap = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(REPO / "docs" / "haproxy.cfg")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=logs[2],
        )
        procs.append(hap)
        _wait(lambda: _status(f"http://127.0.0.1:{front}/readyz") == 200, 20, "haproxy up")
        yield front, workers, procs
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
            pr.wait()
        for log in logs:
            log.close()


async def _stream(url: str, seconds: float, on_half=None) -> tuple[list[dict], int | None]:
    """Paced 100 ms blocks of a tone; returns (events, close code). ``on_half`` runs once at the middle."""
    events: list[dict] = []
    async with connect(url) as ws:
        await send_start(ws)

        async def reader():
            try:
                async for msg in ws:
                    events.append(json.loads(msg))
            except websockets.ConnectionClosed:
                pass

        task = asyncio.create_task(reader())
        blocks = int(seconds * 10)
        try:
            for i in range(blocks):
                await ws.send(encode_audio(sine(0.1, 16000, amp=0.3)))
                if i == blocks // 2 and on_half is not None:
                    await on_half()
                await asyncio.sleep(0.1)
            await ws.send('{"type": "end"}')
        except websockets.ConnectionClosed:
            pass
        await asyncio.wait_for(task, 30)
        return events, ws.close_code


def test_two_workers_behind_haproxy_survive_a_killed_worker(cluster):
    front, workers, procs = cluster
    url = f"ws://127.0.0.1:{front}/ws"

    async def scenario():
        # two streams at once: leastconn puts one on each worker
        started = asyncio.Event()
        holder: dict = {}

        async def kill_the_other():
            await started.wait()
            await asyncio.sleep(0.3)
            per = {p: await asyncio.to_thread(_active, p) for p in workers}
            assert sorted(per.values()) == [1.0, 1.0], per  # one stream on each worker
            holder["per"] = per

        async def victim():
            async def kill():
                idx = 0  # worker 1 dies; the survivor test checks which stream was on it
                procs[idx].send_signal(signal.SIGKILL)
                holder["killed"] = workers[idx]

            await asyncio.sleep(0.2)
            return await _stream(url, 3.0, on_half=kill)

        async def steady():
            started.set()
            return await _stream(url, 4.0)

        results = await asyncio.gather(victim(), steady(), kill_the_other())
        return results[0], results[1]

    (ev_a, code_a), (ev_b, code_b) = asyncio.run(scenario())
    # exactly one of the two streams was on the killed worker: it was cut (no end_of_stream, abnormal close)
    cut = [(ev, code) for ev, code in ((ev_a, code_a), (ev_b, code_b)) if not ev or ev[-1]["type"] != "end_of_stream"]
    whole = [(ev, code) for ev, code in ((ev_a, code_a), (ev_b, code_b)) if ev and ev[-1]["type"] == "end_of_stream"]
    assert len(cut) == 1 and len(whole) == 1, (code_a, code_b)
    assert cut[0][1] != 1000  # a clear abnormal close, not a normal end
    assert whole[0][1] == 1000
    # the other worker's stream never noticed: every event of the stream, no error
    assert not [e for e in whole[0][0] if e["type"] == "error"]
    # the cut client reconnects through the balancer and finishes on the surviving worker
    _wait(lambda: _status(f"http://127.0.0.1:{workers[0]}/readyz") == 0, 10, "worker 1 gone")
    events, code = asyncio.run(_stream(url, 1.0))
    assert code == 1000 and events[-1]["type"] == "end_of_stream"
