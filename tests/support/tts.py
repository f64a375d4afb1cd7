"""Helpers for tests, examples and benches: synthetic speech with known pauses.

``espeak_ng(text)`` synthesises one sentence with the Debian ``espeak-ng`` binary
(16 kHz mono float32). ``speech_with_pauses`` joins sentences with silences (or
any filler signal) and returns the audio with the reference speech regions.

Reference labels: each sentence's region is its energy-trimmed extent in the
clean TTS output: 10 ms frames whose RMS is within ``trim_db`` (35 dB) of that
sentence's loudest frame; the region runs from the first such frame to the end
of the last one. Pauses inside a sentence (between words) count as speech, as a
human labeller of utterances would mark them.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable, Sequence

import numpy as np
import soundfile as sf
import soxr

__all__ = ["have_espeak", "espeak_ng", "trim_extent", "speech_with_pauses", "write_raw_s16"]

RATE = 16_000


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_ng(text: str, *, voice: str = "en-us", speed_wpm: int = 160, pitch: int = 50) -> np.ndarray:
    """One utterance as 16 kHz mono float32 (espeak-ng writes 22050 Hz; resampled with soxr)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if x.ndim == 2:
        x = x.mean(axis=1)
    return soxr.resample(x, rate, RATE, "HQ").astype(np.float32)


def trim_extent(x: np.ndarray, *, frame: int = 160, trim_db: float = 35.0) -> tuple[int, int]:
    """(start, end) sample extent of the frames within ``trim_db`` of the loudest frame."""
    n = x.shape[0] // frame
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -trim_db)
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def speech_with_pauses(
    sentences: Sequence[np.ndarray],
    pauses_s: Sequence[float] | float,
    *,
    lead_s: float = 0.5,
    tail_s: float = 0.5,
    filler: Callable[[int, int], np.ndarray] | None = None,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Join sentences with pauses; returns (audio, reference speech regions in samples).

    ``filler(n, index)`` makes the signal of the ``index``-th gap (default: zeros).
    """
    gaps = (
        [lead_s]
        + ([pauses_s] * (len(sentences) - 1) if isinstance(pauses_s, (int, float)) else list(pauses_s))
        + [tail_s]
    )
    parts: list[np.ndarray] = []
    regions: list[tuple[int, int]] = []
    pos = 0
    for i, gap_s in enumerate(gaps):
        n = int(round(gap_s * RATE))
        gap = filler(n, i) if filler else np.zeros(n, np.float32)
        parts.append(gap.astype(np.float32))
        pos += n
        if i < len(sentences):
            s = sentences[i]
            a, b = trim_extent(s)
            regions.append((pos + a, pos + b))
            parts.append(s)
            pos += s.shape[0]
    return np.concatenate(parts), regions


def write_raw_s16(path: str, x: np.ndarray) -> None:
    """Raw little-endian PCM16 (what ALSA's ``file`` plugin plays as ``infile``)."""
    (np.clip(x, -1, 1) * 32767).astype("<i2").tofile(path)
