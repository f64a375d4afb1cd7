"""Score a model on the held-out sets, offline against cached streaming, through the project's engine.

    python -m examples.train.evaluate [--model engines/default_model] [--sets data/eval] [--chunk-ms 320]

For every set (``data/eval/*.tsv``, made by ``build_data --stages eval``):

- offline: ``load_model(...).forward(audio)`` on the whole utterance (per-utterance fbank statistics);
- streaming: ``init_state("cached", chunk_ms, left_context_ms, lookahead_ms=0)``, then ``step`` on
  consecutive chunks and ``flush`` (causal running fbank statistics, KV and conv caches);

both decoded greedily with ``engines.tokenizer.CTCTokenizer`` and, when the checkpoint ships an n-gram
LM (``language_model/``, as the default model does; ``--lm none`` to skip), also with the CTC beam
search + LM that the streaming pipeline's finals use (``engines.lm.BeamDecoder``, beam 32, the
checkpoint's alpha/beta). Scored with jiwer (WER, CER over the set). Prints a Markdown table and
writes ``--json``. ``--baseline-model DIR`` scores a second checkpoint (the shipped one) on the same utterances
in the same run and adds the before/after table. The sets include the held-out speechocean762 speakers, adults
and children apart (``so762_adults``, ``so762_children``: 20 speakers of its test split, ``build_data``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import jiwer
import soundfile as sf
import torch

from engines.api import load_model
from engines.lm import BeamDecoder, LMConfig, find_model_lm
from engines.tokenizer import CTCTokenizer

SETS = ["tts_espeak_en-us_f4", "tts_flite_rms", "fsdd_theo", "ljspeech", "so762_adults", "so762_children"]
# the columns of the before/after table (compare()): key -> heading
COMPARE_KEYS = {
    "offline_wer": "offline WER",
    "offline_cer": "offline CER",
    "stream_wer": "streaming WER",
    "stream_cer": "streaming CER",
    "offline_lm_wer": "offline +LM WER",
    "offline_lm_cer": "offline +LM CER",
    "stream_lm_wer": "streaming +LM WER",
    "stream_lm_cer": "streaming +LM CER",
}


def read_set(path: Path, limit: int | None, every: int = 1) -> list[tuple[str, str]]:
    """The set's (audio, text) rows: every ``every``-th row (a subset spread over all speakers of a set sorted by
    speaker), then the first ``limit`` of those."""
    with open(path, newline="") as f:
        rows = [(r["audio"], r["text"]) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    rows = rows[::every]
    return rows[:limit] if limit else rows


def greedy(tok: CTCTokenizer, logits: torch.Tensor) -> str:
    return tok.decode(logits.argmax(-1).tolist())


def stream_logits(model, audio: torch.Tensor, chunk_ms: int, left_ms: int) -> torch.Tensor:
    return model.stream(audio, "cached", chunk_ms=chunk_ms, left_context_ms=left_ms, lookahead_ms=0)


def model_lm_decoder(model_dir: Path, tok: CTCTokenizer, beam_width: int = 32) -> BeamDecoder | None:
    """The checkpoint's own LM decoder (``language_model/``: its LM file and attrs.json alpha/beta), or None."""
    kwargs = find_model_lm(model_dir)
    return None if kwargs is None else BeamDecoder(tok, LMConfig(**kwargs, beam_width=beam_width))


def beam(dec: BeamDecoder, logits: torch.Tensor) -> str:
    return dec.decode_segment(torch.log_softmax(logits.float(), -1).numpy())[0]


