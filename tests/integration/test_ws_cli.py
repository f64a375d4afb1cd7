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


async def _url(proc: subprocess.Popen) -> tuple[str, list[str]]:
    """The WebSocket URL that ``serve`` prints once it listens, and its stderr lines so far."""
    lines: list[str] = []
    while True:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 60)
        assert line, f"serve exited: {lines}"
        lines.append(line)
        m = re.search(r"WebSocket (ws://\S+)", line)
        if m:
            return m.group(1), lines


async def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    rc = await asyncio.to_thread(proc.wait, 30)
    rest = proc.stderr.read()
    proc.stderr.close()
    return rc, rest


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "speechstream.cli", "serve", *args],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_serve_process_streams_vad_events_and_stops_on_sigterm():
    proc = _spawn(
        "--port",
        "0",
        "--model",
        "none",
        "--token",
        "t0k",
        "--allow-origin",
        "https://app.example",
        "--idle-timeout",
        "5",
    )
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
        s = await stream_audio(
            url + "?token=t0k",
            x,
            rate,
            chunk_ms=100,
            origin="https://app.example",
            controls={1: {"type": "set_speakers", "names": ["Ann"]}},
        )
        assert s.close_code == 1000
        kinds = [e["type"] for e in s.events]
        assert "speech_started" in kinds and "speech_ended" in kinds and kinds[-1] == "end_of_stream"
        # no --diarize: speaker settings are refused with a clear, non-fatal error; the stream ran on
        assert [(e["code"], e["fatal"]) for e in s.of("error")] == [("speakers_unsupported", False)]
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


@pytest.mark.slow  # the online diarizer: about 1 s of CPU per second of audio
async def test_serve_diarize_honours_each_streams_speaker_settings():
    """``serve --diarize`` (no model): examples/hello.wav has two voices (en-us, then en-us+f3 from
    4.8 s). Two streams of it at once: one capped at one speaker by its ``start``, one named by a
    ``set_speakers`` message. Each gets its own setting; neither leaks into the other."""
    proc = _spawn("--port", "0", "--model", "none", "--diarize")
    try:
        url, _ = await _url(proc)
        x, rate = sf.read(REPO / "examples" / "hello.wav", dtype="float32", frames=16000 * 9)
        capped, named = await asyncio.gather(
            stream_audio(url, x, rate, chunk_ms=100, timeout_s=60, start_extra={"num_speakers": 1, "names": ["Solo"]}),
            stream_audio(
                url,
                x,
                rate,
                chunk_ms=100,
                timeout_s=60,
                controls={2: {"type": "set_speakers", "names": ["Ann", "Bob"]}},
            ),
        )
    finally:
        rc, rest = await _stop(proc)
    assert rc == 0, rest
    for s in (capped, named):
        assert s.close_code == 1000 and not s.of("error"), s.of("error")
    assert {t["speaker"] for t in capped.of("speaker_turn")} == {"Solo"}  # two voices, capped at one
    turns = named.of("speaker_turn")
    first = {t["speaker"]: t["sample"] for t in reversed(turns)}  # each label's first turn
    assert set(first) == {"Ann", "Bob"}, first  # names in order of first appearance, no S1/S2 left
    assert first["Ann"] < 16000 < 4 * 16000 < first["Bob"]


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
