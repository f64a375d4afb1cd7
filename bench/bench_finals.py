"""Captions on time: finalisation latency, segment lengths and sentence joins, old settings beside new.

Part ``latency``: ``speechstream.eval.evaluate`` (the ``speechstream eval`` pipeline: paced source ->
Resample -> VAD -> Recognizer, 4 streams at once, the bundled model, beam 32 + its 3-gram LM on the
finals) on the first ``--utts`` utterances of held-out LJ Speech (``ljspeech_test``: rows i % 3 != 0
of ``../shared/corpora/ljspeech_subset``), each paced in real time and followed by 2 s of silence.
Finalisation latency = wall time of the final covering the end of speech minus the moment the end
of speech (energy, 30 dB below the loudest 20 ms frame) was delivered. Each setting runs in the
same process, one after the other, on the same utterances:

- ``old``: the settings before this change (webrtc aggressiveness 2, pad 200 / hangover 200 /
  min speech 90 / min silence 400 ms, CTC rule 2 at 1.2 s, the final waits for the engine's chunk)
  and ``eval``'s old 100 ms source blocks: today's figure;
- ``old, 20 ms blocks``: the same with the microphone's 20 ms blocks (eval's new default);
- ``before backdating``: webrtc 3, 100 / 100 / 60 / 150 ms, rule 2 at 0.5 s, peek at the VAD end, 20 ms blocks;
- ``new``: the new defaults (the same with min silence 180 ms counted from the energy fall, backdate 90 ms,
  the hangover counted from there too, and the VAD end's work started at the VAD's pause hint: decoding
  ahead), 20 ms blocks;
- ``new, no decoding ahead`` (the VAD end's work done at the ``SpeechEnded``);
- ``new, 100 ms blocks``; ``new, silero``.

Part ``segments``: the first ``--files`` held-out LJ Speech files read back to back (each file whole,
as recorded, with its own leading and trailing silence; LJ's files are trimmed tight, so a join has
only ~0.13 s of silence: ``--join-pause-s`` adds silence after each, as a reader pausing between
sentences would), unpaced, old and new settings. Reports
the distribution of final (segment) lengths, how many of the joins between files (sentence ends)
became segment boundaries (an endpoint inside the silence between the two files' speech, +-0.1 s),
and how many boundaries fell inside a file (pauses inside LJ's multi-clause sentences, or max length).

    .venv/bin/python bench/bench_finals.py --part latency --utts 12
    .venv/bin/python bench/bench_finals.py --part segments --files 40 [--join-pause-s 0.3]
    .venv/bin/python bench/bench_finals.py --part profile --utts 12   # the recogniser's work at a VAD end
    .venv/bin/python bench/bench_finals.py --part breakdown --utts 12 --variants before,default,frames10  # finals_breakdown.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from speechstream.eval import EvalConfig, _load_audio, _pct, evaluate, speech_extent  # noqa: E402

CORPORA = next(
    (p for p in (ROOT.parent / "shared" / "corpora", ROOT.parent.parent / "shared" / "corpora") if p.is_dir()),
    ROOT.parent / "shared" / "corpora",
)
OLD = dict(
    vad_pre_speech_pad_ms=200,
    vad_hangover_ms=200,
    vad_min_speech_ms=90,
    vad_min_silence_ms=400,
    vad_aggressiveness=2,
    peek_at_vad_end=False,
    decode_ahead=False,
    rule2_min_trailing_silence_ms=1200,
)


def lj_test_manifest(out: Path) -> Path:
    with open(CORPORA / "ljspeech_subset" / "manifest.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    test = [r for i, r in enumerate(rows) if i % 3]
    out.write_text(
        "audio\ttext\n" + "".join(f"{CORPORA / 'ljspeech_subset' / r['audio']}\t{r['text']}\n" for r in test)
    )
    return out


def latency(manifest: Path, utts: int) -> None:
    settings = [
        ("old (today: webrtc 2, 200/200/90/400 ms, final waits for the chunk), 100 ms blocks", dict(OLD, block_ms=100)),
        ("old, 20 ms blocks", dict(OLD, block_ms=20)),
        (
            "before backdating (webrtc 3, 100/100/60/150 ms, peek at VAD end), 20 ms blocks",
            dict(vad_min_silence_ms=150, decode_ahead=False),
        ),
        ("new defaults (webrtc 3, 100/100/60/180 ms, backdate 90 ms, peek, decoding ahead), 20 ms blocks", {}),
        ("new defaults without decoding ahead, 20 ms blocks", dict(decode_ahead=False)),
        ("new defaults, 100 ms blocks", dict(block_ms=100)),
        ("new defaults, silero (0.7, 100/100/60/200 ms), 20 ms blocks", dict(vad="silero")),
    ]
    print(
        f"held-out LJ Speech, first {utts} utterances of ljspeech_test; 4 streams at once, real time; bundled model, "
        f"cached 640 ms chunks, beam 32 + bundled LM finals; load average at start {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| setting | final latency P50 / P95 | first partial P50 | streaming WER | finals | RTF |")
    print("|---|---|---|---|---:|---:|")
    for name, kw in settings:
        with _no_backdate(name.startswith(("old", "before"))):
            r = evaluate(EvalConfig.from_flat(manifest=manifest, limit=utts, **kw), log=lambda m: None)
        fls = [u.final_latency_s for u in r.utterances if u.final_latency_s is not None]
        fps = [u.first_partial_latency_s for u in r.utterances if u.first_partial_latency_s is not None]
        n = sum(len(u.endpoint_reasons) for u in r.utterances)
        print(
            f"| {name} | {1000 * _pct(fls, 0.5):.0f} / {1000 * _pct(fls, 0.95):.0f} ms | {1000 * _pct(fps, 0.5):.0f} ms | "
            f"{100 * r.streaming[0]:.1f} % | {n} | {r.rtf:.3f} |",
            flush=True,
        )
    print()
    print("CPU: the shared 2-core box with other work running (see the load average): wall-clock latencies are")
    print("pessimistic; compare the rows (same run, same utterances).")


async def _run_pipeline(
    x: np.ndarray, kw: dict, rule2_ms: int | None = None, vad_factory: Callable[[], Any] | None = None
) -> list:
    from stream.config import default_model_dir
    from stream.events import Endpoint, FinalTranscript
    from stream.graph import Graph
    from stream.node import Collect
    from stream.recognizer import Recognizer, RecognizerConfig
    from stream.resample import Resample
    from stream.sources.array import ArraySource

    cfg = EvalConfig.from_flat(manifest=Path("."), **kw)
    rcfg = RecognizerConfig(
        peek_at_vad_end=cfg.recognizer.peek_at_vad_end,
        max_utterance_ms=cfg.recognizer.max_utterance_ms,
        rule2_min_trailing_silence_ms=rule2_ms or cfg.recognizer.rule2_min_trailing_silence_ms,
    )
    collect = Collect(keep_audio=False)
    graph = Graph(
        [ArraySource(x, 16000, stream_id="lj", block=1600)],
        [Resample(), (vad_factory or cfg.vad_node)(), Recognizer(str(default_model_dir()), rcfg), collect],
        bug_policy="raise",
    )
    await graph.run(timeout_s=900)
    out = []
    events = collect.events
    for i, e in enumerate(events):
        if isinstance(e, FinalTranscript) and e.text:
            ep = next(f for f in events[i + 1 :] if isinstance(f, Endpoint) and f.segment_id == e.segment_id)
            out.append((e, ep))
    return out


def segments(
    manifest: Path,
    files: int,
    join_pause_s: float,
    noise_snr_db: float | None,
    rule2_ms: int,
    only: str | None,
    variants: tuple[tuple[str, dict[str, Any], Callable[[], Any] | None], ...] = (),
) -> None:
    rows = manifest.read_text().splitlines()[1 : files + 1]
    pause = np.zeros(int(join_pause_s * 16000), np.float32)
    audios = [np.concatenate([_load_audio(Path(r.split("\t")[0])), pause]) for r in rows]
    x = np.concatenate(audios)
    if noise_snr_db is not None:  # real room tone under everything (see bench_vad_real.py)
        from bench_vad_real import room_tone

        tone = room_tone()
        level = np.sqrt(np.mean(x.astype(np.float64) ** 2)) / 10 ** (noise_snr_db / 20)
        x = (x + np.tile(tone, -(-len(x) // len(tone)))[: len(x)] * level).astype(np.float32)
        print(f"room tone from speechocean762 added at {noise_snr_db:.0f} dB SNR (against the whole signal)")
    joins, pos = [], 0
    for i, a in enumerate(audios[:-1]):
        s0, e0 = speech_extent(a)
        s1, _ = speech_extent(audios[i + 1])
        joins.append((pos + e0, pos + len(a) + s1))
        pos += len(a)
    gaps = [(b - a) / 16000 for a, b in joins]
    extra = f" with {join_pause_s:.2f} s of silence added after each" if join_pause_s else ""
    print(
        f"{files} held-out LJ Speech files back to back{extra}: {len(x) / 16000:.0f} s, {len(joins)} joins; silence at the joins "
        f"(speech end to next speech start) P10 / P50 / P90 {np.percentile(gaps, 10):.2f} / {np.percentile(gaps, 50):.2f} / "
        f"{np.percentile(gaps, 90):.2f} s"
    )
    print()
    print(
        "| setting | finals | length P10 / P50 / P90 / max (s) | joins that became boundaries | boundaries inside a file | "
        "max-length cuts | wall s |"
    )
    print("|---|---:|---|---|---:|---:|---:|")
    if rule2_ms:
        print(f"CTC rule 2 (trailing silence after speech) at {rule2_ms} ms in every row")
    rows_: list[tuple[str, dict[str, Any], Callable[[], Any] | None]] = [
        ("old (webrtc 2, 200/200/90/400 ms)", OLD, None),
        ("before backdating (webrtc 3, 100/100/60/150 ms)", dict(vad_min_silence_ms=150), None),
        ("new defaults (webrtc 3, 100/100/60/180 ms, backdate 90 ms)", {}, None),
        ("new defaults, silero", dict(vad="silero"), None),
    ]
    rows_ = [r for r in rows_ if not only or only in r[0]]  # --only picks among these; --variants add rows
    for name, kw, factory in rows_ + [v for v in variants if v[2] is not None]:
        t0 = time.perf_counter()
        with _no_backdate(name.startswith(("old", "before"))):
            finals = asyncio.run(_run_pipeline(x, kw, rule2_ms, factory))
        wall = time.perf_counter() - t0
        lens = [(f.end_sample - f.sample) / 16000 for f, _ in finals]
        cuts = [ep.sample for _, ep in finals[:-1]]
        hit = sum(any(a - 1600 <= c <= b + 1600 for c in cuts) for a, b in joins)
        inside = sum(not any(a - 1600 <= c <= b + 1600 for a, b in joins) for c in cuts)
        maxlen = sum(ep.reason == "max_length" for _, ep in finals)
        print(
            f"| {name} | {len(finals)} | {np.percentile(lens, 10):.1f} / {np.percentile(lens, 50):.1f} / "
            f"{np.percentile(lens, 90):.1f} / {max(lens):.1f} | {hit} of {len(joins)} | {inside} | {maxlen} | {wall:.0f} |",
            flush=True,
        )
    print()
    print("length = first word start to last word end of each final with text; a boundary is a final's endpoint.")


def profile(manifest: Path, utts: int) -> None:
    """Where the new defaults' latency goes: the recogniser's work at each VAD end, timed in place."""
    import stream.recognizer as rec_mod
    from engines.lm import BeamDecoder

    times: dict[str, list[float]] = {
        "peek forward (LoadedModel.flush)": [],
        "LM beam decode of a segment": [],
        "whole VAD-end step (peek + decode + final)": [],
    }
    lm_orig, vad_orig = BeamDecoder.decode_segment, rec_mod.Recognizer._vad_end

    def lm(self, lp):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = lm_orig(self, lp)
        times["LM beam decode of a segment"].append(time.perf_counter() - t)
        return out

    def vad_end(self, st, sample):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        flush = type(self.model).flush

        def timed_flush(state):  # type: ignore[no-untyped-def]
            t1 = time.perf_counter()
            out = flush(self.model, state)
            times["peek forward (LoadedModel.flush)"].append(time.perf_counter() - t1)
            return out

        self.model.flush = timed_flush
        try:
            return vad_orig(self, st, sample)
        finally:
            del self.model.flush
            times["whole VAD-end step (peek + decode + final)"].append(time.perf_counter() - t)

    BeamDecoder.decode_segment, rec_mod.Recognizer._vad_end = lm, vad_end
    try:
        r = evaluate(EvalConfig(manifest=manifest, limit=utts), log=lambda m: None)
    finally:
        BeamDecoder.decode_segment, rec_mod.Recognizer._vad_end = lm_orig, vad_orig
    fls = [u.final_latency_s for u in r.utterances if u.final_latency_s is not None]
    print(
        f"new defaults, first {utts} of ljspeech_test, real time, 4 at once; load average {os.getloadavg()[0]:.1f}; "
        f"finalisation P50 {1000 * _pct(fls, 0.5):.0f} ms"
    )
    print()
    print("| recogniser work at a VAD end | n | P50 | P95 |")
    print("|---|---:|---:|---:|")
    for k, v in times.items():
        if v:
            print(f"| {k} | {len(v)} | {1000 * _pct(v, 0.5):.0f} ms | {1000 * _pct(v, 0.95):.0f} ms |")
    print("(the LM row also holds eval's offline pass, one decode per utterance)")


def _vad(frame_ms: int = 30, energy_ms: int | None = None, **timing: int) -> Callable[[], Any]:
    """A factory of webrtc VAD nodes at the defaults but ``frame_ms``, the backdating's energy sub-frame
    (``energy_ms``; the frame: whole frames, as before 10 ms sub-frames) and the VadConfig fields given."""

    def make() -> Any:
        from stream.vad import DEFAULT_VAD_CONFIGS, Segmenter, make_segmenter
        from stream.vad_node import VadNode

        seg = make_segmenter("webrtc", dataclasses.replace(DEFAULT_VAD_CONFIGS["webrtc"], **timing), frame_ms=frame_ms)
        if energy_ms is not None:
            seg = Segmenter(seg.clf, seg.config, energy_ms=energy_ms)
        return VadNode(seg)

    return make


VARIANTS: dict[str, tuple[str, dict[str, Any], Callable[[], Any] | None]] = {
    "default": ("defaults (backdate 90 ms on 10 ms energy, min silence 180, decoding ahead)", {}, None),
    "energy30": ("the same with 30 ms energy frames (before 10 ms sub-frames)", {}, _vad(energy_ms=30)),
    "noahead": ("the same without decoding ahead", {"decode_ahead": False}, None),
    "before": (
        "before: min silence 150, no backdating",
        {"decode_ahead": False},
        _vad(backdate_max_ms=0, min_silence_ms=150),
    ),
    "frames10": ("webrtc 10 ms frames (150, no backdating)", {}, _vad(10, backdate_max_ms=0, min_silence_ms=150)),
    "backdate": ("backdate 90 ms / 30 dB, min silence 150", {}, _vad(min_silence_ms=150)),
    "f10backdate30": (
        "10 ms frames, backdate 30 ms, min silence 150",
        {},
        _vad(10, backdate_max_ms=30, min_silence_ms=150),
    ),
    "f10backdate170": ("10 ms frames, backdate 90 ms, min silence 170", {}, _vad(10, min_silence_ms=170)),
    "f10backdate180": ("10 ms frames, backdate 90 ms, min silence 180", {}, _vad(10)),
    "backdate200": ("backdate 90 ms / 30 dB, min silence 200", {}, _vad(min_silence_ms=200)),
}


@contextlib.contextmanager
def _no_backdate(on: bool) -> Iterator[None]:
    """The webrtc default without backdating (the old rows: it did not exist)."""
    from stream.vad import DEFAULT_VAD_CONFIGS

    saved = DEFAULT_VAD_CONFIGS["webrtc"]
    if on:
        DEFAULT_VAD_CONFIGS["webrtc"] = dataclasses.replace(saved, backdate_max_ms=0)
    try:
        yield
    finally:
        DEFAULT_VAD_CONFIGS["webrtc"] = saved


def _variants(names: str) -> list[tuple[str, dict[str, Any], Callable[[], Any] | None]]:
    unknown = [n for n in names.split(",") if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return [VARIANTS[n] for n in names.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("latency", "segments", "profile", "breakdown"), required=True)
    ap.add_argument("--utts", type=int, default=12)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--join-pause-s", type=float, default=0.0, help="silence added after each file (segments)")
    ap.add_argument("--noise-snr-db", type=float, default=None, help="real room tone under the audio (segments)")
    ap.add_argument("--rule2-ms", type=int, default=None, help="CTC rule 2 trailing silence in every row (segments)")
    ap.add_argument(
        "--variants",
        default="default",
        help="breakdown (segments: extra rows): comma-separated, of " + ", ".join(VARIANTS),
    )
    ap.add_argument("--only", default=None, help="run only the settings whose name holds this (segments)")
    args = ap.parse_args()
    manifest = lj_test_manifest(Path(os.environ.get("TMPDIR", "/tmp")) / "speechstream_lj_test.tsv")
    t0 = time.perf_counter()
    if args.part == "latency":
        latency(manifest, args.utts)
    elif args.part == "breakdown":
        from finals_breakdown import breakdown

        breakdown(manifest, args.utts, _variants(args.variants))
    elif args.part == "profile":
        profile(manifest, args.utts)
    else:
        segments(
            manifest,
            args.files,
            args.join_pause_s,
            args.noise_snr_db,
            args.rule2_ms,
            args.only,
            _variants(args.variants),
        )
    print(f"run: {time.perf_counter() - t0:.0f} s")
    print("command: .venv/bin/python bench/bench_finals.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
