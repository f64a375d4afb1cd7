"""Speaker enrollment: reference clips -> named speaker embeddings.

    voices = enroll(embedder, {"alice": "alice.wav", "bob": "bob.flac"})   # {name: (D,) unit vector}
    parse_speaker_arg("alice=clips/alice.wav")                              # ("alice", Path(...))

A clip is read with soundfile (any rate and channel count; downmixed and resampled to 16 kHz),
its silent stretches are dropped (10 ms frames more than 40 dB below its loudest frame, or
below -60 dBFS), and what is left must hold at least ``min_speech_s`` of sound.  A clip that is
missing, unreadable, silent or too short raises ``EnrollmentError`` naming the clip and the
speaker.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engines.errors import ConfigError
from engines.speakers.embedding import SAMPLE_RATE_HZ, SpeakerEmbedder

__all__ = ["EnrollmentError", "enroll", "load_clip", "speech_only", "parse_speaker_arg", "MIN_SPEECH_S"]

MIN_SPEECH_S = 1.0  # below this the voice encoder's embedding is not a reliable voice print
_FRAME = 160  # 10 ms
_SILENT_DBFS = -60.0
_REL_DB = -40.0


class EnrollmentError(ConfigError):
    """An enrollment clip that cannot serve as a voice print; the message names it."""


def parse_speaker_arg(text: str) -> tuple[str, Path]:
    """``NAME=path`` (as given to ``--speaker``) -> (name, path)."""
    name, sep, path = text.partition("=")
    name = name.strip()
    if not sep or not name or not path.strip():
        raise EnrollmentError(f"--speaker expects NAME=clip.wav, got {text!r}")
    return name, Path(path.strip())


def load_clip(path: str | Path, name: str = "") -> npt.NDArray[np.float32]:
    """Read a clip as float32 mono at 16 kHz."""
    import soundfile as sf
    import soxr

    who = f" for speaker {name!r}" if name else ""
    p = Path(path)
    if not p.is_file():
        raise EnrollmentError(f"enrollment clip {str(p)!r}{who} does not exist")
    try:
        audio, rate = sf.read(p, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise EnrollmentError(f"enrollment clip {str(p)!r}{who} cannot be read as audio: {exc}") from exc
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE_HZ and len(audio):
        audio = soxr.resample(audio, rate, SAMPLE_RATE_HZ).astype(np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32)


def speech_only(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Drop 10 ms frames that are silent (absolute floor) or far below the clip's loudest frame."""
    n = len(audio) // _FRAME
    if n == 0:
        return audio[:0]
    frames = audio[: n * _FRAME].reshape(n, _FRAME)
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-20)
    keep = (db > _SILENT_DBFS) & (db > db.max() + _REL_DB)
    voiced: npt.NDArray[np.float32] = frames[keep].reshape(-1)
    return voiced


def enroll(
    embedder: SpeakerEmbedder,
    clips: Mapping[str, str | Path],
    *,
    min_speech_s: float = MIN_SPEECH_S,
) -> dict[str, npt.NDArray[np.float32]]:
    """Embed every ``{name: clip}``; errors name the clip.  Returns ``{name: (D,) unit vector}``."""
    out: dict[str, npt.NDArray[np.float32]] = {}
    for name, path in clips.items():
        if not name:
            raise EnrollmentError(f"enrollment clip {str(path)!r} needs a speaker name (NAME=clip.wav)")
        if name in out:
            raise EnrollmentError(f"speaker {name!r} is enrolled twice")
        audio = load_clip(path, name)
        voiced = speech_only(audio)
        if len(voiced) == 0:
            raise EnrollmentError(f"enrollment clip {str(path)!r} for speaker {name!r} is silent")
        secs = len(voiced) / SAMPLE_RATE_HZ
        if secs < min_speech_s:
            raise EnrollmentError(
                f"enrollment clip {str(path)!r} for speaker {name!r} holds {secs:.2f} s of speech; "
                f"at least {min_speech_s:.1f} s is needed"
            )
        out[name] = embedder.embed(voiced)
    return out
