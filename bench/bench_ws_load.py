"""Load on ``speechstream serve``: N concurrent real-time WebSocket clients on loopback.

    .venv/bin/python bench/bench_ws_load.py [--model DIR|default|base-random] [--ns 1,2,4,8] [--seconds 17]

The server runs as its own process (``python -m speechstream.cli serve --port 0``), exactly as a
user starts it; the clients run here, each streaming ``examples/hello.wav`` (four spoken
sentences with known speech onsets/ends, ``hello.segments.tsv``) in 20 ms PCM16 frames at
real-time pace, then 1.5 s of silence and ``end``. Client starts are staggered over 1 s.

Per reference sentence (the same definitions as ``speechstream eval``):

- first-partial latency: arrival of the first transcript event that covers audio past the
  sentence's onset, minus the moment that onset sample was sent;
- finalisation latency: arrival of the first final whose end reaches the sentence's end
  (within 0.3 s), minus the moment the sentence's last sample was sent.

A load level N "stays real time" when no audio or partial was dropped (no
``queue_overflow``), every stream's ``end_of_stream`` came within ``--max-eos-delay-s`` of
its ``end``, and the P95 finalisation latency is under ``--max-final-p95-s``. The table
prints P50/P95 over all sentences of all clients, and the largest N that stays real time.

``--model default`` uses the bundled model when installed, else ``small-random``: a
W2V-BERT CTC model of the default model's size (hidden 144, 6 layers), random init;
``base-random`` is a base-size wav2vec2 CTC model (95M). Random models are built with
transformers; compute does not depend on the weights, but their transcripts are noise,
so latencies then count any transcript event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "examples" / "hello.wav"
SEGMENTS = REPO / "examples" / "hello.segments.tsv"
SR = 16_000
FRAME = SR // 50


def build_base_random(out: Path) -> Path:
    import torch
    import transformers
    from transformers import Wav2Vec2FeatureExtractor

    transformers.utils.logging.set_verbosity_error()
    vocab = "<pad> <s> </s> <unk> | E T A O N I H S R D L U M W C F G Y P B V K ' X J Q Z".split()
    torch.manual_seed(0)
    model = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(vocab_size=len(vocab))).eval()
    model.save_pretrained(out)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "Wav2Vec2CTCTokenizer", "word_delimiter_token": "|"})
    )
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(out)
    return out


def build_small_random(out: Path) -> Path:
    """A W2V-BERT CTC model of the default model's size class (hidden 144, 6 layers), random init."""
    import torch
    import transformers
    from transformers import SeamlessM4TFeatureExtractor

    transformers.utils.logging.set_verbosity_error()
    vocab = "<pad> <s> </s> <unk> | E T A O N I H S R D L U M W C F G Y P B V K ' X J Q Z".split()
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2BertConfig(
        vocab_size=len(vocab),
        hidden_size=144,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=576,
        output_hidden_size=144,
        conv_depthwise_kernel_size=15,
    )
    transformers.Wav2Vec2BertForCTC(cfg).eval().save_pretrained(out)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "Wav2Vec2CTCTokenizer", "word_delimiter_token": "|"})
    )
    SeamlessM4TFeatureExtractor().save_pretrained(out)
    return out


def resolve_model(name: str, tmp: Path) -> tuple[str, str]:
    """(path given to serve, description)."""
    if name == "default":
        sys.path.insert(0, str(REPO))
        from stream.config import default_model_dir

        found = default_model_dir()
        if found is not None:
            return str(found), f"bundled default model ({found})"
        name = "small-random"
        print("no bundled default model installed: falling back to small-random", file=sys.stderr)
    if name == "small-random":
        return str(
            build_small_random(tmp / "w2v-bert-small-random")
        ), "W2V-BERT 144x6 random-init (default-model size class)"
    if name == "base-random":
        return str(build_base_random(tmp / "w2v2-base-random")), "wav2vec2-base random-init (95M params)"
    return name, name


