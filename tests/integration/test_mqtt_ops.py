"""The MQTT worker's ops listener, with a real mosquitto and a real worker process.

``speechstream mqtt-worker --ops-port``: /metrics scraped and parsed with prometheus_client's parser
after one stream went through the broker; /readyz 200 while connected, 503 while the broker is down
(200 again once it is back), 503 as soon as a SIGTERM drain begins while a stream is still open,
whose finals still go out before the worker exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from speechstream.net.protocol import encode_audio
from tests.integration.mqtt_broker import MOSQUITTO, Broker, free_port
from tests.integration.test_mqtt_pool import wait_up

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs Debian mosquitto"),
]

REPO = Path(__file__).resolve().parents[2]
RATE = 16000
FRAME = RATE // 50
PREFIX = "speechstream"
START = json.dumps({"type": "start", "sample_rate_hz": RATE, "format": "s16"})


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.hf_tiny import build_tiny

    return build_tiny("wav2vec2", "ctc", tmp_path_factory.mktemp("model") / "m")


def spawn(broker_port: int, ops_port: int, model: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "speechstream.cli", "mqtt-worker", "--port", str(broker_port), "--group", "g1"]
    cmd += ["--worker-id", "w1", "--model", str(model), "--ops-port", str(ops_port), "--drain-timeout", "60"]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_status(port: int, path: str, want: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status, body = get(port, path)
    while status != want and time.monotonic() < deadline:
        time.sleep(0.05)
        status, body = get(port, path)
    assert status == want, (path, status, body)
    return body


def scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics, by name and labels (``name{k=v}``)."""
    status, text = get(port, "/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def speech_pcm(seconds: float) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return encode_audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), "s16")


async def stream(broker_port: int, sid: str, seconds: float, *, before_end: object = None) -> list[dict[str, object]]:
    """One stream through the broker: start, audio, (``before_end()``,) end; its events up to end_of_stream."""
    events: list[dict[str, object]] = []
    pcm = speech_pcm(seconds)
    async with aiomqtt.Client("127.0.0.1", broker_port) as c:
        await c.subscribe([(f"{PREFIX}/{sid}/transcript", 1), (f"{PREFIX}/{sid}/claim", 1)])
        claimed = asyncio.Event()
        done = asyncio.Event()

        async def listen() -> None:
            async for m in c.messages:
                body = bytes(m.payload) if isinstance(m.payload, (bytes, bytearray)) else b""
                if str(m.topic).endswith("/claim"):
                    if body:
                        claimed.set()
                    continue
                ev = json.loads(body)
                events.append(ev)
                if ev.get("type") == "end_of_stream":
                    done.set()

        listener = asyncio.create_task(listen())
        try:
            await c.publish(f"{PREFIX}/{sid}/control", START, qos=1)
            await asyncio.wait_for(claimed.wait(), 20)
            for i in range(0, len(pcm) // 2, FRAME):
                await c.publish(f"{PREFIX}/{sid}/audio", pcm[2 * i : 2 * (i + FRAME)], qos=1)
            if callable(before_end):
                await before_end()
            await c.publish(f"{PREFIX}/{sid}/control", json.dumps({"type": "end"}), qos=1)
            await asyncio.wait_for(done.wait(), 60)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    return events


def test_worker_metrics_and_readiness_follow_the_broker(tmp_path: Path, model: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    ops = free_port()
    proc = spawn(broker.port, ops, model)
    try:
        wait_up(proc, timeout_s=90)
        assert get(ops, "/healthz")[0] == 200
        wait_status(ops, "/readyz", 200, 10)  # the publisher's connection may come up just after the ingest's
        events = asyncio.run(stream(broker.port, "s1", 2.0))
        finals = [e for e in events if e["type"] == "final_transcript"]
        assert finals, events

        m = scrape(ops)
        assert m["speechstream_streams_total"] >= 1
        assert m["speechstream_audio_seconds_total"] == pytest.approx(2.0, abs=FRAME / RATE)
        assert m["speechstream_finals_total"] == len(finals)
        assert m["speechstream_mqtt_claims_total"] == 1
        assert m["speechstream_mqtt_frames_total"] == 100
        assert m["speechstream_finalization_latency_seconds_count"] >= 1
        assert m["speechstream_model_steps_total"] > 0 and m["speechstream_model_forward_seconds_total"] > 0
        assert 0 <= m["speechstream_decode_ahead_used_total"] <= m["speechstream_decode_ahead_total"]
        assert m["speechstream_active_streams"] == 0
        assert m["speechstream_mqtt_connected"] == 1 and m["speechstream_draining"] == 0
        assert any(k.startswith("speechstream_queue_depth{edge=") for k in m), sorted(m)
        assert get(ops, "/nope")[0] == 404

        broker.kill()  # both broker connections die: not ready, still alive
        body = wait_status(ops, "/readyz", 503, 15)
        assert "broker" in body
        assert get(ops, "/healthz")[0] == 200
        assert scrape(ops)["speechstream_mqtt_connected"] == 0
        broker.start()  # same port: the worker reconnects (backoff at most 5 s)
        wait_status(ops, "/readyz", 200, 30)
    finally:
        kill_group(proc)
        broker.stop()


def test_sigterm_drain_fails_readyz_first_and_open_stream_finishes(tmp_path: Path, model: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    ops = free_port()
    proc = spawn(broker.port, ops, model)
    seen: dict[str, object] = {}
    try:
        wait_up(proc, timeout_s=90)
        wait_status(ops, "/readyz", 200, 10)

        async def sigterm_mid_stream() -> None:
            deadline = time.monotonic() + 20  # every frame fed: the stream is live on the worker
            while time.monotonic() < deadline:
                m = await asyncio.to_thread(scrape, ops)
                if m["speechstream_mqtt_frames_total"] >= 100:
                    break
                await asyncio.sleep(0.05)
            assert m["speechstream_active_streams"] == 1
            proc.send_signal(signal.SIGTERM)
            seen["readyz"] = await asyncio.to_thread(wait_status, ops, "/readyz", 503, 10)
            seen["healthz"] = (await asyncio.to_thread(get, ops, "/healthz"))[0]
            seen["draining"] = (await asyncio.to_thread(scrape, ops))["speechstream_draining"]
            await asyncio.sleep(0.5)
            assert proc.poll() is None, "the worker did not wait for its open stream"

        events = asyncio.run(stream(broker.port, "s1", 2.0, before_end=sigterm_mid_stream))
        assert seen == {"readyz": "draining\n", "healthz": 200, "draining": 1}
        assert any(e["type"] == "final_transcript" for e in events), events  # the finals went out
        assert proc.wait(30) == 0
    finally:
        kill_group(proc)
        broker.stop()


def test_a_lone_worker_that_drains_refuses_new_streams(tmp_path: Path) -> None:
    """In process, without a group: a start during the drain is refused (``unavailable``), the open stream ends."""
    from speechstream.mqtt import MqttSettings, MqttWorker
    from speechstream.net.serve import ServeOptions, build_nodes
    from stream.config import VadSettings

    broker = Broker(tmp_path / "broker")
    broker.start()

    async def main() -> tuple[int, list[dict[str, object]], bool]:
        nodes, _ = build_nodes(ServeOptions(model="none", vad=VadSettings(name="webrtc")))
        w = MqttWorker(nodes, MqttSettings(host="127.0.0.1", port=broker.port))
        errors: list[dict[str, object]] = []
        async with w, aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.subscribe(f"{PREFIX}/s2/error", 1)
            await c.publish(f"{PREFIX}/s1/control", START, qos=1)
            await c.publish(f"{PREFIX}/s1/audio", speech_pcm(0.2), qos=1)
            deadline = time.monotonic() + 10
            while not w.ingest.streams and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            drain = asyncio.create_task(w.drain(30))
            await asyncio.sleep(0.1)
            ready = w.ready
            await c.publish(f"{PREFIX}/s2/control", START, qos=1)

            async def first_error() -> None:
                async for m in c.messages:
                    errors.append(json.loads(bytes(m.payload) if isinstance(m.payload, bytes) else b"{}"))
                    return

            await asyncio.wait_for(first_error(), 10)
            assert not drain.done()
            await c.publish(f"{PREFIX}/s1/control", json.dumps({"type": "end"}), qos=1)
            left = await asyncio.wait_for(drain, 20)
        return left, errors, ready

    try:
        left, errors, ready = asyncio.run(main())
    finally:
        broker.stop()
    assert not ready and left == 0
    assert [(e["code"], e["fatal"]) for e in errors] == [("unavailable", True)], errors
