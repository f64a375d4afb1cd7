"""Cached streaming against the transformers ASR pipeline at the same worst-case latency, on real speech.

    nice .venv/bin/python bench/bench_cached_vs_pipeline.py [--model engines/default_model] [--seconds 60] [--runs 3] [--threads 2]

The pipeline with ``chunk_length_s=C, stride_length_s=(L, R)`` emits a window's centre (C - L - R s)
once its right stride has arrived: a frame waits at most ``C - L`` seconds. Cached mode with a
chunk of ``C - L`` seconds waits at most the same (a frame at a chunk's start waits for the whole
chunk), and keeps its KV cache instead of recomputing L + R seconds of context per window.
Pairs: pipeline (3, 1, 1) vs cached 2000 ms, pipeline (2, 0.5, 0.5) vs cached 1500 ms; both with the
engine's default 5120 ms left context. Cached mode with a lookahead of R ms and a chunk of C ms holds
a frame at most C + R: (1000 + 1000, 1500 + 500) against the 2 s pipeline, (1000 + 500, 500 + 1000)
against the 1.5 s one. Also window mode with the pipeline's exact geometry.

Audio: held-out LJ Speech utterances from ``../shared/corpora`` (one speaker the bundled model never
heard), each decoded on its own, until ``--seconds`` of audio. Greedy CTC for all, so the comparison is
the encoders' context, not the decoder. Prints per setting the CPU-time RTF (median of ``--runs``), the
speed ratio against the pipeline, WER/CER against the references, and the word difference between the
two transcripts (WER of one against the other) and how many utterances come out identical; last, the
word difference against the engine's own offline (whole-utterance, full-context) transcript.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_engines import CORPORA, SR, timed  # noqa: E402  (timed: median wall and CPU seconds)
from engines.api import load_model  # noqa: E402
from engines.tokenizer import CTCTokenizer  # noqa: E402
from speechstream.eval import normalize_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def utterances(seconds: float) -> list[tuple[np.ndarray, str]]:
    import soundfile as sf

    rows = (CORPORA / "ljspeech_subset" / "manifest.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    out, total = [], 0.0
    for line in rows[1:]:
        r = dict(zip(header, line.split("\t")))
        x, sr = sf.read(CORPORA / "ljspeech_subset" / r["audio"], dtype="float32")
        assert sr == SR
        out.append((x, r["text"]))
        total += len(x) / SR
        if total >= seconds:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    import jiwer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "engines" / "default_model"))
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        pipe = pipeline("automatic-speech-recognition", model=args.model, device=-1)
    model = load_model(args.model)
    tok = CTCTokenizer.from_dir(args.model)
    utts = utterances(args.seconds)
    refs = [normalize_text(t) for _, t in utts]
    audio_s = sum(len(x) for x, _ in utts) / SR

    def ours(mode, chunk_ms, left_ms, look_ms=0):
        def run():
            with torch.inference_mode():
                return [
                    tok.decode(model.stream(torch.from_numpy(x), mode, chunk_ms, left_ms, look_ms).argmax(-1).tolist())
                    for x, _ in utts
                ]

        return run

    def theirs(chunk_s=None, stride=None):
        kw = {} if chunk_s is None else {"chunk_length_s": chunk_s, "stride_length_s": stride}

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [pipe(x.copy(), **kw)["text"] for x, _ in utts]

        return run

    def offline():
        with torch.inference_mode():
            return [tok.decode(model.forward(torch.from_numpy(x)[None]).frames[0].argmax(-1).tolist()) for x, _ in utts]

    def score(hyps):
        hyps = [normalize_text(h) for h in hyps]
        return jiwer.wer(refs, hyps), jiwer.cer(refs, hyps)

    rows = []
    _, c_off, t_off = timed(offline, args.runs)
    rows.append(("engine offline (whole utterance)", "-", c_off, "", *score(t_off), "", "", ""))
    for (cl, sl, sr), chunk_ms, splits in (
        ((3, 1, 1), 2000, ((1000, 1000), (1500, 500))),
        ((2, 0.5, 0.5), 1500, ((1000, 500), (500, 1000))),
    ):
        latency = f"{cl - sl:g} s"
        _, c_p, t_p = timed(theirs(cl, (sl, sr)), args.runs)
        d_off = jiwer.wer([normalize_text(x) or "-" for x in t_off], [normalize_text(x) or "-" for x in t_p])
        rows.append(
            (
                f"pipeline chunk {cl} s, stride ({sl}, {sr})",
                latency,
                c_p,
                "1.00x",
                *score(t_p),
                "",
                "",
                f"{100 * d_off:.1f} %",
            )
        )
        settings = [(f"cached {chunk_ms} ms chunk, 5120 ms left", ours("cached", chunk_ms, 5120))]
        # cached with lookahead: a frame waits at most chunk + lookahead, the same worst case
        settings += [
            (f"cached {c} ms chunk + {r} ms lookahead, 5120 ms left", ours("cached", c, 5120, r)) for c, r in splits
        ]
        settings.append(
            (
                f"window {int(sl * 1000)}/{int((cl - sl - sr) * 1000)}/{int(sr * 1000)} ms (pipeline geometry)",
                ours("window", int((cl - sl - sr) * 1000), int(sl * 1000), int(sr * 1000)),
            )
        )
        for label, fn in settings:
            _, c, t = timed(fn, args.runs)
            diff = jiwer.wer([normalize_text(x) or "-" for x in t_p], [normalize_text(x) or "-" for x in t])
            same = sum(normalize_text(a) == normalize_text(b) for a, b in zip(t, t_p))
            d_off = jiwer.wer([normalize_text(x) or "-" for x in t_off], [normalize_text(x) or "-" for x in t])
            rows.append(
                (
                    label,
                    latency,
                    c,
                    f"{c_p / c:.2f}x",
                    *score(t),
                    f"{100 * diff:.1f} %",
                    f"{same}/{len(utts)}",
                    f"{100 * d_off:.1f} %",
                )
            )

    print(
        f"\n{len(utts)} LJ Speech utterances, {audio_s:.0f} s, model {args.model}, {args.threads} threads, "
        f"CPU-time medians of {args.runs} runs, greedy CTC\n"
    )
    print(
        "| setting | worst-case latency | RTF (CPU) | speed vs pipeline | WER | CER | words differing from the pipeline "
        "| identical transcripts | words differing from offline |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, lat, c, ratio, w, ce, diff, same, d_off in rows:
        print(
            f"| {label} | {lat} | {c / audio_s:.3f} | {ratio} | {100 * w:.1f} % | {100 * ce:.1f} % | {diff} | {same} | {d_off} |"
        )
    print(
        f"\ncommand: nice .venv/bin/python bench/bench_cached_vs_pipeline.py {' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