class Server:
    """``speechstream serve`` in a subprocess, started in ``cwd`` (``python -m`` imports from its
    directory, so ``PYTHONPATH=/path/to/checkout`` with that ``cwd`` runs another checkout's server).
    Its stderr is read to the end after start-up (``log``), so a chatty server never fills the pipe."""

    def __init__(self, model: str, extra: list[str], cwd: Path = REPO):
        self.cwd = cwd
        self.cmd = [
            sys.executable,
            "-m",
            "speechstream.cli",
            "serve",
            "--port",
            "0",
            "--model",
            model,
            "--max-connections",
            "512",
            *extra,
        ]
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        lines = []
        while True:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("serve exited: " + "".join(lines))
            lines.append(line)
            m = re.search(r"WebSocket (ws://\S+)", line)
            if m:
                self.url = m.group(1)
                break
        self.log: list[str] = []  # the server's stderr from here on
        stderr = self.proc.stderr
        threading.Thread(target=lambda: self.log.extend(iter(stderr.readline, "")), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc.stderr.close()


async def client(url: str, pcm: bytes, delay_s: float, segments: list[tuple[int, int]]) -> dict:
    await asyncio.sleep(delay_s)
    n = len(pcm) // 2
    sent_at = np.zeros(n // FRAME + 2)  # wall time at which frame k was sent
    events: list[tuple[float, dict]] = []
    async with connect(url, compression=None, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate_hz": SR, "format": "s16"}))
        json.loads(await ws.recv())  # ready

        async def reader() -> None:
            async for m in ws:
                events.append((time.monotonic(), json.loads(m)))

        rtask = asyncio.create_task(reader())
        t0 = time.monotonic()
        for k, pos in enumerate(range(0, n, FRAME)):
            sent_at[k] = time.monotonic()
            await ws.send(pcm[2 * pos : 2 * (pos + FRAME)])
            await asyncio.sleep(max(0.0, t0 + (pos + FRAME) / SR - time.monotonic()))
        t_end = time.monotonic()
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(rtask, 120)

    def sent(sample: int) -> float:
        return float(sent_at[min(sample // FRAME, len(sent_at) - 1)])

    first_partial, final = [], []
    for start, end in segments:
        fp = next(
            (
                t
                for t, e in events
                if e["type"] in ("partial_transcript", "final_transcript") and e["end_sample"] > start
            ),
            None,
        )
        fl = next(
            (t for t, e in events if e["type"] == "final_transcript" and e["end_sample"] >= end - int(0.3 * SR)), None
        )
        if fp is not None:
            first_partial.append(fp - sent(start))
        if fl is not None:
            final.append(fl - sent(end - 1))
    eos = next((t for t, e in events if e["type"] == "end_of_stream"), None)
    return {
        "first_partial": first_partial,
        "final": final,
        "missing_finals": len(segments) - len(final),
        "overflow": sum(1 for _, e in events if e["type"] == "queue_overflow"),
        "errors": [e for _, e in events if e["type"] == "error"],
        "eos_delay": (eos - t_end) if eos is not None else float("inf"),
        "send_lag": t_end - (t0 + n / SR),  # > 0: the server's back-pressure held the paced sender back
    }


def clip_pcm(seconds: float | None = None) -> tuple[np.ndarray, bytes]:
    """The first ``seconds`` of the clip (all of it: None) and 1.5 s of silence, as float32 samples and PCM16 bytes."""
    x, sr = sf.read(CLIP, dtype="float32", frames=-1 if seconds is None else int(seconds * SR))
    assert sr == SR
    x = np.concatenate([x, np.zeros(int(1.5 * SR), np.float32)])  # trailing silence: endpointing closes the last one
    return x, (np.clip(x, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def sentences(end: int | None = None) -> list[tuple[int, int]]:
    """The clip's reference sentences (start, end sample; ``hello.segments.tsv``) that end by sample ``end``."""
    out = []
    for line in SEGMENTS.read_text().splitlines()[1:]:
        s, e = (int(v) for v in line.split("\t")[:2])
        if end is None or e <= end:
            out.append((s, e))
    return out


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def md_table(header: str, rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: ``header`` (its cells apart by `` | ``, as printed), `|---|` per column, a line per row
    (each cell ``str()``-ed as it is)."""
    cells = header.split(" | ")
    body = [list(r) for r in rows]
    bad = [r for r in body if len(r) != len(cells)]
    if bad:
        raise ValueError(f"a row has {len(bad[0])} cells, the header {len(cells)}: {bad[0]}")
    lines = [f"| {header} |", "|" + "---|" * len(cells)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in body])


async def level(url: str, n: int, pcm: bytes, segments, seed: int) -> dict:
    rng = random.Random(seed)
    results = await asyncio.gather(*(client(url, pcm, rng.uniform(0, 1.0), segments) for _ in range(n)))
    fp = [x for r in results for x in r["first_partial"]]
    fl = [x for r in results for x in r["final"]]
    return {
        "n": n,
        "fp50": pct(fp, 0.5),
        "fp95": pct(fp, 0.95),
        "fl50": pct(fl, 0.5),
        "fl95": pct(fl, 0.95),
        "eos_max": max(r["eos_delay"] for r in results),
        "overflow": sum(r["overflow"] for r in results),
        "missing": sum(r["missing_finals"] for r in results),
        "errors": sum(len(r["errors"]) for r in results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model dir, 'default', 'small-random' or 'base-random'")
    ap.add_argument(
        "--ns", default="1,2,4,8,16", help="client counts to try, ascending (stops after the first failure)"
    )
    ap.add_argument("--seconds", type=float, default=17.0, help="seconds of the clip each client streams")
    ap.add_argument("--max-final-p95-s", type=float, default=2.0)
    ap.add_argument("--max-eos-delay-s", type=float, default=3.0)
    ap.add_argument("--serve-args", default="", help="extra arguments for 'speechstream serve' (e.g. '--chunk-ms 320')")
    args = ap.parse_args()

    x, pcm = clip_pcm(args.seconds)
    segments = sentences(len(x))  # (a sentence may end in the trailing silence)

    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model, desc = resolve_model(args.model, Path(tmp))
        with Server(model, args.serve_args.split()) as server:
            asyncio.run(level(server.url, 1, pcm[: SR * 2 * 3], [], 0))  # warm-up: model load, first chunks
            for n in (int(v) for v in args.ns.split(",")):
                r = asyncio.run(level(server.url, n, pcm, segments, n))
                r["realtime"] = (
                    r["overflow"] == 0
                    and r["eos_max"] <= args.max_eos_delay_s
                    and r["fl95"] <= args.max_final_p95_s
                    and r["missing"] == 0
                )
                rows.append(r)
                print(
                    f"N={n}: {'real time' if r['realtime'] else 'NOT real time'} "
                    f"(final P95 {r['fl95']:.2f} s, EOS delay max {r['eos_max']:.2f} s, drops {r['overflow']})",
                    file=sys.stderr,
                    flush=True,
                )
                if not r["realtime"]:
                    break

    print(
        f"\nmodel: {desc}; clip: {CLIP.name}, {args.seconds:.0f} s + 1.5 s silence per client, {len(segments)} sentences"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after "
        f"(other processes share the CPUs); server: speechstream serve {args.serve_args}".rstrip()
    )
    table = [
        [
            r["n"],
            "yes" if r["realtime"] else "no",
            f"{r['fp50']:.2f} / {r['fp95']:.2f}",
            f"{r['fl50']:.2f} / {r['fl95']:.2f}",
            f"{r['eos_max']:.2f}",
            r["overflow"],
            r["missing"],
        ]
        for r in rows
    ]
    header = "clients | real time | first partial P50 / P95 (s) | finalisation P50 / P95 (s) | EOS delay max (s) | drops | missing finals"
    print("\n" + md_table(header, table))
    ok = [r["n"] for r in rows if r["realtime"]]
    print(f"\nlargest N staying real time: {max(ok) if ok else 0}")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
