"""Diagnostics for a trained run (a folder ``train.py`` or ``soup.py`` wrote): where its errors are.

    python -m examples.train.probe voices RUN [--pack data/pack]
    python -m examples.train.probe warp RUN data/eval/tts_flite_rms.tsv [--factors 0.9,1,1.1] [--limit 100]

``voices``: greedy CER on the run's own dev split (``train.dev_split``, seed and size from its
train_config.json), full context with per-utterance normalisation, one row per training voice (all
espeak-ng variants in one row). It tells a voice the model has not learned well from one it has
never heard: the dev utterances are sentences held out of training, read by training voices.

``warp``: greedy CER on a held-out manifest with the spectrum warped at test time by each factor
(``features.vtlp_matrix``: > 1 moves formants up, as a shorter vocal tract). If one factor reads a
voice much better than 1, the voice's vocal-tract length is what the model misses; if none does,
it is something else.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from examples.train import train as T


def voice_group(utt: dict) -> str:
    """The row an utterance counts in: its voice, except that every espeak-ng variant shares one."""
    return "espeak (all variants)" if utt["source"] == "espeak" else utt["voice"]


def by_voice(run: Path, pack: Path) -> list[tuple[str, int, float]]:
    model, cfg = T.load_run(run)
    args = cfg["args"]
    audio, utts = T.load_pack(pack, None, min(4, os.cpu_count() or 1))
    dev, _ = T.dev_split(utts, int(args.get("seed", 1234)), int(args.get("dev_utts", 300)))
    groups: dict[str, list[int]] = defaultdict(list)
    for i in dev:
        groups[voice_group(utts[i])].append(i)
    cpu = torch.device("cpu")
    return [
        (name, len(idx), T.greedy_cer(model, audio, utts, idx, cpu, "utterance", None, None))
        for name, idx in sorted(groups.items())
    ]


def manifest_as_pack(rows: list[tuple[str, str]]) -> tuple[torch.Tensor, list[dict]]:
    """(audio path, text) rows (``evaluate.read_set``) of 16-bit clips as ``train.load_pack`` returns a pack:
    one int16 tensor and the utterances."""
    import soundfile as sf

    clips = [sf.read(path, dtype="int16")[0] for path, _ in rows]
    starts = np.cumsum([0] + [len(c) for c in clips])
    utts = [{"start": int(s), "n": len(c), "text": text} for s, c, (_, text) in zip(starts, clips, rows)]
    return torch.from_numpy(np.concatenate(clips)), utts


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=2)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("voices", help="dev CER per training voice", parents=[common])
    v.add_argument("run", type=Path)
    v.add_argument("--pack", type=Path, default=Path("data/pack"))
    w = sub.add_parser("warp", help="held-out CER under test-time spectral warps", parents=[common])
    w.add_argument("run", type=Path)
    w.add_argument("manifest", type=Path)
    w.add_argument("--factors", default="0.9,0.95,1,1.05,1.1,1.15")
    w.add_argument("--limit", type=int, default=100)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cmd == "voices":
        print(f"# dev CER by training voice, {args.run} (greedy, full context, per-utterance normalisation)")
        print("| voice | dev utts | CER |\n|---|---:|---:|")
        for name, count, cer in by_voice(args.run, args.pack):
            print(f"| {name} | {count} | {100 * cer:.1f} % |")
    else:
        from examples.train.evaluate import read_set

        rows = read_set(args.manifest, args.limit)
        audio, utts = manifest_as_pack(rows)
        model = T.load_run(args.run)[0].eval()
        print(
            f"# {args.manifest} ({len(rows)} utts), {args.run}: greedy CER, full context, spectrum warped at test time"
        )
        print("| warp | CER |\n|---:|---:|")
        for factor in (float(x) for x in args.factors.split(",")):
            cer = T.greedy_cer(
                model,
                audio,
                utts,
                list(range(len(utts))),
                torch.device("cpu"),
                "utterance",
                None,
                None,
                warp=None if factor == 1.0 else factor,
            )
            print(f"| {factor:g} | {100 * cer:.1f} % |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
