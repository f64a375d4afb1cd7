"""Frame-level precision and recall of the webrtc and silero VADs on labelled synthetic audio.

Audio: 24 sentences of synthetic speech (espeak-ng voices en-us, en-gb, en-us+f3, en-us+m3
and flite voices slt, rms, awb when flite is installed), separated by gaps of 1.2-2.6 s. Each
gap holds, between 0.3 s margins of silence, one filler: digital silence, white noise (two
levels), brown noise, a melody of harmonic notes, or sustained chords (the "music-like tones").

Reference labels: a sentence's speech region is its energy-trimmed extent in the clean TTS
output (10 ms frames within 35 dB of that sentence's loudest frame, first to last; see
``tests.support.tts.trim_extent``). Pauses between words inside a sentence count as speech.

Scoring: 10 ms frames; a frame is predicted speech when it lies inside a VAD segment
(``SpeechStarted``..``SpeechEnded``, i.e. including pre-speech padding and hangover, exactly
what a recogniser receives). Precision = TP / (TP + FP), recall = TP / (TP + FN).
Also: the share of each filler's frames that a VAD calls speech (false alarms by kind).

    .venv/bin/python bench/bench_vad.py
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream.vad import (  # noqa: E402
    DEFAULT_SILERO_THRESHOLD,
    DEFAULT_VAD_CONFIGS,
    DEFAULT_WEBRTC_AGGRESSIVENESS,
    Audio,
    End,
    Start,
    VadConfig,
    make_segmenter,
)
from tests.support.tts import espeak_ng, trim_extent  # noqa: E402

RATE = 16_000
FRAME = 160  # 10 ms scoring frames
TEXTS = [
    "The weather will be cold and windy tomorrow.",
    "Could you send me the slides from this morning?",
    "Our train leaves at half past seven.",
    "She sells sea shells by the sea shore.",
    "Turn left at the second traffic light.",
    "I think we should wait for the final numbers.",
    "The library closes early on public holidays.",
    "Please speak slowly and clearly into the microphone.",
    "Seven hundred and forty two people attended.",
    "Nobody expected the results to arrive so soon.",
    "Let me check my calendar and get back to you.",
    "A large dog was barking in the empty street.",
]
FILLERS = ["silence", "white_low", "white_high", "brown", "melody", "chords"]


def flite(text: str, voice: str) -> np.ndarray:
    wav = subprocess.run(
        ["flite", "-voice", voice, "-t", text, "-o", "/dev/stdout"], check=True, capture_output=True
    ).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return soxr.resample(x, rate, RATE, "HQ").astype(np.float32)


def voices() -> list[tuple[str, object]]:
    vs: list[tuple[str, object]] = [
        (f"espeak {v}", (lambda t, v=v: espeak_ng(t, voice=v))) for v in ("en-us", "en-gb", "en-us+f3", "en-us+m3")
    ]
    if shutil.which("flite"):
        vs += [(f"flite {v}", (lambda t, v=v: flite(t, v))) for v in ("slt", "rms", "awb")]
    return vs


def filler(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / RATE
    if kind == "silence":
        return np.zeros(n, np.float32)
    if kind == "white_low":
        return (rng.standard_normal(n) * 0.003).astype(np.float32)
    if kind == "white_high":
        return (rng.standard_normal(n) * 0.05).astype(np.float32)
    if kind == "brown":
        b = np.cumsum(rng.standard_normal(n))
        b -= np.convolve(b, np.ones(801) / 801, mode="same")  # remove drift
        return (b / (np.abs(b).max() + 1e-9) * 0.1).astype(np.float32)
    if kind == "melody":
        out = np.zeros(n, np.float32)
        note = int(0.25 * RATE)
        for i in range(0, n, note):
            f0 = 220 * 2 ** (rng.integers(0, 12) / 12)
            m = min(note, n - i)
            tt = np.arange(m) / RATE
            env = np.minimum(1, tt / 0.01) * np.exp(-tt * 6)
            out[i : i + m] = env * sum(np.sin(2 * np.pi * f0 * k * tt) / k for k in range(1, 6)) * 0.15
        return out
    if kind == "chords":
        freqs = [261.6, 329.6, 392.0] if rng.random() < 0.5 else [220.0, 277.2, 329.6, 440.0]
        env = np.minimum(1, np.minimum(t / 0.05, (t[-1] - t) / 0.05 + 1e-9))
        return (env * sum(np.sin(2 * np.pi * f * t) for f in freqs) * 0.08).astype(np.float32)
    raise ValueError(kind)


def build(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(audio, speech label per 10 ms frame, filler kind index per frame or -1)."""
    rng = np.random.default_rng(seed)
    vs = voices()
    parts: list[np.ndarray] = []
    regions: list[tuple[int, int]] = []
    fill_spans: list[tuple[int, int, int]] = []
    pos = 0
    n_sent = 24
    for i in range(n_sent + 1):
        gap = int(rng.uniform(1.2, 2.6) * RATE)
        margin = int(0.3 * RATE)
        kind = i % len(FILLERS)
        g = np.zeros(gap, np.float32)
        g[margin : gap - margin] = filler(FILLERS[kind], gap - 2 * margin, rng)
        fill_spans.append((pos + margin, pos + gap - margin, kind))
        parts.append(g)
        pos += gap
        if i < n_sent:
            _, synth = vs[i % len(vs)]
            s = synth(TEXTS[i % len(TEXTS)])  # type: ignore[operator]
            s = s / (np.abs(s).max() + 1e-9) * 0.5
            a, b = trim_extent(s)
            regions.append((pos + a, pos + b))
            parts.append(s)
            pos += s.shape[0]
    x = np.concatenate(parts)
    nf = x.shape[0] // FRAME
    labels = np.zeros(nf, bool)
    for a, b in regions:
        labels[a // FRAME : -(-b // FRAME)] = True
    kinds = np.full(nf, -1)
    for a, b, k in fill_spans:
        kinds[a // FRAME : b // FRAME] = k
    return x, labels, kinds


def predict(
    kind: str, x: np.ndarray, config: VadConfig | None = None, **kw: object
) -> tuple[np.ndarray, np.ndarray, float]:
    seg = make_segmenter(kind, config, **kw)  # type: ignore[arg-type]  # None: that VAD's defaults
    st = seg.init_state()
    out = []
    t = time.perf_counter()
    for i in range(0, x.shape[0], 1600):  # 100 ms chunks, as the file source sends them
        o, st = seg.step(x[i : i + 1600], st)
        out += o
    o, st = seg.flush(st)
    out += o
    wall = time.perf_counter() - t
    raw = np.zeros(x.shape[0] // FRAME, bool)  # the frame classifier alone, before the timing rules
    F = seg.clf.frame_samples
    n = x.shape[0] // F
    labels_clf, _ = seg.clf.classify(x[: n * F].reshape(n, F), seg.clf.init_state())
    for j in np.flatnonzero(labels_clf):
        raw[j * F // FRAME : -(-(j + 1) * F // FRAME)] = True
    pred = np.zeros(x.shape[0] // FRAME, bool)
    for o in out:
        if isinstance(o, End):
            pred[o.start_sample // FRAME : -(-o.sample // FRAME)] = True
    assert not any(isinstance(o, Audio) and o.speech and o.samples.size == 0 for o in out)
    assert sum(isinstance(o, Start) for o in out) == sum(isinstance(o, End) for o in out)
    return pred[: x.shape[0] // FRAME], raw[: x.shape[0] // FRAME], wall


def main() -> None:
    x, labels, kinds = build()
    print(
        f"audio: {x.shape[0] / RATE:.1f} s, {labels.mean() * 100:.1f}% speech frames (reference), "
        f"voices: {', '.join(v for v, _ in voices())}"
    )
    print(f"segment timing defaults: {DEFAULT_VAD_CONFIGS}")
    print()
    old = VadConfig(200, 200, 90, 400)
    rows = [
        (f"webrtc (aggressiveness {DEFAULT_WEBRTC_AGGRESSIVENESS}, 30 ms) [default]", "webrtc", {}),
        (f"silero (threshold {DEFAULT_SILERO_THRESHOLD}) [default]", "silero", {}),
        ("webrtc (aggressiveness 2, 200/200/90/400 ms) [old default]", "webrtc", {"aggressiveness": 2, "config": old}),
        ("silero (threshold 0.5, 200/200/90/400 ms) [old default]", "silero", {"threshold": 0.5, "config": old}),
    ]
    print(
        "| VAD | precision | recall | F1 | classifier-only P / R | "
        + " | ".join(f"FA {f}" for f in FILLERS)
        + " | compute s |"
    )
    print("|---|---:|---:|---:|---:|" + "---:|" * len(FILLERS) + "---:|")
    for name, kind, kw in rows:
        pred, raw, wall = predict(kind, x, **kw)
        tp = int(np.sum(pred & labels))
        p = tp / max(1, int(pred.sum()))
        r = tp / max(1, int(labels.sum()))
        f1 = 2 * p * r / max(1e-9, p + r)
        rp = int(np.sum(raw & labels)) / max(1, int(raw.sum()))
        rr = int(np.sum(raw & labels)) / max(1, int(labels.sum()))
        fa = [pred[kinds == k].mean() * 100 for k in range(len(FILLERS))]
        print(
            f"| {name} | {p:.3f} | {r:.3f} | {f1:.3f} | {rp:.3f} / {rr:.3f} | "
            + " | ".join(f"{v:.0f}%" for v in fa)
            + f" | {wall:.2f} |"
        )
    print()
    print("precision/recall/F1/FA: frames inside VAD segments (with pre-speech pad and hangover, what the")
    print("recogniser gets); classifier-only: the raw per-frame labels before the timing rules.")
    print("FA = share of that filler's frames called speech (false alarms); frames are 10 ms.")
    print("compute s: segmenter wall time over the whole audio, 100 ms chunks, one thread of this process.")
    print("command: .venv/bin/python bench/bench_vad.py")


if __name__ == "__main__":
    main()