def evaluate(
    model_dir: Path,
    sets_dir: Path,
    chunk_ms: int,
    left_ms: int,
    limit: int | None,
    sets: list[str],
    lm: str = "auto",
    every: int = 1,
) -> dict:
    """``lm``: "auto" also decodes with the checkpoint's LM when it has one; "none" only greedily."""
    if lm not in ("auto", "none"):
        raise ValueError(f"lm must be 'auto' or 'none', not {lm!r}")
    torch.set_num_threads(1)
    model = load_model(model_dir)
    tok = CTCTokenizer.from_dir(model_dir)
    dec = model_lm_decoder(model_dir, tok) if lm == "auto" else None
    if dec is not None:
        c = dec.config
        print(f"LM: {c.lm_path} (alpha {c.alpha}, beta {c.beta}, beam {c.beam_width})", file=sys.stderr)
    results = {}
    for name in sets:
        path = sets_dir / f"{name}.tsv"
        if not path.exists():
            print(f"skip {name}: {path} missing (run build_data --stages eval)", file=sys.stderr)
            continue
        refs, off, stm, off_lm, stm_lm = [], [], [], [], []
        audio_s = t_off = t_stm = 0.0
        for wav, text in read_set(path, limit, every):
            audio, rate = sf.read(wav, dtype="float32")
            assert rate == 16000, wav
            x = torch.from_numpy(audio)
            audio_s += x.numel() / 16000
            with torch.inference_mode():
                t = time.perf_counter()
                lo = model.forward(x[None]).frames[0]
                t_off += time.perf_counter() - t
                t = time.perf_counter()
                ls = stream_logits(model, x, chunk_ms, left_ms)
                t_stm += time.perf_counter() - t
            off.append(greedy(tok, lo))
            stm.append(greedy(tok, ls))
            if dec is not None:
                off_lm.append(beam(dec, lo))
                stm_lm.append(beam(dec, ls))
            refs.append(text)
        results[name] = {
            "utterances": len(refs),
            "audio_s": round(audio_s, 1),
            "offline_wer": jiwer.wer(refs, off),
            "offline_cer": jiwer.cer(refs, off),
            "stream_wer": jiwer.wer(refs, stm),
            "stream_cer": jiwer.cer(refs, stm),
            "offline_rtf": t_off / audio_s,
            "stream_rtf": t_stm / audio_s,
            "examples": [{"ref": r, "offline": o, "stream": s} for r, o, s in list(zip(refs, off, stm))[:3]],
        }
        r = results[name]
        if dec is not None:
            r.update(
                {
                    "offline_lm_wer": jiwer.wer(refs, off_lm),
                    "offline_lm_cer": jiwer.cer(refs, off_lm),
                    "stream_lm_wer": jiwer.wer(refs, stm_lm),
                    "stream_lm_cer": jiwer.cer(refs, stm_lm),
                    "lm": {
                        "path": str(dec.config.lm_path),
                        "alpha": dec.config.alpha,
                        "beta": dec.config.beta,
                        "beam_width": dec.config.beam_width,
                    },
                }
            )
            for ex, o, s_ in zip(r["examples"], off_lm, stm_lm):
                ex.update({"offline_lm": o, "stream_lm": s_})
        msg = (
            f"{name}: offline WER {r['offline_wer']:.3f} CER {r['offline_cer']:.3f} | stream WER {r['stream_wer']:.3f} "
            f"CER {r['stream_cer']:.3f}"
        )
        if dec is not None:
            msg += f" | +LM offline CER {r['offline_lm_cer']:.3f} stream CER {r['stream_lm_cer']:.3f}"
        print(f"{msg} ({r['utterances']} utts, {audio_s:.0f} s)", file=sys.stderr, flush=True)
    return results


