"""Per-chunk cost of partial decoding strategies, and of the LM final, against open-segment length.

    .venv/bin/python bench/bench_decode.py [--chunk-ms 640] [--repeats 5] [--lm LM.arpa]

Partials can be (a) greedy and incremental (engines.ctc: each frame is decoded once), or
(b) a re-decode of the whole open segment with a bounded beam (pyctcdecode has no incremental
API), with or without the LM.  (b) costs O(segment length) per chunk, so O(n^2) per segment;
this prints the median cost of one chunk's partial at open-segment lengths 1..20 s (20 s is
the max-utterance endpoint), and the cost of the LM final (one beam+LM decode per segment).

Logits are speech-like: LJ Speech sentences spelled into peaky CTC posteriors (1-4 frames per
character, the character's probability log-uniform in 1 - [1e-3, 0.45], the rest mostly on one or two
competitors; 0-2 confident blanks between characters; 20 ms frames), as a trained model emits; beam search
cost depends on how peaky the posteriors are (flat random logits are 30-100x slower, see
ENVIRONMENT.md). The LM is a 3-gram built with examples.lm.lm_build from the training-corpus
transcripts (kathleen + philipp prompts, never LJ Speech). Single thread, CPU-time medians over
repeats (process time, so other processes on a shared machine do not inflate them).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.ctc import EndpointConfig, StreamingCTCDecoder, log_softmax  # noqa: E402
from engines.lm import BeamDecoder, LMConfig  # noqa: E402
from engines.tokenizer import CTCTokenizer  # noqa: E402
from examples.lm.lm_build import build_arpa, write_arpa  # noqa: E402

CORPORA = Path(os.environ.get("SPEECHSTREAM_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora"))
LABELS = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
TOK = CTCTokenizer(labels=tuple(LABELS))
ID = {c: i for i, c in enumerate(LABELS)}


def manifest_texts(folder: str) -> list[str]:
    with open(CORPORA / folder / "manifest.tsv", newline="") as f:
        return [r["text"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def speechlike_logits(texts: list[str], seconds: float, rng: np.random.Generator) -> np.ndarray:
    frames: list[np.ndarray] = []
    n_target = int(seconds * 50)
    V = len(LABELS)

    def frame(idx: int, p: float) -> np.ndarray:
        # the remaining mass goes mostly to one or two competitors (sparse Dirichlet), as in
        # a trained model's confusions, with a floor for everything else
        x = rng.dirichlet(np.full(V, 0.05)) * (1 - p) * 0.99 + (1 - p) * 0.01 / V
        x[idx] += p
        return np.log(x)

    while len(frames) < n_target:
        for ch in rng.choice(texts):
            tok = ID["|"] if ch == " " else ID.get(ch, ID["<unk>"])
            for _ in range(int(rng.integers(1, 4))):
                frames.append(frame(tok, 1 - 10 ** rng.uniform(-3, np.log10(0.45))))
            for _ in range(int(rng.integers(0, 3))):
                frames.append(frame(0, 1 - 10 ** rng.uniform(-4, -1)))
        frames.append(frame(ID["|"], 0.9))
    return np.stack(frames[:n_target]).astype(np.float32)


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.process_time()  # CPU time: robust to other processes on a shared machine
        fn()
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunk-ms", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lm", help="ARPA/binary LM (default: build a 3-gram from the training transcripts)")
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    lj = manifest_texts("ljspeech_subset")
    lm_path = args.lm
    if lm_path is None:
        train = manifest_texts("rhasspy_kathleen") + manifest_texts("dctts_philipp_ljprompts")
        lm_path = str(Path(tempfile.mkdtemp()) / "bench.arpa")
        probs, backoffs = build_arpa([t.split() for t in train], order=3)
        write_arpa(probs, backoffs, lm_path)
    chunk = args.chunk_ms // 20
    lengths_s = [1, 2, 5, 10, 20]
    logits = speechlike_logits(lj, max(lengths_s) + 1, rng)
    lp = log_softmax(logits)

    greedy = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(None, None, 60_000))
    beams = {
        "beam 4, no LM": BeamDecoder(TOK, LMConfig(beam_width=4)),
        "beam 8, no LM": BeamDecoder(TOK, LMConfig(beam_width=8)),
        "beam 8 + LM": BeamDecoder(TOK, LMConfig(lm_path=lm_path, beam_width=8)),
        "beam 32 + LM (final)": BeamDecoder(TOK, LMConfig(lm_path=lm_path, beam_width=32)),
    }
    rows = []
    for L in lengths_s:
        n = L * 50
        # greedy: state holding n - chunk frames of the open segment, then one chunk's step
        st = greedy.init_state()
        _, st = greedy.step(logits[: n - chunk], 0, st)
        g = median_ms(lambda: greedy.step(logits[n - chunk : n], n - chunk, st), args.repeats)
        row = {"open segment": f"{L} s", "greedy (incremental)": g}
        for name, dec in beams.items():
            row[name] = median_ms(lambda: dec.decode_segment(lp[:n]), args.repeats)
        rows.append(row)

    cols = list(rows[0])
    print(f"# per-chunk partial cost, chunk {args.chunk_ms} ms ({chunk} frames), median of {args.repeats}, ms")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join([r[cols[0]]] + [f"{r[c]:.2f}" for c in cols[1:]]) + " |")
    budget = args.chunk_ms
    last = rows[-1]
    print(
        f"\nat a 20 s open segment, one chunk's partial costs: greedy {last['greedy (incremental)']:.2f} ms; "
        f"beam 8 + LM re-decode {last['beam 8 + LM']:.1f} ms "
        f"({last['beam 8 + LM'] / max(last['greedy (incremental)'], 1e-6):.0f}x greedy, "
        f"{100 * last['beam 8 + LM'] / budget:.1f}% of the {budget} ms chunk budget per stream)"
    )
    total_beam = sum(
        median_ms(lambda: beams["beam 8 + LM"].decode_segment(lp[: k * chunk]), 1)
        for k in range(1, 20 * 50 // chunk + 1)
    )
    print(
        f"re-decoding every chunk of one 20 s segment with beam 8 + LM: {total_beam:.0f} ms in all (O(n^2));"
        f" the beam 32 + LM final once: {last['beam 32 + LM (final)']:.1f} ms"
    )
    print("command: .venv/bin/python bench/bench_decode.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
