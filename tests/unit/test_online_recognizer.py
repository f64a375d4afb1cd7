"""speechstream.Recognizer (engines.online.OnlineRecognizer): audio to transcripts without asyncio.

Its finals equal the CLI's on the bundled model; batched streams equal unbatched ones; bad input fails clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import speechstream as ss
from engines.errors import StreamUsageError

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello.wav"


@pytest.fixture(scope="module")
def rec():
    return ss.Recognizer.from_pretrained(ss.default_model_dir(), mode="cached", chunk_ms=640)


@pytest.fixture(scope="module")
def audio():
    x, rate = sf.read(HELLO, dtype="float32")
    assert rate == 16_000
    return x


def _run(rec, x, block):
    s = rec.create_stream()
    partials = []
    for i in range(0, len(x), block):
        s.accept_waveform(16_000, x[i : i + block])
        partials.append(s.partial)
    s.close()
    return [f.text for f in s.finals()], partials


def test_facade_finals_equal_the_cli_finals(rec, audio):
    out = subprocess.run(
        [sys.executable, "-m", "speechstream.cli", "transcribe", str(HELLO), "--vad", "none", "--jsonl", "-"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    cli = [e["text"] for e in map(json.loads, out.stdout.splitlines()) if e.get("type") == "final_transcript"]
    finals, partials = _run(rec, audio, 320)
    assert cli and finals == cli
    assert any(partials)  # partials appeared while the audio went in


def test_block_size_does_not_change_finals(rec, audio):
    assert _run(rec, audio, 320)[0] == _run(rec, audio, 7_777)[0]


def test_batched_streams_equal_unbatched(rec, audio):
    xs = [audio, audio[8_000:], audio[: len(audio) // 2]]
    alone = [_run(rec, x, 1_600) for x in xs]
    streams = [rec.create_stream() for _ in xs]
    before = rec.stats.batches
    partials: list[list[str]] = [[] for _ in xs]
    for i in range(0, max(map(len, xs)), 1_600):
        items = [(s, 16_000, x[i : i + 1_600]) for s, x in zip(streams, xs) if i < len(x)]
        rec.accept_waveforms(items)
        for k, (s, x) in enumerate(zip(streams, xs)):
            if i < len(x):
                partials[k].append(s.partial)
    for s in streams:
        s.close()
    assert rec.stats.batches > before  # really batched
    assert [[f.text for f in s.finals()] for s in streams] == [a[0] for a in alone]
    assert partials == [a[1] for a in alone]


def test_other_rates_and_int16_are_converted(rec, audio):
    import soxr

    x44 = soxr.resample(audio, 16_000, 44_100)
    finals, _ = _run(rec, audio, 1_600)
    s = rec.create_stream()
    s.accept_waveform(44_100, (np.clip(x44, -1, 1) * 32767).astype(np.int16))
    s.close()
    got = [f.text for f in s.finals()]
    assert got and len(" ".join(got)) == pytest.approx(len(" ".join(finals)), rel=0.3)


def test_bad_input_is_a_clear_error(rec):
    s = rec.create_stream()
    x = np.zeros(1_600, np.float32)
    x[5] = np.nan
    with pytest.raises(StreamUsageError, match="non-finite"):
        s.accept_waveform(16_000, x)
    s.accept_waveform(16_000, np.zeros(1_600, np.float32))
    with pytest.raises(StreamUsageError, match="sample rate changed"):
        s.accept_waveform(8_000, np.zeros(800, np.float32))
    s.close()
    with pytest.raises(StreamUsageError, match="closed"):
        s.accept_waveform(16_000, np.zeros(10, np.float32))
    with pytest.raises(ss.ConfigError):
        ss.Recognizer.from_pretrained(ROOT / "no-such-model")
