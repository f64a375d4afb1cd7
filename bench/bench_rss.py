"""Memory over a one-hour stream: file source -> resample -> webrtc VAD -> JSONL sink, full speed.

Writes a synthetic one-hour recording to a temporary WAV first, block by block (never
held in memory): a ~40 s pattern of espeak-ng sentences, silences and noise bursts at
48 kHz mono PCM16 (so the resampler works), repeated. Then runs the graph as fast as it
goes and samples this process's RSS (VmRSS) and peak RSS (VmHWM) from /proc/self/status
whenever the stream time at the tail of the graph crosses a minute mark.

    .venv/bin/python bench/bench_rss.py            # 60 minutes
    .venv/bin/python bench/bench_rss.py --minutes 12

Prints a table (stream minute, peak RSS, RSS, wall seconds) and the command.
Peak RSS is reset (``/proc/self/clear_refs``) just before the run.
RSS is "flat" when peak RSS at 60 min is within a few MB of peak RSS at 10 min.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream.events import AudioChunk, EndOfStream, Event, SpeechEnded  # noqa: E402
from stream.graph import Graph  # noqa: E402
from stream.node import FanOut  # noqa: E402
from stream.queues import EdgeSpec  # noqa: E402
from stream.resample import Resample  # noqa: E402
from stream.sources.file import FileSource  # noqa: E402
from stream.vad_node import VadNode  # noqa: E402
from tests.support.tts import espeak_ng, have_espeak  # noqa: E402

RATE = 48_000
SENTENCES = [
    "The meeting has been moved to Thursday afternoon.",
    "Please remember to bring the quarterly report.",
    "We will review the budget and the hiring plan.",
    "Thank you all for coming, see you next week.",
]


def proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset VmHWM to the current RSS
    except OSError:
        pass


def pattern() -> np.ndarray:
    """~40 s at 48 kHz: sentence, 1.5 s silence, 2 s noise burst, ... (float32)."""
    rng = np.random.default_rng(0)
    parts = []
    for i, text in enumerate(SENTENCES):
        speech = (
            espeak_ng(text, speed_wpm=150) if have_espeak() else 0.3 * np.sin(np.arange(48000) / 7).astype(np.float32)
        )
        parts.append(soxr.resample(speech, 16000, RATE, "HQ").astype(np.float32) * 0.8)
        parts.append(np.zeros(int(1.5 * RATE), np.float32))
        parts.append((rng.standard_normal(2 * RATE) * 0.01 * (i + 1)).astype(np.float32))
        parts.append(np.zeros(int(3.0 * RATE), np.float32))
    return np.concatenate(parts)


def write_long_wav(path: Path, minutes: int) -> None:
    block = pattern()
    total = minutes * 60 * RATE
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as f:
        written = 0
        while written < total:
            n = min(block.shape[0], total - written)
            f.write(block[:n])
            written += n


async def run(path: Path, out: Path, marks_min: list[int]) -> tuple[list[tuple[int, float, float, float]], dict]:
    try:
        from sinks.jsonl import JsonlSink
        from sinks.node import SinkNode

        sink_node = SinkNode(JsonlSink(out))
        sink_kind = "sinks.jsonl.JsonlSink"
    except ImportError:  # pragma: no cover - only before sinks/ exists
        raise SystemExit("sinks.jsonl is missing") from None
    rows: list[tuple[int, float, float, float]] = []
    pending = list(marks_min)
    stats = {"segments": 0, "chunks": 0, "sink": sink_kind}
    t0 = time.perf_counter()

    def on_event(e: Event) -> None:
        if isinstance(e, AudioChunk):
            stats["chunks"] += 1
            minute = e.end_sample / 16000 / 60
            while pending and minute >= pending[0]:
                rows.append(
                    (pending.pop(0), proc_status_mb("VmHWM"), proc_status_mb("VmRSS"), time.perf_counter() - t0)
                )
        elif isinstance(e, SpeechEnded):
            stats["segments"] += 1
        elif isinstance(e, EndOfStream):
            stats["eos_sample"] = e.sample

    graph = Graph(
        [FileSource(path, stream_id="long", progress=False)],
        [Resample(), VadNode.create("webrtc"), FanOut([sink_node], edge=EdgeSpec(256, "drop_oldest"))],
        on_event=on_event,
    )
    await graph.run()
    stats["wall_s"] = time.perf_counter() - t0
    return rows, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--keep", action="store_true", help="keep the generated WAV")
    args = ap.parse_args()
    marks = sorted({1, 10, args.minutes} | set(range(10, args.minutes + 1, 10)))
    marks = [m for m in marks if m <= args.minutes]
    with tempfile.TemporaryDirectory(prefix="ss_rss_") as tmp:
        wav = Path(tmp) / "long.wav"
        t = time.perf_counter()
        write_long_wav(wav, args.minutes)
        gen_s = time.perf_counter() - t
        reset_peak_rss()  # so VmHWM measures the run, not the pattern synthesis before it
        rss_before = proc_status_mb("VmRSS")
        rows, stats = asyncio.run(run(wav, Path(tmp) / "events.jsonl", marks))
        lines = sum(1 for _ in open(Path(tmp) / "events.jsonl"))
        if args.keep:
            os.rename(wav, f"/tmp/long_{args.minutes}min.wav")
    print(f"input: {args.minutes} min synthetic, 48 kHz mono PCM16 WAV (written blockwise in {gen_s:.1f} s)")
    print(f"graph: FileSource -> Resample -> VadNode(webrtc) -> FanOut[JSONL sink ({stats['sink']})], full speed")
    print(
        f"RSS before the run: {rss_before:.1f} MB; {stats['segments']} speech segments; {lines} JSONL lines; "
        f"{stats['chunks']} audio chunks; wall {stats['wall_s']:.1f} s "
        f"(x{args.minutes * 60 / stats['wall_s']:.0f} real time)"
    )
    print()
    print("| stream minute | peak RSS (VmHWM) MB | RSS MB | wall s |")
    print("|---:|---:|---:|---:|")
    for minute, hwm, rss, wall in rows:
        print(f"| {minute} | {hwm:.1f} | {rss:.1f} | {wall:.1f} |")
    print()
    print("command: .venv/bin/python bench/bench_rss.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
