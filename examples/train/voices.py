"""Which synthetic voices train and which are held out, and how each TTS engine is called.

Held out for evaluation only (never in the training pack):
- espeak-ng variant ``+f4`` (as ``en-us+f4``): no training voice uses that variant;
- flite ``rms`` (a voice built from a real US male speaker).

Every call synthesises the already-normalised transcript (lower-cased), so the audio says
exactly the label. Outputs are float32 mono at 16 kHz.
"""

from __future__ import annotations

import io
import random
import subprocess
import wave

import numpy as np
import soxr

SAMPLE_RATE_HZ = 16000

ESPEAK_BASES = [
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
]
ESPEAK_VARIANTS = [
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "Andy",
    "Annie",
    "Alex",
    "Alicia",
    "aunty",
    "boris",
    "david",
    "ed",
    "edward",
    "Gene",
    "iven",
    "john",
    "linda",
    "max",
    "Mike",
    "norbert",
    "paul",
    "quincy",
    "rob",
    "robert",
    "steph",
    "travis",
    "victor",
    "zac",
    "belinda",
    "benjamin",
    "caleb",
    "grandpa",
]
FLITE_TRAIN = ["kal", "kal16", "awb", "slt"]
# Debian festival voices (festvox-kdlpc16k, festvox-kallpc16k, festvox-us-slt-hts): a second US male diphone
# speaker (ked), kal through festival's own diphone engine, and slt through an HTS vocoder (flite's slt is clustergen)
FESTIVAL_TRAIN = ["ked_diphone", "kal_diphone", "cmu_us_slt_arctic_hts"]

HELDOUT_ESPEAK = "en-us+f4"
HELDOUT_FLITE = "rms"
HELDOUT_VOICES = (f"espeak:{HELDOUT_ESPEAK}", f"flite:{HELDOUT_FLITE}")


def _wav_bytes_to_16k(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as w:
        rate, n = w.getframerate(), w.getnframes()
        pcm = np.frombuffer(w.readframes(n), dtype=np.int16).astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE_HZ:
        pcm = soxr.resample(pcm, rate, SAMPLE_RATE_HZ).astype(np.float32)
    return pcm


def _patch_wav_lengths(out: bytes) -> bytes:
    """A WAV written to a pipe (espeak-ng --stdout: 0xffffffff; text2wave: 0) has no real lengths in its
    44-byte header; set them from the bytes received."""
    data = bytearray(out)
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    data[40:44] = (len(data) - 44).to_bytes(4, "little")
    return bytes(data)


def espeak(text: str, voice: str, speed_wpm: int = 160, pitch: int = 50, gap_10ms: int = 0) -> np.ndarray:
    out = subprocess.run(
        [
            "espeak-ng",
            "-v",
            voice,
            "-s",
            str(speed_wpm),
            "-p",
            str(pitch),
            "-g",
            str(gap_10ms),
            "--stdout",
            text.lower(),
        ],
        check=True,
        capture_output=True,
    ).stdout
    return _wav_bytes_to_16k(_patch_wav_lengths(out))


def flite(text: str, voice: str, stretch: float = 1.0, f0_mean: float | None = None) -> np.ndarray:
    cmd = [
        "flite",
        "-voice",
        voice,
        "--setf",
        f"duration_stretch={stretch:.3f}",
        "-t",
        text.lower(),
        "-o",
        "/dev/stdout",
    ]
    if f0_mean is not None:
        cmd[5:5] = ["--setf", f"int_f0_target_mean={f0_mean:.0f}"]
    return _wav_bytes_to_16k(subprocess.run(cmd, check=True, capture_output=True).stdout)


def festival(text: str, voice: str, stretch: float = 1.0, f0_mean: float | None = None) -> np.ndarray:
    """festival's ``text2wave`` with ``voice``. Diphone voices take ``stretch`` as Duration_Stretch and ``f0_mean``
    (Hz) as their intonation target; the HTS voice takes ``1 / stretch`` as its speech rate and ignores ``f0_mean``
    (festival's hts_engine module does not apply a pitch shift)."""
    evals = [f"(voice_{voice})"]
    if voice.endswith("_hts"):
        evals.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {1 / stretch:.3f}))))')
    else:
        evals.append(f"(Parameter.set 'Duration_Stretch {stretch:.3f})")
        if f0_mean is not None:
            evals.append(
                f"(set! int_lr_params '((target_f0_mean {f0_mean:.0f}) (target_f0_std {0.14 * f0_mean:.0f}) "
                "(model_f0_mean 170) (model_f0_std 34)))"
            )
    cmd = ["text2wave", *[a for e in evals for a in ("-eval", e)], "-o", "/dev/stdout"]
    out = subprocess.run(cmd, input=text.lower().encode(), check=True, capture_output=True).stdout
    return _wav_bytes_to_16k(_patch_wav_lengths(out))


def random_espeak_voice(rng: random.Random) -> str:
    base = rng.choice(ESPEAK_BASES)
    var = rng.choice(ESPEAK_VARIANTS)
    return base + (f"+{var}" if var else "")


def synth_train(engine: str, text: str, rng: random.Random) -> tuple[np.ndarray, str]:
    """One training utterance from a random training voice of ``engine`` with random prosody."""
    if engine == "espeak":
        voice = random_espeak_voice(rng)
        audio = espeak(
            text,
            voice,
            speed_wpm=rng.randint(125, 210),
            pitch=rng.randint(20, 80),
            gap_10ms=rng.choice([0, 0, 0, 1, 2]),
        )
        return audio, f"espeak:{voice}"
    if engine == "flite":
        voice = rng.choice(FLITE_TRAIN)
        f0 = None if rng.random() < 0.5 else rng.uniform(85, 220)
        return flite(text, voice, stretch=rng.uniform(0.8, 1.25), f0_mean=f0), f"flite:{voice}"
    if engine == "festival":
        voice = rng.choice(FESTIVAL_TRAIN)
        f0 = None if rng.random() < 0.4 else rng.uniform(80, 200)
        return festival(text, voice, stretch=rng.uniform(0.8, 1.25), f0_mean=f0), f"festival:{voice}"
    raise ValueError(engine)


def trim_silence(audio: np.ndarray, keep_s: float = 0.15, threshold: float = 1e-3) -> np.ndarray:
    """Cut leading/trailing near-silence, keeping ``keep_s`` seconds of it on each side."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    keep = int(keep_s * SAMPLE_RATE_HZ)
    return audio[max(0, loud[0] - keep) : loud[-1] + keep]
