"""examples/train/whisper_common.py, what the two Whisper workers share: the command line and the audio read (the
model load needs the teacher's virtualenv, which bench_vad_labels and the recipe's teacher run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from examples.train import whisper_common as wc


def test_worker_args():
    a = wc.worker_args(["m", "jobs.tsv", "out.tsv"])
    assert (a.model_dir, a.jobs, a.out, a.threads) == (Path("m"), Path("jobs.tsv"), Path("out.tsv"), 1)
    assert wc.worker_args(["m", "j", "o", "--threads", "3"]).threads == 3
    with pytest.raises(SystemExit):
        wc.worker_args(["m", "j"])


def test_read_audio_mono_float32(tmp_path):
    left, right = np.full(1600, 0.5, np.float32), np.linspace(-1, 1, 1600, dtype=np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    got = wc.read_audio(str(tmp_path / "s.wav"))
    assert got.dtype == np.float32 and got.ndim == 1 and got.flags.c_contiguous
    np.testing.assert_allclose(got, (left + right) / 2, atol=1e-7)


def test_read_audio_refuses_another_rate(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(800, np.float32), 8000)
    with pytest.raises(SystemExit, match=r"a\.wav: 8000 Hz, the teacher takes 16 kHz"):
        wc.read_audio(str(tmp_path / "a.wav"))
