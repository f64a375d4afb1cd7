"""A second ear on bench_vad_real's energy labels: Whisper base word timestamps on the same test utterances.

Nobody can listen here, so the pause labels of ``bench/bench_vad_real.py`` (``label_utterance``: energy above
the floor with a margin, silences of 200 ms or more kept as pauses) are compared with where the Whisper base
teacher (``examples/train/teacher.py``; faster-whisper, greedy, English, ``word_timestamps=True``, no VAD filter)
puts its words, on a seeded sample of the held-out test set (LJ Speech ``ljspeech_test`` rows + philipp, as
``bench_vad_real.heldout_items``). Whisper runs in the teacher's own virtualenv (``bench/whisper_words_worker.py``,
a subprocess; the teacher only listens here, nothing is trained on these utterances).

- an energy pause (>= 200 ms of silence inside an utterance) agrees when no Whisper word overlaps its middle:
  the pause less ``--tol-ms`` at each edge (Whisper's word times are approximate, in 20 ms steps);
- a Whisper gap (>= 200 ms between consecutive words) agrees when an energy pause overlaps its middle (the gap
  less the same tolerance at each edge); for a miss, the longest energy silence over the gap with no minimum
  length (``label_utterance(x, pause_ms=0)``) tells a short silence from none;
- the labelled speech start / end (first / last speech frame) against the first word's start / the last word's
  end: median and P90 of the absolute difference;
- a check that needs no word times: Whisper again on each recording with every labelled non-speech frame
  (leading, inner and trailing) set to zero; a word that is lost or changed may have been inside a "silence".
  The control zeroes stretches of the inner pauses' lengths inside speech instead (``control_spans``): how often
  that changes the words says how much the check can see.

Disagreements are listed (utterance, times, the words around) so a person can listen to exactly those.

    nice -n 10 .venv/bin/python bench/bench_vad_labels.py [--test-utts 30 --utts 30 --seed 0 --tol-ms 60]
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_vad_real import (  # noqa: E402
    CORPORA,
    FRAME,
    PAUSE_MS,
    RATE,
    _runs,
    heldout_items,
    label_utterance,
    load,
)
from examples.train.teacher import model_dir, teacher_python  # noqa: E402

FRAME_S = FRAME / RATE
Word = tuple[float, float, str]  # start s, end s, text
TOLERANCES_MS = (0, 30, 60, 100)  # the sensitivity rows of the table
EDGE_LIST_MS = 150  # speech start / end differences listed above this


# -- the comparison (pure: labels per 10 ms frame, words in seconds) ------------------------------------------


def label_pauses(labels: np.ndarray, min_ms: int = PAUSE_MS) -> list[tuple[float, float]]:
    """(start s, end s) of each non-speech run of ``min_ms`` or more with speech on both sides."""
    return [
        (a * FRAME_S, b * FRAME_S)
        for v, a, b in _runs(labels)
        if not v and a > 0 and b < len(labels) and (b - a) * FRAME_S * 1000 >= min_ms - 1e-6
    ]


def silences(labels: np.ndarray) -> list[tuple[float, float]]:
    """(start s, end s) of every non-speech run, leading and trailing ones included."""
    return [(a * FRAME_S, b * FRAME_S) for v, a, b in _runs(labels) if not v]


def speech_span(labels: np.ndarray) -> tuple[float, float] | None:
    """Start of the first speech frame and end of the last, or None without speech."""
    idx = np.flatnonzero(labels)
    return (idx[0] * FRAME_S, (idx[-1] + 1) * FRAME_S) if len(idx) else None


def _middle(a: float, b: float, tol: float) -> tuple[float, float]:
    """The interval less ``tol`` at each edge; its midpoint when that leaves nothing."""
    return (a + tol, b - tol) if b - a > 2 * tol else ((a + b) / 2, (a + b) / 2)


def _overlaps(s: float, e: float, m0: float, m1: float) -> bool:
    return s < m1 and e > m0 if m1 > m0 else s < m0 < e


@dataclass(frozen=True)
class PauseCheck:
    start: float
    end: float
    between: bool  # no word over the pause's middle
    over: tuple[Word, ...]  # the words that overlap it
    before: Word | None  # the last word ending before the middle
    after: Word | None  # the first word starting after it
    free_s: float  # the longest stretch of the pause that no word overlaps


def word_free(a: float, b: float, words: list[Word]) -> float:
    """The longest stretch of ``a``..``b`` that no word overlaps."""
    t, best = a, 0.0
    for s, e, _ in sorted(words):
        if e <= t or s >= b:
            continue
        best = max(best, s - t)
        t = max(t, e)
    return max(best, b - t, 0.0)


def check_pauses(pauses: list[tuple[float, float]], words: list[Word], tol_s: float) -> list[PauseCheck]:
    out = []
    for a, b in pauses:
        m0, m1 = _middle(a, b, tol_s)
        over = tuple(w for w in words if _overlaps(w[0], w[1], m0, m1))
        before = [w for w in words if w[1] <= m0 and w not in over]
        after = [w for w in words if w[0] >= m1 and w not in over]
        out.append(
            PauseCheck(
                a,
                b,
                not over,
                over,
                before[-1] if before else None,
                after[0] if after else None,
                word_free(a, b, words),
            )
        )
    return out


@dataclass(frozen=True)
class GapCheck:
    prev: Word
    next: Word
    found: bool  # an energy pause overlaps the gap's middle
    longest_silence_s: float  # the longest energy silence (any length) overlapping the gap


def word_gaps(words: list[Word], min_ms: int = PAUSE_MS) -> list[tuple[Word, Word]]:
    """Consecutive words with ``min_ms`` or more between one's end and the next one's start."""
    return [(p, n) for p, n in zip(words, words[1:]) if (n[0] - p[1]) * 1000 >= min_ms - 1e-6]


def check_gaps(
    words: list[Word],
    pauses: list[tuple[float, float]],
    tol_s: float,
    raw_silences: Sequence[tuple[float, float]] = (),
    min_ms: int = PAUSE_MS,
) -> list[GapCheck]:
    out = []
    for p, n in word_gaps(words, min_ms):
        m0, m1 = _middle(p[1], n[0], tol_s)
        found = any(_overlaps(a, b, m0, m1) for a, b in pauses)
        longest = max((b - a for a, b in raw_silences if _overlaps(a, b, p[1], n[0])), default=0.0)
        out.append(GapCheck(p, n, found, longest))
    return out


def edge_diffs(labels: np.ndarray, words: list[Word]) -> tuple[float, float] | None:
    """(labelled speech start - first word start, labelled speech end - last word end) in s, or None."""
    span = speech_span(labels)
    if span is None or not words:
        return None
    return span[0] - words[0][0], span[1] - words[-1][1]


def control_spans(labels: np.ndarray, lengths: list[float]) -> list[tuple[float, float]]:
    """Stretches of the given lengths inside speech (the control for zeroing): each centred in the longest speech
    run still free that holds it, one per run; a length no free run holds is left out."""
    free = sorted(((b - a) * FRAME_S, a * FRAME_S, b * FRAME_S) for v, a, b in _runs(labels) if v)
    out = []
    for n in sorted(lengths, reverse=True):
        if free and free[-1][0] >= n:
            _, a, b = free.pop()
            mid = (a + b) / 2
            out.append((mid - n / 2, mid + n / 2))
    return sorted(out)


def _norm(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum() or c == "'")


def norm_words(words: list[Word]) -> list[str]:
    """Lower case, punctuation dropped (apostrophes kept), for comparing two transcripts."""
    return [t for w in words if (t := _norm(w[2]))]


def changes(before: list[Word], after: list[Word]) -> list[tuple[list[Word], list[Word]]]:
    """(words of ``before``, words of ``after``) of each stretch where the two transcripts differ (compared
    as ``norm_words``; words that are only punctuation left out)."""
    b = [w for w in before if _norm(w[2])]
    a = [w for w in after if _norm(w[2])]
    ops = difflib.SequenceMatcher(a=norm_words(b), b=norm_words(a), autojunk=False).get_opcodes()
    return [(b[i0:i1], a[j0:j1]) for op, i0, i1, j0, j1 in ops if op != "equal"]


# -- running it ------------------------------------------------------------------------------------------------


def find_teacher(given: Path | None) -> tuple[Path, Path]:
    """(teacher Python, model dir): ``given``, else ``data/teacher`` of this checkout or of the main checkout
    (a git worktree shares it); exits with how to install it when none has both."""
    if given is not None:
        roots = [given]
    else:
        roots = [ROOT / "data" / "teacher"]
        common = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if common and Path(common).parent / "data" / "teacher" not in roots:
            roots.append(Path(common).parent / "data" / "teacher")
    for root in roots:
        py, model = teacher_python(root), model_dir(root)
        if py.exists() and (model / "model.bin").exists():
            return py, model
    raise SystemExit(
        "bench_vad_labels: the Whisper base teacher is not installed (looked for venv/bin/python and "
        f"whisper-base/model.bin in: {', '.join(map(str, roots))}).\n"
        "Install it with: python -m examples.train.teacher install [--dir data/teacher]  (or pass --teacher-dir)"
    )


def sample(test_utts: int, n: int, seed: int) -> list[tuple[str, str]]:
    """A seeded sample of ``n`` of ``heldout_items(test_utts)``, half from each corpus, in the set's order."""
    pool = heldout_items(test_utts)
    rng = random.Random(seed)
    keep: list[tuple[str, str]] = []
    for folder in ("ljspeech_subset", "dctts_philipp_ljprompts"):
        items = [it for it in pool if it[0] == folder]
        keep += rng.sample(items, min(len(items), n // 2))
    return [it for it in pool if it in keep]


def uid(item: tuple[str, str]) -> str:
    return item[1].rsplit(".", 1)[0]


def run_whisper(py: Path, model: Path, jobs: list[tuple[str, Path, str]], threads: int, out: Path) -> dict[str, dict]:
    """Whisper's words per job id; a job is (id, audio, JSON list of stretches to zero or "")."""
    jobs_path = out.with_suffix(".jobs.tsv")
    jobs_path.write_text("".join(f"{j}\t{path}\t{zero}\n".replace("\t\n", "\n") for j, path, zero in jobs))
    worker = Path(__file__).with_name("whisper_words_worker.py")
    subprocess.run([str(py), str(worker), str(model), str(jobs_path), str(out), "--threads", str(threads)], check=True)
    recs = [json.loads(line) for line in out.read_text().splitlines() if line]
    return {r["id"]: r for r in recs}


def _w(w: Word | None) -> str:
    return f"'{w[2]}' {w[0]:.2f}-{w[1]:.2f}" if w else "-"


def _pct(k: int, n: int) -> str:
    return f"{k / n:.1%}" if n else "-"


def _words(rec: dict) -> list[Word]:
    return [(float(s), float(e), str(t)) for s, e, t, *_ in rec["words"]]


@dataclass
class Utt:
    id: str
    labels: np.ndarray  # bench_vad_real's labels
    raw: np.ndarray  # the same with no minimum pause length
    words: list[Word]  # Whisper on the recording
    zeroed: list[Word]  # Whisper on the recording with every labelled non-speech frame set to zero
    control: list[Word]  # Whisper with stretches of the inner pauses' lengths zeroed inside speech

    @property
    def pauses(self) -> list[tuple[float, float]]:
        return label_pauses(self.labels)


def print_report(per: list[Utt], tol_ms: int) -> None:
    print("| check | tolerance at each edge | agree | of | share |")
    print("|---|---:|---:|---:|---:|")
    tols = sorted({*TOLERANCES_MS, tol_ms})
    for tol in tols:
        c = [p for u in per for p in check_pauses(u.pauses, u.words, tol / 1000)]
        k = sum(p.between for p in c)
        print(
            f"| energy pause >= {PAUSE_MS} ms: no Whisper word over its middle | {tol} ms | {k} | {len(c)} | {_pct(k, len(c))} |"
        )
    for tol in tols:
        gaps = [x for u in per for x in check_gaps(u.words, u.pauses, tol / 1000, silences(u.raw))]
        k = sum(x.found for x in gaps)
        print(
            f"| Whisper gap >= {PAUSE_MS} ms: an energy pause over its middle | {tol} ms | {k} | {len(gaps)} | {_pct(k, len(gaps))} |"
        )
    c = [p for u in per for p in check_pauses(u.pauses, u.words, 0.0)]
    k = sum(p.free_s >= 0.1 for p in c)
    print(
        f"| energy pause >= {PAUSE_MS} ms: 100 ms or more of it free of Whisper words | - | {k} | {len(c)} | {_pct(k, len(c))} |"
    )
    same = [u for u in per if norm_words(u.words) == norm_words(u.zeroed)]
    print(
        f"| utterance: Whisper hears the same words with every labelled non-speech frame zeroed | - | {len(same)} | {len(per)} | {_pct(len(same), len(per))} |"
    )
    inner = [u for u in per if u.pauses]
    k = sum(norm_words(u.words) == norm_words(u.zeroed) for u in inner)
    print(f"| the same, utterances with an inner pause | - | {k} | {len(inner)} | {_pct(k, len(inner))} |")
    hit = [u for u in inner if norm_words(u.words) != norm_words(u.control)]
    n_c = len(inner)
    print(
        f"| control: the words change with the inner pauses' lengths zeroed inside speech instead | - | {len(hit)} | {n_c} | {_pct(len(hit), n_c)} |"
    )
    n_pairs = sum(max(0, len(u.words) - 1) for u in per)
    n_touch = sum(b[0] == a[1] for u in per for a, b in zip(u.words, u.words[1:]))
    print()
    print(f"Whisper's words touch (no gap at all) at {n_touch} of {n_pairs} word joins.")
    print()
    diffs = [(u, d) for u in per if (d := edge_diffs(u.labels, u.words)) is not None]
    at0 = sum(u.words[0][0] == 0.0 for u, _ in diffs)
    print("| speech edge: energy label - Whisper (s) | utterances | median abs | P90 abs | median signed |")
    print("|---|---:|---:|---:|---:|")
    for name, rows_, k in (
        ("start - first word start", diffs, 0),
        ("start - first word start, where that is > 0", [(u, d) for u, d in diffs if u.words[0][0] > 0], 0),
        ("end - last word end", diffs, 1),
    ):
        v = np.array([d[k] for _, d in rows_])
        if len(v):
            a = np.abs(v)
            print(f"| {name} | {len(v)} | {np.median(a):.3f} | {np.percentile(a, 90):.3f} | {np.median(v):+.3f} |")
    print(f"Whisper's first word starts at 0.00 s in {at0} of {len(diffs)} utterances (the decoding window's start).")
    no_words = [u.id for u in per if not u.words]
    if no_words:
        print(f"no Whisper words: {', '.join(no_words)}")
    tol_s = tol_ms / 1000
    print()
    print(f"energy pauses with a Whisper word over their middle (tolerance {tol_ms} ms), to listen to:")
    print("| utterance | pause (s) | ms | word-free ms | word(s) over it | word before | word after |")
    print("|---|---|---:|---:|---|---|---|")
    for u in per:
        for p in check_pauses(u.pauses, u.words, tol_s):
            if not p.between:
                print(
                    f"| {u.id} | {p.start:.2f}-{p.end:.2f} | {(p.end - p.start) * 1000:.0f} | {p.free_s * 1000:.0f} | "
                    f"{', '.join(map(_w, p.over))} | {_w(p.before)} | {_w(p.after)} |"
                )
    print()
    print(f"Whisper gaps without an energy pause over their middle (tolerance {tol_ms} ms), to listen to:")
    print("| utterance | gap (s) | ms | between | longest energy silence over the gap (any length) |")
    print("|---|---|---:|---|---:|")
    for u in per:
        for g in check_gaps(u.words, u.pauses, tol_s, silences(u.raw)):
            if not g.found:
                print(
                    f"| {u.id} | {g.prev[1]:.2f}-{g.next[0]:.2f} | {(g.next[0] - g.prev[1]) * 1000:.0f} | "
                    f"{_w(g.prev)} / {_w(g.next)} | {g.longest_silence_s * 1000:.0f} ms |"
                )
    print()
    print("words that change when every labelled non-speech frame is zeroed (recording -> zeroed), to listen to:")
    print("| utterance | recording | zeroed | labelled non-speech within 0.3 s (s) |")
    print("|---|---|---|---|")
    for u in per:
        for a, b in changes(u.words, u.zeroed):
            t0, t1 = min(w[0] for w in a + b), max(w[1] for w in a + b)
            near = [f"{x:.2f}-{y:.2f}" for x, y in silences(u.labels) if _overlaps(x, y, t0 - 0.3, t1 + 0.3)]
            print(
                f"| {u.id} | {', '.join(map(_w, a)) or '-'} | {', '.join(map(_w, b)) or '-'} | {', '.join(near) or '-'} |"
            )
    print()
    print(f"speech edges more than {EDGE_LIST_MS} ms apart:")
    print("| utterance | edge | energy label (s) | Whisper (s) | word |")
    print("|---|---|---:|---:|---|")
    for u, d in diffs:
        span = speech_span(u.labels)
        assert span is not None
        for edge, k, word, t in (("start", 0, u.words[0], u.words[0][0]), ("end", 1, u.words[-1], u.words[-1][1])):
            if abs(d[k]) * 1000 > EDGE_LIST_MS:
                print(f"| {u.id} | {edge} | {span[k]:.2f} | {t:.2f} | {_w(word)} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test-utts", type=int, default=30, help="bench_vad_real's --test-utts (its recorded run: 30)")
    ap.add_argument("--utts", type=int, default=30, help="utterances sampled from that test set, half per corpus")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol-ms", type=int, default=60, help="tolerance at each edge for the listed disagreements")
    ap.add_argument("--threads", type=int, default=1, help="Whisper's CPU threads")
    ap.add_argument("--teacher-dir", type=Path, default=None, help="default: data/teacher (this or the main checkout)")
    ap.add_argument(
        "--words",
        type=Path,
        default=None,
        help="keep Whisper's words here (JSONL); jobs found there are not run again (delete it after changing the labels)",
    )
    args = ap.parse_args(argv)
    if args.utts < 2 or args.test_utts < 2 or args.tol_ms < 0 or args.threads < 1:
        raise SystemExit("bench_vad_labels: --utts and --test-utts need at least 2, --tol-ms >= 0, --threads >= 1")
    py, model = find_teacher(args.teacher_dir)
    t0 = time.perf_counter()
    items = sample(args.test_utts, args.utts, args.seed)
    labelled = []
    jobs: list[tuple[str, Path, str]] = []
    for it in items:
        x = load(*it)
        x = x[: len(x) // FRAME * FRAME]
        lab = label_utterance(x)
        labelled.append((uid(it), lab, label_utterance(x, pause_ms=0)))
        path = CORPORA / it[0] / it[1]
        ctrl = control_spans(lab, [b - a for a, b in label_pauses(lab)])
        jobs += [
            (uid(it), path, ""),
            (uid(it) + "#zeroed", path, json.dumps([list(s) for s in silences(lab)])),
            (uid(it) + "#control", path, json.dumps([list(s) for s in ctrl])),
        ]
    recs: dict[str, dict] = {}
    if args.words is not None and args.words.exists():
        recs = {r["id"]: r for r in map(json.loads, args.words.read_text().splitlines())}
    n_run = len({j for j, _, _ in jobs} - set(recs))
    if n_run:
        with tempfile.TemporaryDirectory() as tmp:
            recs = run_whisper(py, model, jobs, args.threads, args.words or Path(tmp) / "words.jsonl")
    t_whisper = time.perf_counter() - t0
    per = [
        Utt(u, lab, raw, _words(recs[u]), _words(recs[u + "#zeroed"]), _words(recs[u + "#control"]))
        for u, lab, raw in labelled
    ]
    audio_s = sum(len(u.labels) for u in per) * FRAME_S
    n_lj = sum(it[0] == "ljspeech_subset" for it in items)
    print(
        f"sample: {n_lj} LJ Speech + {len(items) - n_lj} philipp of bench_vad_real's test set (--test-utts "
        f"{args.test_utts}), seed {args.seed}, {audio_s:.0f} s; Whisper base (int8, greedy, {args.threads} thread(s), "
        f"word timestamps): {sum(len(u.words) for u in per)} words"
    )
    print()
    print_report(per, args.tol_ms)
    print()
    print(
        f"Whisper on the recording, zeroed and control ({len(jobs)} jobs, {n_run} run now, the rest from --words): "
        f"{t_whisper:.0f} s with the labels, on the shared box."
    )
    print(("command: nice -n 10 .venv/bin/python bench/bench_vad_labels.py " + " ".join(sys.argv[1:])).rstrip())


if __name__ == "__main__":
    main()
