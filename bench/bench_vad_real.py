"""Frame-level precision, recall and F1 of the webrtc and silero VADs on real recordings with labelled pauses.

Audio (``../shared/corpora``, 16 kHz; never copied into the repo):

- tune set: ``rhasspy_kathleen`` (one studio speaker), the grid below is searched here;
- test set: held-out LJ Speech (``ljspeech_subset``, the ``ljspeech_test`` part: rows i % 3 != 0)
  and ``dctts_philipp_ljprompts`` (an amateur home recording), other speakers than the tune set.

Utterances are joined whole (their own pauses stay as they were read) with gaps of 0.3-1.5 s.
Each set is scored clean and with real noise under everything: room tone cut from the non-speech
stretches of ``speechocean762`` recordings (frames within 6 dB of each clip's floor), tiled and
scaled to 20 dB and 10 dB SNR against the speech (the recordings are quiet, so the room tone is
raised; its spectrum is a real room's).

Reference labels, per 10 ms frame of each clean utterance: speech when its energy is above
``max(floor + 15 dB, peak - 40 dB)`` (``floor`` = the utterance's 5th-percentile frame); silent runs
shorter than ``PAUSE_MS`` (200 ms) count as speech (stop closures, short word gaps), so a *pause* is
a silence of 200 ms or more; blips under 50 ms are dropped. Frames within 30 ms of a label change
are not scored (the margin). Gaps between utterances are non-speech.

Scoring: a frame is predicted speech when it lies inside a VAD segment (``Start``..``End``, with
pre-speech pad and hangover: what a recogniser gets). P = TP / (TP + FP), R = TP / (TP + FN).
The all-speech baseline calls every frame speech (R = 1, P = the speech share).

    .venv/bin/python bench/bench_vad_real.py [--tune-utts 60 --test-utts 40]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.vad import (  # noqa: E402
    DEFAULT_SILERO_THRESHOLD,
    DEFAULT_VAD_CONFIGS,
    DEFAULT_WEBRTC_AGGRESSIVENESS,
    End,
    Segmenter,
    SileroClassifier,
    VadConfig,
    WebRtcClassifier,
)

RATE = 16_000
FRAME = 160  # 10 ms scoring frames
PAUSE_MS = 200
MARGIN_FRAMES = 3
# ../shared/corpora beside the checkout (a worktree under wt/ looks one level higher)
CORPORA = next(
    (p for p in (ROOT.parent / "shared" / "corpora", ROOT.parent.parent / "shared" / "corpora") if p.is_dir()),
    ROOT.parent / "shared" / "corpora",
)
OLD_DEFAULTS = VadConfig(200, 200, 90, 400, 0)  # VadConfig() before this retune (webrtc and silero alike)


def rows(folder: str) -> list[dict[str, str]]:
    with open(CORPORA / folder / "manifest.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def load(folder: str, rel: str) -> np.ndarray:
    x, sr = sf.read(str(CORPORA / folder / rel), dtype="float32", always_2d=True)
    assert sr == RATE, (rel, sr)
    return x.mean(axis=1)


def frame_db(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME
    return 10 * np.log10(np.mean(x[: n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2, axis=1) + 1e-12)


def label_utterance(x: np.ndarray, pause_ms: int = PAUSE_MS) -> np.ndarray:
    """Speech per 10 ms frame: energy above the floor with a margin, pauses >= ``pause_ms`` kept, blips dropped."""
    e = frame_db(x)
    thr = max(np.percentile(e, 5) + 15.0, e.max() - 40.0)
    sp = e > thr
    runs = _runs(sp)
    for v, a, b in runs:  # fill short silences inside speech
        if not v and a > 0 and b < len(sp) and (b - a) * 10 < pause_ms:
            sp[a:b] = True
    for v, a, b in _runs(sp):
        if v and (b - a) * 10 < 50:
            sp[a:b] = False
    return sp


def _runs(v: np.ndarray) -> list[tuple[bool, int, int]]:
    out, start = [], 0
    for i in range(1, len(v) + 1):
        if i == len(v) or v[i] != v[start]:
            out.append((bool(v[start]), start, i))
            start = i
    return out


def heldout_items(n: int) -> list[tuple[str, str]]:
    """(folder, audio) of the held-out test set: the first ``n // 2`` LJ Speech ``ljspeech_test`` rows
    (i % 3 != 0) and the first ``n // 2`` philipp rows."""
    lj = [r for i, r in enumerate(rows("ljspeech_subset")) if i % 3]
    ph = rows("dctts_philipp_ljprompts")
    half = n // 2
    return [("ljspeech_subset", r["audio"]) for r in lj[:half]] + [
        ("dctts_philipp_ljprompts", r["audio"]) for r in ph[:half]
    ]


