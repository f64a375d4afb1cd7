"""The MQTT example trio as real processes against a real mosquitto: mic (a WAV) -> worker -> consumer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from tests.integration.mqtt_broker import MOSQUITTO, Broker

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs mosquitto")]


def _spawn(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(REPO / "examples" / script), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_line(proc: subprocess.Popen, needle: str, timeout_s: float = 60) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"{proc.args[1]} exited: {lines}")
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} from {proc.args[1]}: {lines}")


def test_mic_worker_consumer(tmp_path):
    broker = Broker(tmp_path / "broker")
    broker.start()
    wav = tmp_path / "speech.wav"
    x, rate = sf.read(REPO / "examples" / "hello.wav", dtype="float32", frames=16000 * 4)
    sf.write(wav, x, rate, subtype="PCM_16")
    port = str(broker.port)
    procs = []
    try:
        consumer = _spawn("mqtt_consumer.py", "--port", port, "--exit-after-eos", "1", "--client-id", "ex-consumer")
        procs.append(consumer)
        _wait_line(consumer, "consumer subscribed")
        worker = _spawn("mqtt_worker.py", "--port", port, "--model", "none")
        procs.append(worker)
        _wait_line(worker, "worker up")
        mic = _spawn("mqtt_mic.py", "--port", port, "--stream", "desk", "--file", str(wav))
        procs.append(mic)
        out, _ = mic.communicate(timeout=60)
        assert mic.returncode == 0 and "published 4.0 s" in out, out
        lines = _wait_line(consumer, "[desk] end of stream")
        assert consumer.wait(30) == 0, lines
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
            p.stdout.close()
        broker.stop()
