"""Average the weights of runs that resumed from one start (a uniform "model soup", Wortsman et al. 2022).

    python -m examples.train.soup runs/default/e/light runs/default/e/full runs/default/e/gentle --out runs/default

Writes ``OUT/weights_*.safetensors`` (fp32), copies the first run's ``train_config.json`` and
``fbank_prior.json`` (the runs must share the model config and the prior), and, unless ``--no-dev``,
scores the average on the same dev split as the runs (their seed and ``--dev-utts``) into ``OUT/dev.json``,
full context and 320 ms chunks, as ``train.py`` does at the end of a run. Stage e of ``run.sh``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch


def average(runs: list[Path]) -> dict[str, torch.Tensor]:
    from examples.train.train import read_weights

    try:
        states = [read_weights(run) for run in runs]
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    keys = set(states[0])
    for run, sd in zip(runs[1:], states[1:]):
        if set(sd) != keys or any(sd[k].shape != states[0][k].shape for k in keys):
            raise SystemExit(f"{run} has another architecture than {runs[0]}: cannot average")
    out = {}
    for k in states[0]:
        if states[0][k].is_floating_point():
            out[k] = (sum(sd[k].float() for sd in states) / len(states)).contiguous()
        else:
            out[k] = states[0][k]
    return out


def main(argv: list[str] | None = None) -> None:
    from examples.train import train as T

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pack", type=Path, default=Path("data/pack"))
    ap.add_argument("--no-dev", action="store_true", help="skip the dev-CER of the average")
    args = ap.parse_args(argv)
    cfgs = [json.loads((r / "train_config.json").read_text()) for r in args.runs]
    if any(c["model"] != cfgs[0]["model"] for c in cfgs):
        raise SystemExit("the runs have different model configs: cannot average")
    priors = {(r / "fbank_prior.json").read_text() for r in args.runs}
    if len(priors) != 1:
        raise SystemExit("the runs carry different fbank priors: cannot average")
    sd = average(args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    T.save_weights_dict(sd, args.out)
    for name in ("train_config.json", "fbank_prior.json"):
        shutil.copy(args.runs[0] / name, args.out / name)
    print(f"averaged {len(args.runs)} runs into {args.out}")
    if args.no_dev:
        return
    run_args = cfgs[0]["args"]
    result = T.score_dev(args.out, args.pack, int(run_args["seed"]), int(run_args["dev_utts"]))
    result["averaged"] = [str(r) for r in args.runs]
    (args.out / "dev.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
