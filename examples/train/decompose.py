"""Take the streaming gap apart: greedy CER with each difference between offline and cached streaming
switched on alone (fbank normalisation x attention context).

    python -m examples.train.decompose [--model engines/default_model] [--limit 100] [--chunk 16]

Normalisation: ``utterance`` (offline, the HF extractor), ``running`` (causal, from zero), and, if the
checkpoint carries one, ``prior`` (causal, started from its training-set statistics: what cached mode
runs). Attention: full context, or the chunk mask of ``--chunk`` stacked frames (16 = 320 ms) with
unlimited left context, which cached mode is exact against. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import soundfile as sf
import torch

from engines.api import load_model
from examples.train import features
from examples.train.evaluate import SETS, read_set
from examples.train.train import decode_ids, edit_distance, forward


def cer(module, rows, norm: str, chunk: int | None, prior) -> float:
    errors = chars = 0
    for wav, text in rows:
        audio, rate = sf.read(wav, dtype="float32")
        assert rate == 16000, wav
        wave = torch.from_numpy(audio)[None]
        with torch.inference_mode():
            feats, frames = features.features(wave, torch.tensor([wave.shape[1]]), norm, prior)
            logits, _ = forward(module, feats, frames, chunk, None)
        errors += edit_distance(text, decode_ids(logits[0].argmax(-1).tolist()))
        chars += len(text)
    return errors / max(1, chars)


def columns(model, chunk: int) -> list[tuple[str, str, int | None]]:
    """(column name, features normalisation mode, chunk or None for full context), offline first."""
    norms = [("utterance", "utterance"), ("running", "cumulative")]
    if model.module.fbank_prior is not None:
        norms.append(("prior", "prior"))
    return [(f"{name}, full", mode, None) for name, mode in norms] + [
        (f"{name}, {chunk * 20} ms", mode, chunk) for name, mode in norms
    ]


def decompose(model, rows, chunk: int) -> dict[str, float]:
    """Column name -> greedy CER over ``rows`` ((wav path, reference) pairs)."""
    return {col: cer(model.module, rows, mode, c, model.module.fbank_prior) for col, mode, c in columns(model, chunk)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("engines/default_model"))
    ap.add_argument("--sets-dir", type=Path, default=Path("data/eval"))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=16, help="chunk in stacked 20 ms frames")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    cols = columns(model, args.chunk)
    print("| set | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name in args.sets.split(","):
        path = args.sets_dir / f"{name}.tsv"
        if not path.exists():
            print(f"skip {name}: {path} missing (run build_data --stages eval)", file=sys.stderr)
            continue
        rows = read_set(path, args.limit)
        vals = decompose(model, rows, args.chunk)
        print(f"| {name} ({len(rows)}) | " + " | ".join(f"{100 * v:.1f}" for v in vals.values()) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
