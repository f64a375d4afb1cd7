"""The installed ``speechstream`` console script, run as a subprocess (as a user would)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import srt
import webvtt

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hello.wav"


def entry_point() -> str:
    exe = Path(sys.executable).parent / "speechstream"
    found = str(exe) if exe.exists() else shutil.which("speechstream")
    if found is None:
        pytest.fail("the speechstream console script is not installed (pip install -e .)")
    return found


def test_help_of_the_installed_script():
    proc = subprocess.run([entry_point(), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "transcribe" in proc.stdout and proc.stderr == ""


def test_transcribe_example_to_files(tmp_path):
    proc = subprocess.run(
        [
            entry_point(),
            "transcribe",
            str(EXAMPLE),
            "--model",
            "none",
            "--no-progress",
            "--jsonl",
            str(tmp_path / "e.jsonl"),
            "--srt",
            str(tmp_path / "c.srt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(speech)") == 4
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events].count("speech_started") == 4
    assert list(srt.parse((tmp_path / "c.srt").read_text())) == []


def test_nan_samples_warn_on_stderr_and_the_stream_goes_on(tmp_path):
    """10 NaN samples: replaced by silence, one warning on stderr, stdout keeps only captions (issues 20, 21)."""
    import soundfile as sf

    x, rate = sf.read(str(EXAMPLE), dtype="float32")
    x[np.linspace(1000, len(x) - 1000, 10).astype(int)] = np.nan
    sf.write(str(tmp_path / "nan.wav"), x, rate, subtype="FLOAT")
    mostly = np.full(rate, np.nan, np.float32)
    sf.write(str(tmp_path / "mostly.wav"), mostly, rate, subtype="FLOAT")
    clean = subprocess.run(
        [entry_point(), "transcribe", str(EXAMPLE), "--model", "none", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    proc = subprocess.run(
        [entry_point(), "transcribe", str(tmp_path / "nan.wav"), "--model", "none", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stdout and proc.stdout.count("(speech)") == clean.stdout.count("(speech)") > 0
    assert proc.stderr.count("non_finite_samples") == 1 and "10 NaN/inf" in proc.stderr
    proc = subprocess.run(
        [entry_point(), "transcribe", str(tmp_path / "mostly.wav"), "--model", "none", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert "mostly NaN/inf" in proc.stderr and "Traceback" not in proc.stderr


def test_fatal_stream_error_is_printed_once(tmp_path):
    """A stream that stops on bad audio: exit 1, its message once on stderr, console on or off."""
    import soundfile as sf

    sf.write(str(tmp_path / "mostly.wav"), np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    for extra in ([], ["--jsonl", str(tmp_path / "e.jsonl")], ["--jsonl", "-"]):
        proc = subprocess.run(
            [entry_point(), "transcribe", str(tmp_path / "mostly.wav"), "--model", "none", "--no-progress", *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, (extra, proc.stderr)
        said = [line for line in proc.stderr.splitlines() if "mostly NaN/inf" in line]
        assert len(said) == 1, (extra, proc.stderr)
        assert said[0].startswith("speechstream: error: stream mostly: ") and "Traceback" not in proc.stderr
        assert proc.stdout == "" or extra[-1:] == ["-"], proc.stdout  # '--jsonl -': the error event, as JSON


def test_user_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [entry_point(), "transcribe", str(tmp_path / "missing.flac")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"speechstream: error: input file not found: {tmp_path / 'missing.flac'}"
    ]


def test_sigint_mid_stream_stops_gracefully(tmp_path):
    """Ctrl-C while a real-time run is going: the stream ends, files are closed and valid."""
    proc = subprocess.Popen(
        [
            entry_point(),
            "transcribe",
            str(EXAMPLE),
            "--model",
            "none",
            "--realtime",
            "--jsonl",
            str(tmp_path / "e.jsonl"),
            "--vtt",
            str(tmp_path / "c.vtt"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        jsonl = tmp_path / "e.jsonl"
        while time.monotonic() < deadline:  # wait until the first speech segment was written
            if jsonl.exists() and '"speech_ended"' in jsonl.read_text():
                break
            time.sleep(0.1)
        else:
            pytest.fail("no speech segment within 60 s")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert events[-1]["type"] == "end_of_stream"
    assert events[-1]["time_s"] < 16.0  # stopped early, not at the end of the 17 s file
    assert webvtt.read(str(tmp_path / "c.vtt")).captions == []


def test_devices_on_a_real_alsa_device(tmp_path):
    raw = tmp_path / "in.raw"
    raw.write_bytes(b"\0\0" * 16000)
    conf = tmp_path / "asound.conf"
    conf.write_text(
        f'pcm.filemic {{ type file; slave.pcm "null"; file "/dev/null"; infile "{raw}"; format "raw" }}\n'
        'pcm.!default { type asym; playback.pcm "null"; capture.pcm "filemic" }\n'
    )
    env = dict(os.environ, ALSA_CONFIG_PATH=f"/usr/share/alsa/alsa.conf:{conf}")
    proc = subprocess.run([entry_point(), "devices"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "filemic" in proc.stdout
