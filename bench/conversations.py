"""Synthetic conversations with a reference RTTM, for the diarization benchmark and tests.

Two to four distinct voices take turns, with short gaps, some overlap and different loudness.
Voices come from real recordings in ``../shared/corpora`` (kathleen, LJ, philipp, the fsdd
digit speakers) and from TTS (flite's recorded-speaker voices rms/awb/slt and the diphone kal,
espeak-ng variants).  The reference turn of each utterance is the span of the utterance after
trimming its leading and trailing silence (pauses inside an utterance count as speech, as in
usual RTTM references).

    python -m bench.conversations OUT_DIR            # writes <name>.wav + <name>.rttm per scenario

Everything is deterministic for a given scenario seed.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 16_000
CORPORA = Path(os.environ.get("SPEECHSTREAM_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora"))
if not CORPORA.is_dir():
    CORPORA = Path("/work/shared/corpora")

__all__ = [
    "SR",
    "Voice",
    "VOICES",
    "Turn",
    "Conversation",
    "build",
    "SCENARIOS",
    "scenario",
    "rttm_lines",
    "write_rttm",
    "tts",
]


# ------------------------------------------------------------------------------------- voices


@dataclass(frozen=True)
class Voice:
    name: str
    kind: str  # "corpus" | "flite" | "espeak"
    ref: str  # corpus folder/speaker, flite voice, or espeak voice name


VOICES: dict[str, Voice] = {
    v.name: v
    for v in [
        Voice("kathleen", "corpus", "rhasspy_kathleen/kathleen"),
        Voice("lj", "corpus", "ljspeech_subset/LJ"),
        Voice("philipp", "corpus", "dctts_philipp_ljprompts/philipp"),
        Voice("george", "corpus", "fsdd/george"),
        Voice("jackson", "corpus", "fsdd/jackson"),
        Voice("theo", "corpus", "fsdd/theo"),
        Voice("rms", "flite", "rms"),
        Voice("awb", "flite", "awb"),
        Voice("slt", "flite", "slt"),
        Voice("kal", "flite", "kal16"),
        Voice("espeak_f3", "espeak", "en-us+f3"),
        Voice("espeak_m3", "espeak", "en-gb+m3"),
        Voice("espeak_us", "espeak", "en-us"),
    ]
}

# Sentences for the TTS voices (public-domain LJ prompts, spoken by no TTS voice in the corpora).
_TTS_TEXTS = [
    "The chronicles of the old prison were written down by a careful hand.",
    "She said the weather would turn before the evening train arrived.",
    "Nobody expected the meeting to last for more than an hour.",
    "We walked along the river until the lights of the town appeared.",
    "Please send the report to the office before the end of the week.",
    "The committee agreed that the plan needed another careful look.",
    "A small boat drifted slowly past the harbour wall.",
    "He opened the letter and read it twice without a word.",
    "The children were playing in the garden behind the house.",
    "It is important to check every number before we publish it.",
    "The museum will be closed on Monday for repairs.",
    "They decided to leave early to avoid the heavy traffic.",
    "Our team finished the project two days ahead of schedule.",
    "The old clock in the hall struck nine as we came in.",
    "Could you tell me where the nearest station is?",
    "Fresh bread was sold in the market every morning.",
]


def tts(kind: str, voice: str, text: str) -> np.ndarray:
    """Synthesise ``text`` with flite or espeak-ng; float32 mono at 16 kHz."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "x.wav"
        if kind == "flite":
            cmd = ["flite", "-voice", voice, "-t", text, "-o", str(out)]
        elif kind == "espeak":
            cmd = ["espeak-ng", "-v", voice, "-s", "160", "-w", str(out), text]
        else:
            raise ValueError(kind)
        subprocess.run(cmd, check=True, capture_output=True)
        audio, sr = sf.read(out, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SR:
        audio = soxr.resample(audio, sr, SR).astype(np.float32)
    return audio


@cache
def _manifest(folder: str) -> list[dict[str, str]]:
    with open(CORPORA / folder / "manifest.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _corpus_clips(ref: str) -> list[dict[str, str]]:
    folder, speaker = ref.split("/")
    return [r for r in _manifest(folder) if r["speaker"] == speaker]


def trim(audio: np.ndarray, rel_db: float = -35.0, frame: int = 160) -> np.ndarray:
    """Cut leading/trailing frames quieter than ``rel_db`` below the loudest 10 ms frame."""
    n = len(audio) // frame
    if n == 0:
        return audio
    e = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    on = np.nonzero(20 * np.log10(e / e.max()) > rel_db)[0]
    if len(on) == 0:
        return audio[:0]
    return audio[on[0] * frame : (on[-1] + 1) * frame]


def utterance(voice: Voice, rng: np.random.Generator, min_s: float = 1.5, max_s: float = 5.0) -> tuple[np.ndarray, str]:
    """One trimmed utterance of ``voice`` (16 kHz float32) and its text (fsdd digits are strung together)."""
    if voice.kind in ("flite", "espeak"):
        text = _TTS_TEXTS[int(rng.integers(len(_TTS_TEXTS)))]
        return trim(tts(voice.kind, voice.ref, text)), text
    clips = _corpus_clips(voice.ref)
    folder = voice.ref.split("/")[0]
    if folder == "fsdd":  # single digits: string 4-7 of them together, 60-120 ms apart
        parts, words = [], []
        for _ in range(int(rng.integers(4, 8))):
            r = clips[int(rng.integers(len(clips)))]
            a, _sr = sf.read(CORPORA / folder / r["audio"], dtype="float32")
            parts.append(trim(a))
            parts.append(np.zeros(int(rng.integers(960, 1920)), np.float32))
            words.append(r["text"])
        return np.concatenate(parts[:-1]), " ".join(words)
    cands = [r for r in clips if min_s <= float(r["duration_s"]) <= max_s + 1.0] or clips
    r = cands[int(rng.integers(len(cands)))]
    a, _sr = sf.read(CORPORA / folder / r["audio"], dtype="float32")
    return trim(a), r["text"]  # whole clips, so the transcript stays true


# ------------------------------------------------------------------------------ conversations


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: int  # samples
    end: int  # samples (exclusive)
    text: str = ""


@dataclass(frozen=True)
class Conversation:
    name: str
    audio: np.ndarray  # (S,) float32 at 16 kHz
    turns: tuple[Turn, ...]

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SR

    def overlap_fraction(self) -> float:
        """Share of speech time where two or more voices talk at once."""
        n = len(self.audio)
        count = np.zeros(n, np.int8)
        for t in self.turns:
            count[t.start : t.end] += 1
        speech = np.count_nonzero(count)
        return float(np.count_nonzero(count >= 2) / max(speech, 1))


def build(
    name: str,
    voices: list[str],
    *,
    n_turns: int = 16,
    seed: int = 0,
    gap_s: tuple[float, float] = (0.25, 0.8),
    overlap_p: float = 0.15,
    overlap_s: tuple[float, float] = (0.2, 0.5),
    gain_db: tuple[float, float] = (-9.0, 0.0),
    lead_s: float = 0.5,
) -> Conversation:
    """Voices take turns (never the same voice twice in a row), with a silence gap between turns
    or, with probability ``overlap_p``, an overlap; each voice has its own level within ``gain_db``
    (plus +-1.5 dB per turn)."""
    rng = np.random.default_rng(seed)
    level = {v: float(rng.uniform(*gain_db)) for v in voices}
    order: list[str] = []
    for i in range(n_turns):
        if i < len(voices):
            order.append(voices[i])  # everyone speaks once early on
        else:
            order.append(str(rng.choice([v for v in voices if v != order[-1]])))
    pieces: list[tuple[str, int, np.ndarray]] = []
    texts: list[str] = []
    t = int(lead_s * SR)
    for v in order:
        a, text = utterance(VOICES[v], rng)
        texts.append(text)
        a = a / (np.sqrt(np.mean(a**2)) + 1e-9) * 0.08  # equal loudness (-22 dBFS), then the level
        a = (a * 10 ** ((level[v] + rng.uniform(-1.5, 1.5)) / 20)).astype(np.float32)
        if pieces:
            prev_end = pieces[-1][1] + len(pieces[-1][2])
            if rng.random() < overlap_p:
                t = prev_end - int(rng.uniform(*overlap_s) * SR)
            else:
                t = prev_end + int(rng.uniform(*gap_s) * SR)
        pieces.append((v, t, a))
    total = max(s + len(a) for _, s, a in pieces) + int(lead_s * SR)
    mix = np.zeros(total, np.float32)
    for _, s, a in pieces:
        mix[s : s + len(a)] += a
    peak = float(np.abs(mix).max())
    if peak > 0.99:
        mix *= 0.99 / peak
    turns = tuple(Turn(v, s, s + len(a), text) for (v, s, a), text in zip(pieces, texts))
    return Conversation(name, mix, turns)


# Named scenarios: (voices, seed, turns).  Voices were chosen to be distinct to a listener;
# conv4 mixes two female real voices (kathleen, lj), the hardest pair for the encoder.
SCENARIOS: dict[str, tuple[list[str], int, int]] = {
    "tts2": (["slt", "rms"], 11, 14),
    "real2": (["kathleen", "philipp"], 12, 14),
    "mixed2": (["lj", "awb"], 13, 14),
    "digits3": (["george", "jackson", "kathleen"], 14, 16),
    "mixed3": (["philipp", "slt", "espeak_m3"], 15, 16),
    "mixed4": (["kathleen", "rms", "lj", "awb"], 16, 20),
    "tts4": (["slt", "awb", "kal", "espeak_f3"], 17, 20),
}


# Not in the default table: two male espeak-ng voices that the voice encoder barely separates
# (cosine about 0.9 between them); run with --scenarios males2 to see the failure mode.
EXTRA_SCENARIOS: dict[str, tuple[list[str], int, int]] = {
    "males2": (["espeak_us", "espeak_m3"], 18, 14),
}


def scenario(name: str) -> Conversation:
    voices, seed, n_turns = SCENARIOS.get(name) or EXTRA_SCENARIOS[name]
    return build(name, voices, n_turns=n_turns, seed=seed)


# ------------------------------------------------------------------------------------- RTTM


def rttm_lines(uri: str, segments: list[tuple[int, int, str]], sr: int = SR) -> list[str]:
    """RTTM SPEAKER lines for (start_sample, end_sample, speaker) segments."""
    out = []
    for s, e, spk in sorted(segments):
        out.append(f"SPEAKER {uri} 1 {s / sr:.3f} {(e - s) / sr:.3f} <NA> <NA> {spk} <NA> <NA>")
    return out


def write_rttm(path: Path, uri: str, segments: list[tuple[int, int, str]]) -> Path:
    path.write_text("\n".join(rttm_lines(uri, segments)) + "\n")
    return path


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "bench/results/conversations")
    out.mkdir(parents=True, exist_ok=True)
    for name in SCENARIOS:
        c = scenario(name)
        sf.write(out / f"{name}.wav", c.audio, SR, subtype="PCM_16")
        write_rttm(out / f"{name}.rttm", name, [(t.start, t.end, t.speaker) for t in c.turns])
        print(f"{name}: {c.duration_s:.1f} s, {len(c.turns)} turns, overlap {100 * c.overlap_fraction():.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
