"""Hostile-client soak of ``speechstream serve``: well-behaved real-time clients beside abuse.

    .venv/bin/python bench/bench_ws_hostile.py [--model default|small-random|DIR] [--clients 2] [--drops 300]

The server runs as its own process (``python -m speechstream.cli serve --port 0 --idle-timeout 5``),
exactly as a user starts it. Here, on loopback:

1. warm-up (model load, first chunks), then a **quiet run**: ``--clients`` well-behaved clients
   stream ``examples/hello.wav`` (17 s, 4 sentences) in 20 ms PCM16 frames at real-time pace
   (the client of ``bench_ws_load.py``); this is the peer the hostile run is compared with;
2. RSS and open fds of the server: **before** (warm baseline);
3. the **hostile run**: the same well-behaved clients again, and at the same time
   - fuzzers: ``--fuzzers`` connections x 500 malformed frames (random bytes, odd lengths,
     NaN/inf float32, broken JSON, unknown controls), half of them then vanish;
   - idle holders: ``--idle`` connections that send ``start`` and then nothing;
   - abrupt drops: ``--drops`` streams that send 1 s of audio unpaced and vanish (TCP reset),
     4 at a time;
   - a bulk uploader: the clip unpaced in 20 ms frames, then ``end``;
   - a client that never reads: streams the clip at real-time pace and never reads;
   RSS and fds sampled every 0.25 s (**during**: the peak);
4. every hostile connection gone, 3 s later: RSS and fds **after**.

Prints the finals the well-behaved clients received (against the sentences), their latency
against the quiet run (ratio), what each abuser got back (close codes), and RSS / fds before,
during and after, with the ratio after / before. Everything is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import websockets
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ws_load import CLIP, FRAME, REPO, SR, Server, client, clip_pcm, pct, resolve_model, sentences  # noqa: E402

IDLE_TIMEOUT_S = 5.0


def proc_stats(pid: int) -> tuple[float, int]:
    """(RSS MB, open fds) of the server process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    def __init__(self, pid: int):
        self.pid = pid
        self.peak_rss = 0.0
        self.peak_fds = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            rss, fds = proc_stats(self.pid)
            self.peak_rss, self.peak_fds = max(self.peak_rss, rss), max(self.peak_fds, fds)
            await asyncio.sleep(0.25)

    def __enter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()


async def _drain(ws) -> list[dict]:
    out = []
    try:
        async for m in ws:
            out.append(json.loads(m))
    except websockets.ConnectionClosed:
        pass
    return out


async def fuzzer(url: str, seed: int, n: int = 500) -> str:
    r = random.Random(seed)
    try:
        async with connect(url, max_size=None, compression=None) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "start",
                        "sample_rate_hz": r.choice([8000, 16000, 48000]),
                        "format": r.choice(["s16", "f32"]),
                    }
                )
            )
            drain = asyncio.create_task(_drain(ws))
            for _ in range(n):
                k = r.random()
                if k < 0.5:
                    frame: bytes | str = r.randbytes(r.choice([1, 3, 7, 64, 333, 2048, 5000]))
                elif k < 0.7:
                    frame = np.array([r.choice([np.nan, np.inf, 1e9, 0.5])] * 8, dtype="<f4").tobytes()
                elif k < 0.9:
                    frame = r.choice(
                        [
                            '{"type":',
                            "null",
                            "[]",
                            '{"type":"start"}',
                            '{"type":"set_speakers"}',
                            json.dumps({"type": r.random()}),
                            "x" * 5000,
                        ]
                    )
                else:
                    frame = r.randbytes(r.randint(0, 300)).decode("latin-1")
                await ws.send(frame)
            if r.random() < 0.5:
                await ws.send(json.dumps({"type": "end"}))
                await asyncio.wait_for(drain, 60)
                return f"close {ws.close_code}"
            drain.cancel()
            ws.transport.abort()
            return "vanished"
    except websockets.ConnectionClosed as exc:
        return f"closed by server {exc.rcvd.code if exc.rcvd else None}"


