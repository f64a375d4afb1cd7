"""Copy training runs' weights as one fp16 file each, for a device's return trip or a carry (<= 16 MiB a file).

    python -m examples.train.snapshot runs/sweep/light runs/sweep/full --out $OUT/snap

Each run folder ``R`` becomes ``OUT/<R's name>.safetensors`` (fp16) and ``OUT/<R's name>.tgz`` (log.txt,
stdout.log, dev.json, train_config.json, fbank_prior.json, whichever exist). Weights are read while training may be
writing them: a file that does not load is retried once, after a second, and otherwise skipped with a message.
With ``--as-run``, the one run is instead written as a folder OUT that ``train.py --resume`` takes
(``weights_0.safetensors`` in fp16, and the run's json and log files). With ``--from-model``, the one argument is
an exported HF-layout checkpoint (e.g. ``engines/default_model``), written as such a folder (fp32 weights, its
``speechstream_fbank_prior`` as ``fbank_prior.json``, a ``train_config.json`` with seed 1234 and 300 dev
utterances, as stages c-f used): how Session 9 resumed the shipped model.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
import time
from pathlib import Path

from examples.train.train import read_weights

META = ("log.txt", "stdout.log", "dev.json", "train_config.json", "fbank_prior.json")


def half_state(run: Path) -> dict:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in read_weights(run).items()}


def run_from_model(model_dir: Path, out: Path, seed: int = 1234, dev_utts: int = 300) -> Path:
    """An exported checkpoint as a run folder that ``train.py --resume`` and ``train.load_run`` take."""
    import json

    from safetensors.torch import load_file

    from examples.train.train import MODEL_CONFIG, VOCAB, save_weights_dict

    cfg = json.loads((model_dir / "config.json").read_text())
    model = {k: cfg.get(k, v) for k, v in MODEL_CONFIG.items()}
    out.mkdir(parents=True, exist_ok=True)
    save_weights_dict(load_file(str(model_dir / "model.safetensors")), out)
    prior = json.loads((model_dir / "preprocessor_config.json").read_text())["speechstream_fbank_prior"]
    (out / "fbank_prior.json").write_text(json.dumps(prior))
    (out / "train_config.json").write_text(
        json.dumps(
            {
                "model": model,
                "vocab": VOCAB,
                "from_model": str(model_dir),
                "args": {"seed": str(seed), "dev_utts": str(dev_utts)},
            },
            indent=1,
        )
    )
    return out


def main(argv: list[str] | None = None) -> None:
    from safetensors.torch import save_file

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--as-run", action="store_true", help="write the one run as a resumable folder OUT")
    ap.add_argument(
        "--from-model", action="store_true", help="the one argument is an exported checkpoint: write it as a run OUT"
    )
    args = ap.parse_args(argv)
    if args.from_model:
        if len(args.runs) != 1:
            raise SystemExit("--from-model takes one checkpoint")
        print(run_from_model(args.runs[0], args.out))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.as_run and len(args.runs) != 1:
        raise SystemExit("--as-run takes one run")
    for run in args.runs:
        sd = None
        for attempt in range(2):
            try:
                sd = half_state(run)
                break
            except Exception as exc:  # noqa: BLE001 - a half-written file while training saves
                if attempt:
                    print(f"skipped {run}: {exc}")
                else:
                    time.sleep(1.0)
        if sd is None:
            continue
        if args.as_run:
            save_file(sd, str(args.out / "weights_0.safetensors"))
            for name in META:
                if (run / name).is_file():
                    shutil.copy(run / name, args.out / name)
        else:
            save_file(sd, str(args.out / f"{run.name}.safetensors"))
            with tarfile.open(args.out / f"{run.name}.tgz", "w:gz") as tar:
                for name in META:
                    if (run / name).is_file():
                        tar.add(run / name, arcname=name)
        print(
            f"{run} -> {args.out}: {len(sd)} tensors, {sum(v.numel() for v in sd.values()) / 1e6:.2f} M params (fp16)"
        )


if __name__ == "__main__":
    main()
