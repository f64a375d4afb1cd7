"""Where finalisation latency goes, per utterance (``bench_finals.py --part breakdown``).

For each utterance, the final that eval scores (the first whose words reach within 0.5 s of the
end of speech) is traced back to the VAD end that closed it, and its latency is split into four
parts that add up to eval's figure exactly:

- (a) classifier lag: the energy end of speech (``speech_extent``: the last 20 ms frame within 30 dB
  of the peak) -> the first classifier non-speech frame of the silence run that ended the segment;
- (b) min silence: that frame -> the sample where the segmenter confirmed the end (the
  ``min_silence_ms`` rule, its frame quantisation, and any backdating);
- (c) delivery: that sample's stream time -> the wall time the ``SpeechEnded`` left the VAD node
  (source block pacing, resampler, the VAD's executor);
- (d) recogniser: that -> the wall time of the final event, split into (d1) waiting in the
  recogniser's input edge, (d2) its batch lock and the drain of the chunks queued before the end,
  (d3) the VAD-end step (peek forward + LM decode + final), or with decoding ahead (the default) the
  wait for that step, started at the VAD's pause hint, to finish, and (d4) the rest (emit; a cut the
  peek could not reach waits for the next chunk here).

(a) and (b) come from the same segmenter run again offline on the same padded audio (it is
deterministic); (c) and (d) from wall-clock stamps taken in the running graph (``time.monotonic``,
the event loop's clock).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import speechstream.eval as ev
from speechstream.eval import EvalConfig, _load_audio, _pct, evaluate, read_manifest, speech_extent
from stream.events import Endpoint, FinalTranscript, SpeechEnded
from stream.vad import End, Segmenter

RATE = 16000
PARTS = ("a", "b", "c", "d", "d1", "d2", "d3", "d4")
NAMES = {
    "a": "(a) energy end -> first non-speech frame of the final run (classifier lag)",
    "b": "(b) -> end confirmed (min silence + frame quantisation)",
    "c": "(c) confirm sample -> SpeechEnded leaves the VAD (pacing, resampler, executor)",
    "d": "(d) -> final event (recogniser)",
    "d1": "(d1) of which: waiting in the recogniser's input edge",
    "d2": "(d2) of which: batch lock + drain of the chunks queued before the end",
    "d3": "(d3) of which: VAD-end step (peek + LM decode + final), or the wait for the one started ahead",
    "d4": "(d4) of which: after the step (emit; a cut waiting for the next chunk)",
    "total": "total (eval's finalisation latency)",
}


def trace_segmenter(seg: Segmenter, x: np.ndarray, block: int) -> list[tuple[int, int, int]]:
    """(first classifier non-speech frame of the run, confirm sample, End.sample) of each End."""
    trace: list[tuple[int, int, int]] = []
    orig = seg._frame
    run: list[int | None] = [None]

    def frame(st: dict[str, Any], speech: bool, out: list[Any], db: Any = 0.0) -> None:
        f0 = st["pos"]
        run[0] = None if speech else (f0 if run[0] is None else run[0])
        n = len(out)
        orig(st, speech, out, db)
        for o in out[n:]:
            if isinstance(o, End):
                trace.append((run[0] if run[0] is not None else f0, st["pos"], o.sample))

    orig_tail = seg._quiet_tail

    def quiet_tail(st: dict[str, Any], out: list[Any]) -> None:  # an End between frames: confirmed at its sample
        confirm = None if st["run_start"] is None else st["run_start"] + max(seg.min_silence, 1)
        n = len(out)
        orig_tail(st, out)
        for o in out[n:]:
            if isinstance(o, End) and confirm is not None:
                trace.append((run[0] if run[0] is not None else st["pos"], confirm, o.sample))

    seg._frame, seg._quiet_tail = frame, quiet_tail  # type: ignore[method-assign]
    try:
        st = seg.init_state()
        for p in range(0, len(x), block):
            _, st = seg.step(x[p : p + block], st)
    finally:
        del seg._frame, seg._quiet_tail
    return trace


@contextlib.contextmanager
def _stamps() -> Iterator[dict[str, Any]]:
    """Patch eval's graph to record wall times: batches' events, VAD ends, recogniser steps."""
    from stream.recognizer import Recognizer
    from stream.vad_node import VadNode

    rec: dict[str, Any] = {"batches": [], "vad_end": {}, "proc": {}, "step": [], "taken": {}}
    orig_batch, orig_emit = ev._stream_batch, VadNode._emit
    orig_proc, orig_vad_end, orig_taken = Recognizer.process, Recognizer._vad_end, Recognizer._taken_ahead

    async def stream_batch(batch, *a, **kw):  # type: ignore[no-untyped-def]
        out = await orig_batch(batch, *a, **kw)
        rec["batches"].append(out)
        return out

    async def emit(self, sid, outputs):  # type: ignore[no-untyped-def]
        for o in outputs:
            await orig_emit(self, sid, [o])
            if isinstance(o, End):
                rec["vad_end"][(sid, o.sample)] = time.monotonic()

    async def process(self, event):  # type: ignore[no-untyped-def]
        if isinstance(event, SpeechEnded):
            rec["proc"][(event.stream_id, event.sample)] = time.monotonic()
        await orig_proc(self, event)

    def vad_end(self, st, sample):  # type: ignore[no-untyped-def]
        t = time.monotonic()
        out = orig_vad_end(self, st, sample)
        rec["step"].append((sample, t, time.monotonic()))
        return out

    def taken(self, sid, state, sample):  # type: ignore[no-untyped-def]
        out = orig_taken(self, sid, state, sample)
        if out is not None:  # the VAD-end work started at the pause hint is used
            rec["taken"][(sid, sample)] = time.monotonic()
        return out

    ev._stream_batch, VadNode._emit = stream_batch, emit  # type: ignore[assignment]
    Recognizer.process, Recognizer._vad_end = process, vad_end  # type: ignore[method-assign]
    Recognizer._taken_ahead = taken  # type: ignore[method-assign]
    try:
        yield rec
    finally:
        ev._stream_batch, VadNode._emit = orig_batch, orig_emit  # type: ignore[assignment]
        Recognizer.process, Recognizer._vad_end = orig_proc, orig_vad_end  # type: ignore[method-assign]
        Recognizer._taken_ahead = orig_taken  # type: ignore[method-assign]


def measure(cfg: EvalConfig, vad_factory: Callable[[], Any] | None = None) -> dict[str, list[float]]:
    """One eval run of ``cfg`` with the stamps on; per-utterance parts in seconds, and ``reasons``."""
    items = read_manifest(cfg.manifest, cfg.limit)
    patch = (
        contextlib.nullcontext()
        if vad_factory is None
        else _patched(EvalConfig, "vad_node", lambda self: vad_factory())  # type: ignore[arg-type]
    )
    with patch, _stamps() as rec:
        evaluate(cfg, log=lambda m: None)
        seg = cfg.vad_node().segmenter
    timed: dict[str, Any] = {}
    t0s: dict[str, float] = {}
    for events, starts, _ in rec["batches"]:
        timed.update(events)
        t0s.update(starts)
    parts: dict[str, list[float]] = {k: [] for k in (*PARTS, "total")}
    reasons: dict[str, int] = {}
    ahead = 0
    pad = np.zeros(cfg.pad_silence_ms * RATE // 1000, np.float32)
    for i, (audio, _) in enumerate(items):
        sid, x = f"u{i}", _load_audio(audio)
        end = speech_extent(x)[1]
        events = timed[sid]
        finals = [(t, e) for t, e in events if isinstance(e, FinalTranscript) and e.text]
        if not finals:
            continue
        t_fin, fin = next(((t, e) for t, e in finals if e.end_sample >= end - 8000), finals[-1])
        reason = next(e.reason for _, e in events if isinstance(e, Endpoint) and e.segment_id == fin.segment_id)
        reasons[reason] = reasons.get(reason, 0) + 1
        t0 = t0s[sid]
        parts["total"].append(t_fin - (t0 + end / RATE))
        if reason != "vad":
            continue
        ends = sorted((t, s) for (s_id, s), t in rec["vad_end"].items() if s_id == sid and t <= t_fin)
        t_vad, sample = ends[-1]
        tr = {e: (r, c) for r, c, e in trace_segmenter(seg, np.concatenate([x, pad]), cfg.block_ms * 16)}
        run, confirm = tr[sample]
        t_in = rec["proc"][(sid, sample)]
        t_take = rec["taken"].get((sid, sample))
        if t_take is not None:  # decoded ahead: the step ran (or still runs) from before t_in
            ahead += 1
            done = max(b for s, a, b in rec["step"] if s == sample and a <= t_take)
            s0, s1 = t_take, max(done, t_take)
        else:
            s0, s1 = min((a, b) for s, a, b in rec["step"] if s == sample and a >= t_in)
        for k, v in (
            ("a", (run - end) / RATE),
            ("b", (confirm - run) / RATE),
            ("c", t_vad - (t0 + confirm / RATE)),
            ("d", t_fin - t_vad),
            ("d1", t_in - t_vad),
            ("d2", s0 - t_in),
            ("d3", s1 - s0),
            ("d4", t_fin - s1),
        ):
            parts[k].append(v)
    parts["reasons"] = [float(reasons.get(k, 0)) for k in ("vad", "silence", "max_length", "eos")]
    parts["ahead"] = [float(ahead), float(len(parts["d"]))]
    return parts


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def breakdown(manifest: Path, utts: int, variants: list[tuple[str, dict[str, Any], Callable[[], Any] | None]]) -> None:
    print(
        f"held-out LJ Speech, first {utts} utterances of ljspeech_test; 4 streams at once, real time, 20 ms blocks; "
        f"bundled model, cached 640 ms chunks, beam 32 + LM finals; load average at start {os.getloadavg()[0]:.1f}"
    )
    results = []
    for name, kw, factory in variants:
        t = time.perf_counter()
        results.append((name, measure(EvalConfig.from_flat(manifest=manifest, limit=utts, **kw), factory)))
        print(f"({name}: {time.perf_counter() - t:.0f} s)", flush=True)
    print()
    print("| part, ms P50 / P95 | " + " | ".join(n for n, _ in results) + " |")
    print("|---|" + "---|" * len(results))
    for k in (*PARTS, "total"):
        cells = []
        for _, p in results:
            v = p[k]
            cells.append(f"{1000 * _pct(v, 0.5):.0f} / {1000 * _pct(v, 0.95):.0f}" if v else "-")
        print(f"| {NAMES[k]} | " + " | ".join(cells) + " |")
    print(
        "| endpoint of the scored final: vad / silence / max_length / eos | "
        + " | ".join(" / ".join(f"{c:.0f}" for c in p["reasons"]) for _, p in results)
        + " |"
    )
    print(
        "| VAD ends whose step was started at the pause hint (decoded ahead) / all | "
        + " | ".join(f"{p['ahead'][0]:.0f} / {p['ahead'][1]:.0f}" for _, p in results)
        + " |"
    )
    print()
    print("(a)-(d) over the utterances whose scored final came from a VAD end; each part's P50 on its own,")
    print("so the parts' P50s need not add up to the total's. CPU: the shared 2-core box (see the load average).")