def room_tone(n_clips: int = 120) -> np.ndarray:
    """Non-speech stretches of speechocean762 clips (frames within 6 dB of each clip's floor)."""
    parts = []
    for r in rows("speechocean762")[:: max(1, 4500 // n_clips)][:n_clips]:
        x = load("speechocean762", r["audio"])
        e = frame_db(x)
        quiet = e < np.percentile(e, 5) + 6.0
        for v, a, b in _runs(quiet):
            if v and b - a >= 10:
                seg = x[a * FRAME : b * FRAME]
                parts.append(seg - seg.mean())
    tone = np.concatenate(parts)
    return (tone / (np.sqrt(np.mean(tone**2)) + 1e-12)).astype(np.float32)  # unit RMS


@dataclass
class Set:
    name: str
    audio: np.ndarray
    labels: np.ndarray  # speech per 10 ms frame
    scored: np.ndarray  # frames outside the margin


def build_set(name: str, items: list[tuple[str, str]], seed: int) -> Set:
    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for folder, rel in items:
        gap = np.zeros(int(rng.uniform(0.3, 1.5) * RATE) // FRAME * FRAME, np.float32)
        parts.append(gap)
        labels.append(np.zeros(len(gap) // FRAME, bool))
        x = load(folder, rel)
        x = x[: len(x) // FRAME * FRAME]
        parts.append(x)
        labels.append(label_utterance(x))
    tail = np.zeros(RATE // 2, np.float32)
    parts.append(tail)
    labels.append(np.zeros(len(tail) // FRAME, bool))
    lab = np.concatenate(labels)
    change = np.flatnonzero(np.diff(lab.astype(np.int8)) != 0) + 1
    scored = np.ones(len(lab), bool)
    for c in change:
        scored[max(0, c - MARGIN_FRAMES) : c + MARGIN_FRAMES] = False
    return Set(name, np.concatenate(parts), lab, scored)


def with_noise(s: Set, tone: np.ndarray, snr_db: float) -> Set:
    speech = s.audio[: len(s.labels) * FRAME].reshape(-1, FRAME)[s.labels]
    level = np.sqrt(np.mean(speech.astype(np.float64) ** 2)) / 10 ** (snr_db / 20)
    reps = -(-len(s.audio) // len(tone))
    noise = np.tile(tone, reps)[: len(s.audio)] * level
    return Set(f"{s.name} +noise {snr_db:.0f} dB", (s.audio + noise).astype(np.float32), s.labels, s.scored)


class Replay:
    """A frame classifier that returns precomputed labels (so timing rules can be searched cheaply)."""

    def __init__(self, frame_samples: int, labels: np.ndarray):
        self.frame_samples = frame_samples
        self.labels = labels

    def init_state(self) -> int:
        return 0

    def classify(self, frames: np.ndarray, state: int) -> tuple[np.ndarray, int]:
        k = frames.shape[0]
        out = np.zeros(k, bool)
        got = self.labels[state : state + k]
        out[: len(got)] = got
        return out, state + k


def raw_labels(kind: str, x: np.ndarray, **kw: Any) -> tuple[int, Any]:
    """(frame samples, per-frame labels or probabilities) of the classifier over the whole audio."""
    if kind == "webrtc":
        clf = WebRtcClassifier(kw.get("aggressiveness", 2), 30)
        F = clf.frame_samples
        n = len(x) // F
        return F, clf.classify(x[: n * F].reshape(n, F), clf.init_state())[0]
    clf = SileroClassifier(0.5)
    F = clf.frame_samples
    n = len(x) // F
    probs, _ = clf.probabilities(x[: n * F].reshape(n, F), clf.init_state())
    return F, probs


def silero_labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    neg = max(threshold - 0.15, 0.01)
    out = np.empty(len(probs), bool)
    trig = False
    for i, p in enumerate(probs):
        trig = True if p >= threshold else (False if p < neg else trig)
        out[i] = trig
    return out


def segment(F: int, labels: np.ndarray, n_samples: int, cfg: VadConfig) -> np.ndarray:
    seg = Segmenter(Replay(F, labels), cfg)
    out, st = seg.step(np.zeros(n_samples, np.float32), seg.init_state())
    more, _ = seg.flush(st)
    pred = np.zeros(n_samples // FRAME, bool)
    for o in out + more:
        if isinstance(o, End):
            pred[o.start_sample // FRAME : -(-o.sample // FRAME)] = True
    return pred


def prf(pred: np.ndarray, s: Set) -> tuple[float, float, float]:
    n = min(len(pred), len(s.labels))
    p_, l_, m = pred[:n], s.labels[:n], s.scored[:n]
    tp = int(np.sum(p_ & l_ & m))
    p = tp / max(1, int(np.sum(p_ & m)))
    r = tp / max(1, int(np.sum(l_ & m)))
    return p, r, 2 * p * r / max(1e-9, p + r)


def search(s: Set, kind: str, raw: dict) -> list[tuple[float, VadConfig, dict]]:
    grid = itertools.product((0, 50, 100, 200), (0, 50, 100, 200), (30, 60, 90), (100, 150, 200, 250, 300, 400))
    results = []
    variants = (
        [{"aggressiveness": a} for a in (1, 2, 3)]
        if kind == "webrtc"
        else [{"threshold": t} for t in (0.3, 0.4, 0.5, 0.6, 0.7)]
    )
    for pad, hang, ms, sil in grid:
        cfg = VadConfig(pad, hang, ms, sil)
        for v in variants:
            F, lab = raw[str(v)]
            results.append((prf(segment(F, lab, len(s.audio), cfg), s)[2], cfg, v))
    return sorted(results, key=lambda r: -r[0])


def classifier_outputs(s: Set, kind: str) -> dict:
    out = {}
    if kind == "webrtc":
        for a in (1, 2, 3):
            out[str({"aggressiveness": a})] = raw_labels("webrtc", s.audio, aggressiveness=a)
    else:
        F, probs = raw_labels("silero", s.audio)
        for t in (0.3, 0.4, 0.5, 0.6, 0.7):
            out[str({"threshold": t})] = (F, silero_labels(probs, t))
    return out


def decision_delays(
    s: Set, kind: str, cfg: VadConfig, energy_ms: int | None = None, **kw: Any
) -> tuple[list[float], int, int]:
    """Fed in 10 ms pieces: ms from each labelled speech end that a pause of 250 ms or more follows
    to the piece after which the segmenter emits its End (the VAD's decision), found / total."""
    from stream.vad import make_segmenter

    ends = [a * FRAME for v, a, b in _runs(s.labels) if not v and a > 0 and (b - a) * 10 >= 250]
    seg = make_segmenter(kind, cfg, **kw) if energy_ms is None else _webrtc(cfg, kw["frame_ms"], energy_ms)  # type: ignore[arg-type]
    st = seg.init_state()
    decided = []
    for i in range(0, len(s.audio), FRAME):
        out, st = seg.step(s.audio[i : i + FRAME], st)
        decided += [i + FRAME for o in out if isinstance(o, End)]
    delays = []
    for e in ends:
        after = [t for t in decided if e <= t < e + RATE]
        if after:
            delays.append((after[0] - e) * 1000 / RATE)
    return delays, len(delays), len(ends)


# webrtc variants of the finalisation-latency work (bench_finals.py --part breakdown): (name, frame ms, VadConfig fields)
LATENCY_VARIANTS: tuple[tuple[str, int, dict[str, int]], ...] = (
    ("before: 30 ms frames, min silence 150, no backdating", 30, {"backdate_max_ms": 0, "min_silence_ms": 150}),
    ("10 ms frames (min silence 150, no backdating)", 10, {"backdate_max_ms": 0, "min_silence_ms": 150}),
    ("10 ms frames, backdate 30 ms (min silence 150)", 10, {"backdate_max_ms": 30, "min_silence_ms": 150}),
    ("10 ms frames, backdate 90 ms, min silence 170", 10, {"backdate_max_ms": 90, "min_silence_ms": 170}),
    ("10 ms frames, backdate 90 ms, min silence 180", 10, {"backdate_max_ms": 90, "min_silence_ms": 180}),
    ("30 ms frames, backdate 90 ms on 30 ms energy frames, min silence 180", 30, {"energy_ms": 30}),
    ("new defaults: 30 ms frames, backdate 90 ms on 10 ms energy, min silence 180", 30, {}),
)


def _webrtc(cfg: VadConfig, frame_ms: int, energy_ms: int | None = None) -> Any:
    """The webrtc segmenter; ``energy_ms``: backdating's energy sub-frame, if not the default."""
    from stream.vad import Segmenter, make_segmenter

    seg = make_segmenter("webrtc", cfg, frame_ms=frame_ms)
    return seg if energy_ms is None else Segmenter(seg.clf, seg.config, energy_ms=energy_ms)


def live_segment(x: np.ndarray, cfg: VadConfig, frame_ms: int, energy_ms: int | None = None) -> np.ndarray:
    """Frame labels (10 ms) of the real webrtc segmenter run on the audio itself (backdating reads
    the audio's energy, which the replayed labels of :func:`segment` do not carry)."""
    seg = _webrtc(cfg, frame_ms, energy_ms)
    out, st = seg.step(x, seg.init_state())
    more, _ = seg.flush(st)
    pred = np.zeros(len(x) // FRAME, bool)
    for o in out + more:
        if isinstance(o, End):
            pred[o.start_sample // FRAME : -(-o.sample // FRAME)] = True
    return pred


def latency_variants(test: Set, sets: list[Set]) -> None:
    print(
        "webrtc variants for finalisation latency (the real segmenter on the audio; aggressiveness 3, 100/100/60 ms):"
    )
    print(
        "| variant | clean P / R / F1 | +noise 20 dB P / R / F1 | +noise 10 dB P / R / F1 | delay P50 / P90 | found |"
    )
    print("|---|---|---|---|---|---|")
    base = DEFAULT_VAD_CONFIGS["webrtc"]
    for name, frame_ms, fields in LATENCY_VARIANTS:
        energy_ms = fields.get("energy_ms")
        cfg = dataclasses.replace(base, **{k: v for k, v in fields.items() if k != "energy_ms"})
        row = []
        for s in sets:
            p, r, f = prf(live_segment(s.audio, cfg, frame_ms, energy_ms), s)
            row.append(f"{p:.3f} / {r:.3f} / {f:.3f}")
        d, n, total = decision_delays(test, "webrtc", cfg, energy_ms, frame_ms=frame_ms)
        print(
            f"| {name} | "
            + " | ".join(row)
            + f" | {np.percentile(d, 50):.0f} / {np.percentile(d, 90):.0f} ms | {n} of {total} |"
        )
    print()


def _ms(c: VadConfig) -> tuple[int, int, int, int]:
    return (c.pre_speech_pad_ms, c.hangover_ms, c.min_speech_ms, c.min_silence_ms)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tune-utts", type=int, default=60)
    ap.add_argument("--test-utts", type=int, default=40)
    ap.add_argument("--no-search", action="store_true", help="score the shipped defaults only")
    ap.add_argument("--latency-variants", action="store_true", help="also score the webrtc latency variants")
    args = ap.parse_args()
    t0 = time.perf_counter()
    kath = rows("rhasspy_kathleen")
    tune_items = [
        ("rhasspy_kathleen", r["audio"]) for r in kath[:: max(1, len(kath) // args.tune_utts)][: args.tune_utts]
    ]
    half = args.test_utts // 2
    test_items = heldout_items(args.test_utts)
    tone = room_tone()
    tune = build_set("tune (kathleen)", tune_items, 1)
    test = build_set("test (LJ + philipp)", test_items, 2)
    print(
        f"tune: {len(tune_items)} kathleen utterances, {len(tune.audio) / RATE:.0f} s, {tune.labels.mean():.1%} speech frames; "
        f"test: {half} LJ Speech (ljspeech_test rows) + {half} philipp, {len(test.audio) / RATE:.0f} s, {test.labels.mean():.1%} speech"
    )
    print(f"room tone for noise: {len(tone) / RATE:.1f} s from speechocean762 non-speech stretches")
    print()
    if not args.no_search:
        tune_noisy = with_noise(tune, tone, 20.0)
        print("grid search on the tune set (clean + 20 dB SNR room tone, mean F1), best 5 per VAD:")
        print("| VAD | pad | hangover | min speech | min silence | variant | mean F1 |")
        print("|---|---:|---:|---:|---:|---|---:|")
        for kind in ("webrtc", "silero"):
            raws = [classifier_outputs(s, kind) for s in (tune, tune_noisy)]
            a = search(tune, kind, raws[0])
            b = {(str(c), str(v)): f for f, c, v in search(tune_noisy, kind, raws[1])}
            merged = sorted((((f + b[(str(c), str(v))]) / 2, c, v) for f, c, v in a), key=lambda r: -r[0])
            # the recogniser wants some pad and hangover (an onset consonant, a decaying word tail), and
            # a pause of 150 ms must not end a sentence: best overall, then best within those bounds
            fit = [
                m
                for m in merged
                if m[1].pre_speech_pad_ms >= 100 and m[1].hangover_ms >= 100 and m[1].min_silence_ms >= 150
            ]
            for tag, rows_ in (("any", merged[:3]), ("pad, hangover >= 100, min silence >= 150", fit[:5])):
                for f, c, v in rows_:
                    print(
                        f"| {kind} ({tag}) | {c.pre_speech_pad_ms} | {c.hangover_ms} | {c.min_speech_ms} | {c.min_silence_ms} | {v} | {f:.3f} |"
                    )
        print()
    print("held-out test set: frame P / R / F1 (10 ms frames, 30 ms margin around label changes not scored)")
    print("| VAD (settings) | clean P / R / F1 | +noise 20 dB P / R / F1 | +noise 10 dB P / R / F1 |")
    print("|---|---|---|---|")
    sets = [test, with_noise(test, tone, 20.0), with_noise(test, tone, 10.0)]
    cells = [
        f"{s.labels[s.scored].mean():.3f} / 1.000 / {2 * s.labels[s.scored].mean() / (1 + s.labels[s.scored].mean()):.3f}"
        for s in sets
    ]
    print("| all-speech baseline | " + " | ".join(cells) + " |")
    for kind in ("webrtc", "silero"):
        new = DEFAULT_VAD_CONFIGS[kind]
        outs = [classifier_outputs(s, kind) for s in sets]
        old_v = str({"aggressiveness": 2}) if kind == "webrtc" else str({"threshold": 0.5})
        new_v = str(
            {"aggressiveness": DEFAULT_WEBRTC_AGGRESSIVENESS}
            if kind == "webrtc"
            else {"threshold": DEFAULT_SILERO_THRESHOLD}
        )
        for label, cfg, variant in (
            (f"{kind} old defaults {_ms(OLD_DEFAULTS)} {old_v}", OLD_DEFAULTS, old_v),
            (f"{kind} new defaults {_ms(new)} {new_v}", new, new_v),
        ):
            row = []
            for s, o in zip(sets, outs):
                F, lab = o[variant]
                # backdating reads the audio's energy: the real segmenter on the audio, not replayed labels
                live = kind == "webrtc" and cfg.backdate_max_ms
                pred = live_segment(s.audio, cfg, 30) if live else segment(F, lab, len(s.audio), cfg)
                p, r, f = prf(pred, s)
                row.append(f"{p:.3f} / {r:.3f} / {f:.3f}")
            print(f"| {label} | " + " | ".join(row) + " |")
    print()
    print("decision delay on the clean test set: from a labelled speech end followed by a pause >= 250 ms to the")
    print("segment's End (audio fed in 10 ms pieces); 'found': pauses that ended a segment within 1 s")
    print("| VAD (settings) | delay P50 / P90 | found |")
    print("|---|---|---|")
    for kind, cfg, kw in (
        ("webrtc", OLD_DEFAULTS, {"aggressiveness": 2}),
        ("webrtc", DEFAULT_VAD_CONFIGS["webrtc"], {}),
        ("silero", OLD_DEFAULTS, {"threshold": 0.5}),
        ("silero", DEFAULT_VAD_CONFIGS["silero"], {}),
    ):
        d, n, total = decision_delays(test, kind, cfg, **kw)
        tag = "old" if cfg is OLD_DEFAULTS else "new"
        print(
            f"| {kind} {tag} {_ms(cfg)} {kw or ''} | {np.percentile(d, 50):.0f} / {np.percentile(d, 90):.0f} ms | {n} of {total} |"
        )
    print()
    if args.latency_variants:
        latency_variants(test, sets)
    print("settings = (pre-speech pad, hangover, min speech, min silence) ms; webrtc 30 ms frames.")
    print("The whole run: %.0f s on the shared box." % (time.perf_counter() - t0))
    print("command: .venv/bin/python bench/bench_vad_real.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