async def idle_holder(url: str) -> str:
    t0 = time.monotonic()
    async with connect(url, compression=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate_hz": SR}))
        try:
            events = await asyncio.wait_for(_drain(ws), IDLE_TIMEOUT_S + 90)
        except asyncio.TimeoutError:
            return f"NOT closed within {IDLE_TIMEOUT_S + 90:g} s"
        codes = [e.get("code") for e in events if e["type"] == "error"]
        return f"{ws.close_code} {ws.close_reason!r} {codes} after {round(time.monotonic() - t0):.0f} s"


async def dropper(url: str, pcm: bytes, n: int, concurrency: int = 4) -> int:
    one_s = pcm[: SR * 2]

    async def one() -> None:
        ws = await connect(url, compression=None)
        await ws.send(json.dumps({"type": "start", "sample_rate_hz": SR}))
        await ws.recv()
        for k in range(0, len(one_s), 2 * FRAME):
            await ws.send(one_s[k : k + 2 * FRAME])
        ws.transport.abort()

    done = 0
    while done < n:
        k = min(concurrency, n - done)
        await asyncio.gather(*(one() for _ in range(k)))
        done += k
        await asyncio.sleep(0.01)
    return done


async def bulk_uploader(url: str, pcm: bytes) -> dict:
    t0 = time.monotonic()
    async with connect(url, compression=None, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate_hz": SR}))
        await ws.recv()
        drain = asyncio.create_task(_drain(ws))
        for k in range(0, len(pcm), 2 * FRAME):
            await ws.send(pcm[k : k + 2 * FRAME])
        await ws.send(json.dumps({"type": "end"}))
        events = await asyncio.wait_for(drain, 120)
    return {
        "finals": sum(e["type"] == "final_transcript" for e in events),
        "eos": bool(events) and events[-1]["type"] == "end_of_stream",
        "errors": sum(e["type"] == "error" for e in events),
        "s": time.monotonic() - t0,
        "audio_s": len(pcm) / 2 / SR,
    }


async def never_reader(url: str, pcm: bytes, hold_s: float) -> str:
    """Streams the clip over and over at real-time pace (so it is never idle) and never reads."""
    ws = await connect(url, compression=None, max_queue=1, ping_interval=None)
    await ws.send(json.dumps({"type": "start", "sample_rate_hz": SR}))
    t0 = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - t0 < hold_s:
            k = sent % len(pcm)
            await ws.send(pcm[k : k + 2 * FRAME])
            sent += 2 * FRAME
            await asyncio.sleep(max(0.0, t0 + sent / 2 / SR - time.monotonic()))
    except websockets.ConnectionClosed:
        pass
    stopped = time.monotonic() - t0
    await asyncio.wait_for(_drain(ws), 60)  # now read what is there: events, then the close frame
    # It reads only now, long after the server's close frame: it finds a reset (1006) unless it
    # read within the close timeout; the server's side of the story is in its log (printed).
    return f"cut after {stopped:.1f} s, then read: close {ws.close_code} {ws.close_reason!r}"


async def well_behaved(url: str, n: int, pcm: bytes, segments, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return list(await asyncio.gather(*(client(url, pcm, rng.uniform(0, 1.0), segments) for _ in range(n))))


def summary(results: list[dict], n_segments: int) -> dict:
    fl = [x for r in results for x in r["final"]]
    fp = [x for r in results for x in r["first_partial"]]
    return {
        "finals": len(fl),
        "expected": n_segments * len(results),
        "missing": sum(r["missing_finals"] for r in results),
        "fl50": pct(fl, 0.5),
        "fl95": pct(fl, 0.95),
        "fp50": pct(fp, 0.5),
        "fp95": pct(fp, 0.95),
        "errors": sum(len(r["errors"]) for r in results),
        "overflow": sum(r["overflow"] for r in results),
    }


async def run(args, url: str, pid: int, pcm: bytes, segments) -> None:
    await well_behaved(url, 1, pcm[: SR * 2 * 3], [], 0)  # warm-up
    quiet = summary(await well_behaved(url, args.clients, pcm, segments, 1), len(segments))
    await asyncio.sleep(3.0)
    before = proc_stats(pid)

    t0 = time.monotonic()
    with Sampler(pid) as sampler:
        good = asyncio.create_task(well_behaved(url, args.clients, pcm, segments, 1))
        if args.only_drops:
            abuse = ([], [], await dropper(url, pcm, args.drops), None, None)
        else:
            abuse = await asyncio.gather(
                asyncio.gather(*(fuzzer(url, 1000 + i) for i in range(args.fuzzers))),
                asyncio.gather(*(idle_holder(url) for _ in range(args.idle))),
                dropper(url, pcm, args.drops),
                bulk_uploader(url, pcm),
                never_reader(url, pcm, hold_s=40.0),
            )
        hostile = summary(await good, len(segments))
        hostile_s = time.monotonic() - t0
        # every hostile connection is gone once the server holds only its listening socket again
        for _ in range(120):
            if proc_stats(pid)[1] <= before[1]:
                break
            await asyncio.sleep(0.25)
    await asyncio.sleep(3.0)
    after = proc_stats(pid)
    fuzz, idle, drops, bulk, never = abuse

    print(f"\nwell-behaved clients: {args.clients} x {CLIP.name} ({len(segments)} sentences each), real-time pace")
    print(
        "| run | finals received / sentences | missing | errors | drops | first partial P50 / P95 (s) | finalisation P50 / P95 (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in (("quiet", quiet), ("hostile", hostile)):
        print(
            f"| {name} | {r['finals']} / {r['expected']} | {r['missing']} | {r['errors']} | {r['overflow']} | "
            f"{r['fp50']:.2f} / {r['fp95']:.2f} | {r['fl50']:.2f} / {r['fl95']:.2f} |"
        )
    print(
        f"finalisation P50 hostile / quiet: x{hostile['fl50'] / quiet['fl50']:.2f}; "
        f"P95: x{hostile['fl95'] / quiet['fl95']:.2f}"
    )
    if args.only_drops:
        print(f"\nabusers ({hostile_s:.0f} s): {drops} abrupt drops only")
    else:
        print(
            f"\nabusers ({hostile_s:.0f} s): {args.fuzzers} fuzzers x 500 frames -> {sorted(set(fuzz))}; "
            f"{args.idle} idle holders -> {sorted(set(idle))}; {drops} abrupt drops; "
            f"bulk uploader {bulk['audio_s']:.1f} s of audio unpaced -> {bulk['finals']} finals, "
            f"end_of_stream {'yes' if bulk['eos'] else 'NO'}, {bulk['errors']} errors, {bulk['s']:.1f} s; "
            f"never-reading client -> {never}"
        )
    print("\n| server | before | during (peak) | after | after / before |")
    print("|---|---|---|---|---|")
    print(f"| RSS MB | {before[0]:.0f} | {sampler.peak_rss:.0f} | {after[0]:.0f} | {after[0] / before[0]:.2f} |")
    print(f"| open fds | {before[1]} | {sampler.peak_fds} | {after[1]} | {after[1] / before[1]:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model dir, 'default' or 'small-random'")
    ap.add_argument("--clients", type=int, default=2, help="well-behaved real-time clients")
    ap.add_argument("--drops", type=int, default=300, help="abruptly dropped streams")
    ap.add_argument("--fuzzers", type=int, default=2, help="fuzzing connections, 500 malformed frames each")
    ap.add_argument("--idle", type=int, default=8, help="idle holders")
    ap.add_argument(
        "--only-drops",
        action="store_true",
        help="abrupt drops only, server started without --idle-timeout: runs against an older "
        "checkout too (PYTHONPATH=/path/to/it), as the peer of a fixed server",
    )
    args = ap.parse_args()
    if not (1 <= args.clients <= 16 and 0 <= args.drops <= 2000 and 0 <= args.fuzzers <= 32 and 0 <= args.idle <= 64):
        ap.error("bounded soak: clients 1-16, drops 0-2000, fuzzers 0-32, idle 0-64")

    _, pcm = clip_pcm()
    segments = sentences()

    load = os.getloadavg()[0]
    checkout = REPO
    with tempfile.TemporaryDirectory() as tmp:
        model, desc = resolve_model(args.model, Path(tmp))
        checkout = Path(os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or REPO).resolve()
        extra = [] if args.only_drops else ["--idle-timeout", str(IDLE_TIMEOUT_S)]
        with Server(model, extra, cwd=checkout) as server:
            assert server.proc is not None
            asyncio.run(run(args, server.url, server.proc.pid, pcm, segments))
            slow = [line.strip() for line in server.log if "slow consumer" in line]
            print(f"server log, slow consumers: {slow or 'none'}")
    serve = "" if args.only_drops else f" --idle-timeout {IDLE_TIMEOUT_S:g}"
    print(f"\nmodel: {desc}; server: speechstream serve{serve} (other settings default), code from {checkout}")
    print(
        f"machine: {os.cpu_count()} CPUs, 1-min load average {load:.1f} before / {os.getloadavg()[0]:.1f} after "
        f"(other processes share the CPUs)"
    )
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
