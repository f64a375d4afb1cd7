"""A pool of 3 real worker processes on one mosquitto: 12 streams, each claimed once, one worker killed mid-stream.

The test plays the pool-aware client of :mod:`speechstream.mqtt.source`: it watches each
stream's retained claim and the claiming worker's status; when the broker publishes a dead
worker's will (``offline``), it sends ``start`` again and re-sends the stream's audio from the
start with the offset header. Models are ``none`` (VAD only): the test is about the claims.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import numpy as np
import pytest

from speechstream.net.protocol import encode_audio, with_offset_header
from tests.integration.mqtt_broker import MOSQUITTO, Broker

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs Debian mosquitto"),
]

REPO = Path(__file__).resolve().parents[2]
RATE = 16000
FRAME = RATE // 50
PREFIX = "speechstream"


def spawn_worker(port: int, wid: str, model: str = "none") -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "speechstream.cli", "mqtt-worker", "--port", str(port), "--group", "g1"]
    cmd += ["--worker-id", wid, "--model", model, "--idle-timeout-s", "60"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_up(proc: subprocess.Popen[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "up (group" in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode}")
    raise AssertionError("worker did not come up")


async def run_pool(port: int, procs: dict[str, subprocess.Popen[str]], n_streams: int = 12) -> dict[str, object]:
    claims: dict[str, list[str]] = {}
    status: dict[str, str] = {}
    eos: dict[str, int] = {}
    finals: dict[str, list[dict[str, object]]] = {}
    t = np.arange(RATE * 2) / RATE
    pcm = encode_audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), "s16")
    sids = [f"s{i:02d}" for i in range(n_streams)]
    start = json.dumps({"type": "start", "sample_rate_hz": RATE, "format": "s16", "offset_header": True})
    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.subscribe(
            [(f"{PREFIX}/+/claim", 1), (f"{PREFIX}/_pool/g1/workers/+", 1), (f"{PREFIX}/+/transcript", 1)]
        )

        async def send_audio(sid: str, upto_s: float) -> None:
            for i in range(0, int(upto_s * RATE), FRAME):
                await c.publish(f"{PREFIX}/{sid}/audio", with_offset_header(i, pcm[2 * i : 2 * (i + FRAME)]), qos=1)

        async def listen() -> None:
            async for m in c.messages:
                tp, body = str(m.topic), bytes(m.payload) if isinstance(m.payload, (bytes, bytearray)) else b""
                parts = tp.split("/")
                if parts[-1] == "claim" and body:
                    claims.setdefault(parts[1], []).append(json.loads(body)["worker"])
                elif "_pool" in parts:
                    status[parts[-1]] = body.decode()
                elif parts[-1] == "transcript":
                    ev = json.loads(body)
                    if ev.get("type") == "end_of_stream":
                        eos[parts[1]] = eos.get(parts[1], 0) + 1
                    elif ev.get("type") == "final_transcript":
                        finals.setdefault(parts[1], []).append(ev)

        listener = asyncio.create_task(listen())
        for sid in sids:
            await c.publish(f"{PREFIX}/{sid}/control", start, qos=1)
        deadline = time.monotonic() + 20
        while len(claims) < n_streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sorted(claims) == sids, claims
        for sid in sids:
            await send_audio(sid, 1.0)
        # kill the worker with the most streams, for real, mid-stream
        owners = {sid: w[-1] for sid, w in claims.items()}
        victim = max(procs, key=lambda w: sum(o == w for o in owners.values()))
        orphans = [sid for sid, o in owners.items() if o == victim]
        t_kill = time.monotonic()
        procs[victim].send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while status.get(victim) != "offline" and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert status.get(victim) == "offline"
        t_will = time.monotonic()
        for sid in orphans:  # the client's side of the takeover: start again
            await c.publish(f"{PREFIX}/{sid}/control", start, qos=1)
        while time.monotonic() < deadline and any(len(claims[s]) < 2 for s in orphans):
            await asyncio.sleep(0.005)
        t_taken = time.monotonic()
        for sid in orphans:
            await send_audio(sid, 1.0)  # from offset 0 again: nothing said before the kill is lost
        for sid in sids:
            await send_audio(sid, 2.0)
            await c.publish(f"{PREFIX}/{sid}/control", json.dumps({"type": "end"}), qos=1)
        deadline = time.monotonic() + 30
        while len(eos) < n_streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a second end_of_stream would show here
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    return dict(
        claims=claims,
        eos=eos,
        finals=finals,
        orphans=orphans,
        victim=victim,
        will_s=t_will - t_kill,
        takeover_s=t_taken - t_kill,
    )


def run_once(workdir: Path, model: str = "none") -> dict[str, object]:
    broker = Broker(workdir)
    broker.start()
    procs = {f"w{i}": spawn_worker(broker.port, f"w{i}", model) for i in range(3)}
    try:
        for p in procs.values():
            wait_up(p)
        return asyncio.run(run_pool(broker.port, procs))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            if p.stdout is not None:
                p.stdout.close()
        broker.stop()


def test_pool_claims_each_stream_once_and_takes_over_a_killed_worker(tmp_path: Path) -> None:
    r = run_once(tmp_path)
    claims, eos, orphans, victim = r["claims"], r["eos"], r["orphans"], r["victim"]
    assert isinstance(claims, dict) and isinstance(eos, dict) and isinstance(orphans, list)
    assert orphans, "the killed worker held no stream"
    for sid, who in claims.items():
        if sid in orphans:
            assert len(who) == 2 and who[0] == victim and who[1] != victim, (sid, who)
        else:
            assert len(who) == 1, (sid, who)  # sticky: never claimed twice
    assert len(set(w for who in claims.values() for w in who)) == 3  # the load was shared
    assert eos == {sid: 1 for sid in claims}, eos  # every stream ended once, by one live worker
    print(f"takeover {r['takeover_s']:.3f} s (will after {r['will_s']:.3f} s)")


def test_pool_loses_no_final_when_a_worker_is_killed(tmp_path: Path) -> None:
    """With a real (tiny, random-init) recogniser: every stream carries the same audio, so a stream
    taken over after the kill must end with the same finals as a stream that was never interrupted."""
    from tests.hf_tiny import build_tiny

    model = build_tiny("wav2vec2", "ctc", tmp_path / "model")
    r = run_once(tmp_path / "broker", str(model))
    finals, eos, orphans = r["finals"], r["eos"], r["orphans"]
    assert isinstance(finals, dict) and isinstance(eos, dict) and isinstance(orphans, list) and orphans
    assert eos == {sid: 1 for sid in finals}, eos

    def key(events: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [(e["sample"], e["end_sample"], e["text"]) for e in events]

    assert sorted(finals) == sorted(eos), "a stream without a final"
    kept = [sid for sid in finals if sid not in orphans]
    reference = key(finals[kept[0]])
    assert reference and reference[0][2], "the recogniser gave no text: nothing to compare"
    for sid in finals:
        assert key(finals[sid]) == reference, (sid, sid in orphans)
