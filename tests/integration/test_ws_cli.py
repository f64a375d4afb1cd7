"""``speechstream serve`` as a real process: it serves, streams VAD events, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import websockets
from websockets.asyncio.client import connect

from tests.integration.netkit import stream_audio

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(90)


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "serve", *args], cwd=REPO, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def test_serve_process_streams_vad_events_and_stops_on_sigterm():
    proc = _spawn("--port", "0", "--model", "none", "--token", "t0k", "--allow-origin", "https://app.example",
                  "--idle-timeout", "5")
    try:
        url = None
        lines = []
        while url is None:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 60)
            assert line, f"serve exited: {lines}"
            lines.append(line)
            m = re.search(r"WebSocket (ws://\S+)", line)
            url = m.group(1) if m else None
        assert url.startswith("ws://127.0.0.1:")
        assert "t0k" not in "".join(lines)  # the token is never printed in clear
        x, rate = sf.read(REPO / "examples" / "hello.wav", dtype="float32", frames=16000 * 4)
        s = await stream_audio(url + "?token=t0k", x, rate, chunk_ms=100, origin="https://app.example")
        assert s.close_code == 1000
        kinds = [e["type"] for e in s.events]
        assert "speech_started" in kinds and "speech_ended" in kinds and kinds[-1] == "end_of_stream"
        with pytest.raises(websockets.InvalidStatus) as err:  # --allow-origin adds to same-origin, no more
            async with connect(url + "?token=t0k", origin="https://evil.example"):
                pass
        assert err.value.response.status_code == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 30)
        rest = proc.stderr.read()
        proc.stderr.close()
    assert rc == 0, rest


def test_serve_bad_model_is_one_line_and_exit_2(tmp_path):
    proc = _spawn("--port", "0", "--model", str(tmp_path / "missing-model"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("speechstream: error:"), err


def test_serve_bad_allow_origin_is_one_line_and_exit_2():
    proc = _spawn("--port", "0", "--model", "none", "--allow-origin", "evil.example")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("speechstream: error:") and "evil.example" in lines[0], err
