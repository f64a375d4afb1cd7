"""One-command GPU check: parity (cpu-fp32 vs cuda-fp32 vs cuda-fp16) and throughput (N cached streams
batched through step_batch, cpu vs cuda) for the four encoder families.

    python bench/bench_gpu.py [--size base|tiny] [--streams 8] [--seconds 10] [--runs 3]
        [--chunk-ms 640] [--left-context-ms 2560] [--threads 2] [--families a,b,...]

Models are random-init (base size as bench/bench_engines.py builds them, or the tiny test checkpoints
with ``--size tiny``; compute does not depend on the weights). On a machine without CUDA it says so,
skips the CUDA rows, and runs the CPU half: the cpu-fp32 reference, a cpu-fp16 parity row (the same
dtype code paths) and the CPU throughput.

Parity, per family, offline forward and cached streaming (chunk/left context as given) on the same
audio: max |logit diff| against cpu-fp32, that relative to the reference logits' std, the share of frames
whose argmax agrees, and whether the greedy CTC token sequences are equal. TF32 is off, so cuda-fp32
is a float32 computation. Stated tolerance (engines.device): fp32 within 1e-3 of the std, fp16
within 0.04 of it; a row outside is marked FAIL and the exit status is 1.

Throughput: ``--streams`` streams of ``--seconds`` s each, fed chunk by chunk together through
``LoadedModel.step_batch`` (one forward per chunk for all of them), then flushed. RTF = wall seconds /
audio seconds of one stream (all N streams at once: below 1 means N streams keep up in real time);
stream-x = N / RTF (real-time streams this rate sustains). Medians over ``--runs`` after one warm-up
run; ratios are cpu RTF / device RTF.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engines.api import load_model  # noqa: E402
from engines.device import default_dtype, resolve_device  # noqa: E402

SR = 16000
FAMILY_NAMES = {  # bench_engines names (base size) -> model_type
    "wav2vec2-base": "wav2vec2",
    "wavlm-base": "wavlm",
    "conformer-rotary-base": "wav2vec2-conformer",
    "w2v-bert-768x12": "wav2vec2-bert",
}
REL_TOL = {torch.float32: 1e-3, torch.float16: 0.04, torch.bfloat16: 0.25}


def build(name: str, size: str, out: Path) -> Path:
    if size == "tiny":
        from tests import hf_tiny

        return hf_tiny.build_tiny(FAMILY_NAMES[name], "ctc", out)
    import bench_engines

    return bench_engines.build(name, out)


def audio(seconds: float, seed: int) -> torch.Tensor:
    import bench_engines

    x = torch.from_numpy(bench_engines.speech(seconds + seed)).float()
    return x[int(seed * SR) :][: int(seconds * SR)].contiguous()


def cached(model, x: torch.Tensor, chunk_ms: int, left_ms: int) -> torch.Tensor:
    return model.stream(x, "cached", chunk_ms, left_ms, 0)


def tokens(logits: torch.Tensor) -> list[int]:
    ids = logits.argmax(-1).tolist()
    return [t for i, t in enumerate(ids) if t != 0 and (i == 0 or ids[i - 1] != t)]


def compare(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float, bool]:
    diff = (got - ref).abs().max().item()
    std = ref.std().item()
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    return diff, diff / std, agree, tokens(got) == tokens(ref)


def run_streams(model, xs: list[torch.Tensor], chunk_ms: int, left_ms: int) -> int:
    states = [model.init_state("cached", chunk_ms=chunk_ms, left_context_ms=left_ms) for _ in xs]
    feed = chunk_ms * SR // 1000
    frames = 0
    for i in range(0, xs[0].numel(), feed):
        outs, states = model.step_batch([x[i : i + feed] for x in xs], states)
        frames += sum(o.frames.shape[0] for o in outs)
    for st in states:
        frames += model.flush(st).frames.shape[0]
    return frames


def throughput(model, xs: list[torch.Tensor], chunk_ms: int, left_ms: int, runs: int) -> list[float]:
    run_streams(model, [x[: 4 * chunk_ms * SR // 1000] for x in xs], chunk_ms, left_ms)  # warm-up
    walls = []
    for _ in range(runs):
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        t = time.perf_counter()
        run_streams(model, xs, chunk_ms, left_ms)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        walls.append(time.perf_counter() - t)
    return walls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("base", "tiny"), default="base")
    ap.add_argument("--families", default=",".join(FAMILY_NAMES))
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per stream (throughput)")
    ap.add_argument("--parity-seconds", type=float, default=4.0)
    ap.add_argument("--chunk-ms", type=int, default=640)
    ap.add_argument("--left-context-ms", type=int, default=2560)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", help="the accelerator to check (auto: cuda:0 if any)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    print(f"torch {torch.__version__}, cpu threads {args.threads}", end="")
    if cuda:
        print(f", {torch.cuda.get_device_name(dev)} ({dev})")
    else:
        print("\nCUDA: not available here -- skipped the cuda-fp32/cuda-fp16 parity and the cuda throughput;")
        print("running the CPU half (cpu-fp32 reference, a cpu-fp16 parity row, cpu throughput)")
    variants = [(dev, torch.float32), (dev, torch.float16)] if cuda else [(torch.device("cpu"), torch.float16)]
    cpu = torch.device("cpu")
    throughput_rows = [(cpu, default_dtype(cpu))] + ([(dev, torch.float32), (dev, default_dtype(dev))] if cuda else [])

    x = audio(args.parity_seconds, 0)
    xs = [audio(args.seconds, i) for i in range(args.streams)]
    failed = False
    parity, speed = [], []
    tmp = Path(tempfile.mkdtemp())
    for name in args.families.split(","):
        path = build(name, args.size, tmp / name)
        label = name if args.size == "base" else f"{FAMILY_NAMES[name]}-tiny"
        ref_model = load_model(path, device="cpu", dtype=torch.float32)
        ref_off = ref_model.forward(x).frames[0]
        ref_cached = cached(ref_model, x, args.chunk_ms, args.left_context_ms)
        for d, dt in variants:
            m = load_model(path, device=d, dtype=dt)
            for what, got, ref in (
                ("offline", m.forward(x).frames[0], ref_off),
                ("cached", cached(m, x, args.chunk_ms, args.left_context_ms), ref_cached),
            ):
                diff, rel, agree, same = compare(got, ref)
                ok = rel <= REL_TOL[dt]
                failed |= not ok
                parity.append((label, what, f"{d.type}-{str(dt)[6:]}", diff, rel, agree, same, ok))
            del m
        del ref_model
        for d, dt in throughput_rows:
            m = load_model(path, device=d, dtype=dt)
            walls = throughput(m, xs, args.chunk_ms, args.left_context_ms, args.runs)
            speed.append((label, f"{d.type}-{str(dt)[6:]}", walls))
            del m
            if d.type == "cuda":
                torch.cuda.empty_cache()

    print("\n## Parity against cpu-float32\n")
    print("| family | path | run | max abs diff | / ref std | argmax agree | greedy tokens equal | within tol |")
    print("|---|---|---|---|---|---|---|---|")
    for name, what, run, diff, rel, agree, same, ok in parity:
        print(f"| {name} | {what} | {run} | {diff:.2e} | {rel:.2e} | {agree:.4f} | {same} | {'ok' if ok else 'FAIL'} |")
    print(
        "\n(random-init logits have near-ties: one flipped frame changes the greedy tokens; the tolerance is on the diff)"
    )
    print(f"\n## Throughput: {args.streams} cached streams x {args.seconds:g} s through step_batch")
    print(f"chunk {args.chunk_ms} ms, left context {args.left_context_ms} ms; medians of {args.runs} runs\n")
    print("| family | run | wall s (median) | RTF | stream-x | runs (s) | vs cpu |")
    print("|---|---|---|---|---|---|---|")
    cpu_rtf: dict[str, float] = {}
    for name, run, walls in speed:
        med = statistics.median(walls)
        rtf = med / args.seconds
        if run.startswith("cpu"):
            cpu_rtf[name] = rtf
        ratio = f"{cpu_rtf[name] / rtf:.2f}x" if name in cpu_rtf else ""
        shown = ", ".join(f"{w:.2f}" for w in walls)
        print(f"| {name} | {run} | {med:.3f} | {rtf:.3f} | {args.streams / rtf:.1f} | {shown} | {ratio} |")
    print("\ncommand: python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + sys.argv[1:]))
    if failed:
        print("FAIL: a parity row is outside its tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
