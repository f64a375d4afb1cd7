"""Greedy vs beam + LM WER on held-out text through a SIMULATED acoustic model.

    .venv/bin/python bench/bench_lm_wer.py --lm data/lm/lm.arpa [--error-rate 0.15] [--alpha 0.5 --beta 1.0]

Stand-in for the real measurement until a trained model exists (``speechstream eval`` does the
real one). The LJ Speech subset transcripts (held out: never in the LM text) are spelled into CTC
posteriors frame by frame, 1-3 frames per character with blanks between, as in
bench_decode.py; then, with probability ``--error-rate`` per character, the acoustic evidence
is confused: a wrong letter takes the top probability (0.40-0.65) and the true letter keeps the
second (0.20-0.35). Greedy decoding reads the wrong letter; beam search with the LM can recover
it from the word context. alpha/beta are chosen on the dev third of LJ (every third utterance)
and reported on the other two thirds.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.lm import BeamDecoder, LMConfig  # noqa: E402
from engines.tokenizer import CTCTokenizer  # noqa: E402

CORPORA = Path(os.environ.get("SPEECHSTREAM_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora"))
LABELS = ["<pad>", "<unk>", "|", "'"] + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # the default model's vocabulary
TOK = CTCTokenizer(labels=tuple(LABELS), bos_token=None, eos_token=None)
ID = {c: i for i, c in enumerate(LABELS)}
LETTERS = [ID[c] for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]


def posteriors(text: str, error_rate: float, rng: np.random.Generator) -> np.ndarray:
    V = len(LABELS)
    rows: list[np.ndarray] = []

    def row(dist: dict[int, float]) -> np.ndarray:
        x = np.full(V, (1 - sum(dist.values())) / (V - len(dist)))
        for k, p in dist.items():
            x[k] = p
        return np.log(x)

    for ch in text:
        tok = ID["|"] if ch == " " else ID[ch]
        if tok in LETTERS and rng.random() < error_rate:
            wrong = int(rng.choice([t for t in LETTERS if t != tok]))
            dist = {wrong: rng.uniform(0.40, 0.65), tok: rng.uniform(0.20, 0.35)}
        else:
            dist = {tok: rng.uniform(0.85, 0.99)}
        rows += [row(dist)] * int(rng.integers(1, 4))
        rows += [row({0: rng.uniform(0.9, 0.999)})] * int(rng.integers(0, 3))
    return np.stack(rows).astype(np.float32)


def main() -> None:
    import jiwer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lm", required=True)
    ap.add_argument("--error-rate", type=float, default=0.15)
    ap.add_argument("--alphas", default="0.3,0.5,0.8,1.2,2")
    ap.add_argument("--betas", default="0,1,2")
    ap.add_argument("--beam-width", type=int, default=32)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with open(CORPORA / "ljspeech_subset" / "manifest.tsv", newline="") as f:
        rows = sorted(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE), key=lambda r: r["audio"])
    texts = [r["text"] for r in rows]
    lps = [posteriors(t, args.error_rate, rng) for t in texts]
    dev = [i for i in range(len(texts)) if i % 3 == 0]
    test = [i for i in range(len(texts)) if i % 3]

    def wer(idx: list[int], hyps: list[str]) -> float:
        return float(jiwer.wer([texts[i] for i in idx], hyps))

    base = BeamDecoder(TOK, LMConfig(lm_path=args.lm, beam_width=args.beam_width))
    grid = []
    for a in map(float, args.alphas.split(",")):
        for b in map(float, args.betas.split(",")):
            dec = base.reweighted(a, b)
            grid.append((wer(dev, dec.decode_many([lps[i] for i in dev])), a, b))
    dev_wer, alpha, beta = min(grid)
    best = base.reweighted(alpha, beta)
    greedy = [TOK.decode(lps[i].argmax(-1).tolist()) for i in test]
    nolm = BeamDecoder(TOK, LMConfig(beam_width=args.beam_width)).decode_many([lps[i] for i in test])
    with_lm = best.decode_many([lps[i] for i in test])
    print(
        f"# simulated acoustic model, {100 * args.error_rate:.0f}% of letters confused; LJ Speech test "
        f"({len(test)} held-out sentences); alpha {alpha:g}, beta {beta:g} chosen on dev ({len(dev)}, WER {100 * dev_wer:.2f}%)"
    )
    print("| decoder | WER | CER |\n|---|---|---|")
    refs = [texts[i] for i in test]
    for name, hyps in (
        ("greedy", greedy),
        (f"beam {args.beam_width}, no LM", nolm),
        (f"beam {args.beam_width} + 3-gram LM", with_lm),
    ):
        print(f"| {name} | {100 * jiwer.wer(refs, hyps):.2f}% | {100 * jiwer.cer(refs, hyps):.2f}% |")
    print("command: .venv/bin/python bench/bench_lm_wer.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
