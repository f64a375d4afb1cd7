"""What the Whisper workers share (``teacher_worker.py`` here, ``bench/whisper_words_worker.py``): their command
line, the model load and the audio read. They run under the teacher's Python (``examples.train.teacher``), which
has faster-whisper, soundfile and numpy but not the project's other dependencies: this module imports only the
standard library at import time, and those three where they are used.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from faster_whisper import WhisperModel

RATE = 16000  # the teacher takes 16 kHz


def worker_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``MODEL_DIR JOBS OUT [--threads 1]``, the command line of both workers."""
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("jobs", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    return ap.parse_args(argv)


def load_model(model_dir: Path, threads: int) -> WhisperModel:
    """The faster-whisper model in ``model_dir`` on the CPU, int8, ``threads`` threads, one worker."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1)


def read_audio(path: str) -> np.ndarray:
    """The file at ``path`` as 16 kHz mono float32 (channels averaged), C-contiguous; exits on another rate."""
    import numpy as np
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != RATE:
        raise SystemExit(f"{path}: {rate} Hz, the teacher takes 16 kHz")
    return np.ascontiguousarray(audio)