def table(results: dict, chunk_ms: int, left_ms: int) -> str:
    with_lm = any("offline_lm_cer" in r for r in results.values())
    head = "| set | utts | audio s | offline WER | offline CER | streaming WER | streaming CER |"
    rule = "|---|---|---|---|---|---|---|"
    if with_lm:
        head += " offline +LM WER | offline +LM CER | streaming +LM WER | streaming +LM CER |"
        rule += "---|---|---|---|"
    lines = [head, rule]
    pct = lambda r, k: f"{100 * r[k]:.1f}%" if k in r else "-"  # noqa: E731
    keys = ["offline_wer", "offline_cer", "stream_wer", "stream_cer"]
    if with_lm:
        keys += ["offline_lm_wer", "offline_lm_cer", "stream_lm_wer", "stream_lm_cer"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['utterances']} | {r['audio_s']:.0f} | " + " | ".join(pct(r, k) for k in keys) + " |"
        )
    lines.append(
        f"\nStreaming: cached mode, {chunk_ms} ms chunks, {left_ms} ms left context, no lookahead. Greedy CTC"
        + ("; +LM: beam search with the checkpoint's n-gram LM (the streaming pipeline's finals)." if with_lm else ".")
    )
    return "\n".join(lines)


def compare(baseline: dict, results: dict, keys: list[str] | None = None) -> str:
    """The before/after table: per set and column, the baseline's score -> the model's, and the change in points
    (negative is better). Only sets and columns both runs scored."""
    keys = [k for k in (keys or list(COMPARE_KEYS)) if any(k in r for r in results.values())]
    lines = ["| set | utts | " + " | ".join(COMPARE_KEYS[k] for k in keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, r in results.items():
        b = baseline.get(name)
        if b is None:
            continue
        cells = []
        for k in keys:
            if k in r and k in b:
                cells.append(f"{100 * b[k]:.1f} → {100 * r[k]:.1f} ({100 * (r[k] - b[k]):+.1f})")
            else:
                cells.append("-")
        lines.append(f"| {name} | {r['utterances']} | " + " | ".join(cells) + " |")
    lines.append("\nbaseline → model (change in points, negative is better), the same utterances in the same run.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("engines/default_model"))
    ap.add_argument("--sets-dir", type=Path, default=Path("data/eval"))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--left-context-ms", type=int, default=10240)
    ap.add_argument("--limit", type=int, default=None, help="utterances per set (default: all)")
    ap.add_argument(
        "--every",
        type=int,
        default=1,
        help="score every N-th utterance of each set only (a subset spread over the speakers; applied before --limit)",
    )
    ap.add_argument("--json", type=Path, default=Path("runs/eval.json"))
    ap.add_argument(
        "--lm",
        choices=["auto", "none"],
        default="auto",
        help="auto: also decode with the checkpoint's language_model/ when it has one",
    )
    ap.add_argument(
        "--baseline-model",
        type=Path,
        default=None,
        help="also score this checkpoint (e.g. the shipped model) on the same sets and print the "
        "before/after table; the JSON then holds {'model': ..., 'baseline': ...}",
    )
    args = ap.parse_args(argv)
    sets = args.sets.split(",")
    if args.every < 1:
        ap.error("--every must be at least 1")
    results = evaluate(
        args.model, args.sets_dir, args.chunk_ms, args.left_context_ms, args.limit, sets, lm=args.lm, every=args.every
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.baseline_model is None:
        args.json.write_text(json.dumps(results, indent=1))
        print(table(results, args.chunk_ms, args.left_context_ms))
        return
    base = evaluate(
        args.baseline_model,
        args.sets_dir,
        args.chunk_ms,
        args.left_context_ms,
        args.limit,
        sets,
        lm=args.lm,
        every=args.every,
    )
    args.json.write_text(
        json.dumps(
            {
                "model": results,
                "baseline": base,
                "model_dir": str(args.model),
                "baseline_dir": str(args.baseline_model),
            },
            indent=1,
        )
    )
    print(f"## {args.model}\n\n" + table(results, args.chunk_ms, args.left_context_ms))
    print(f"\n## {args.baseline_model} (baseline)\n\n" + table(base, args.chunk_ms, args.left_context_ms))
    print(f"\n## before/after: {args.baseline_model} → {args.model}\n\n" + compare(base, results))


if __name__ == "__main__":
    sys.exit(main())
