"""Diarization error rate of the online diarizer on synthetic conversations.

    .venv/bin/python -m bench.bench_der                    # every scenario, default settings
    .venv/bin/python -m bench.bench_der --right-ms 250     # less lookahead (lower latency)
    .venv/bin/python -m bench.bench_der --write-dir /tmp/der   # also write ref/hyp RTTMs

Pipeline per conversation (``bench/conversations.py``): 20 ms chunks -> the project's webrtc
VAD segmenter (``stream.vad``) -> ``engines.speakers.online`` with the bundled voice encoder,
exactly as the ``stream.diarize`` node drives it.

Two hypotheses are scored with ``pyannote.metrics.DiarizationErrorRate`` (overlap scored):

* ``online``: every sample carries the label it had when it was *first* emitted, i.e. what a
  live viewer saw within the latency bound (later revisions ignored);
* ``final``: the latest revision of every turn.

Collars: pyannote's ``collar`` is the total width removed around each reference boundary, so
``collar=0.5`` is NIST md-eval's +-0.25 s.  Latency: ``right_ms + hop_ms/2 + 10 ms`` is the algorithmic
worst case; the measured column is the 95th percentile, over hops, of (stream time when the hop's
label was first emitted - start of the hop), in *input* stream time, so the upstream VAD's
hold-back (up to 400 ms with its defaults) is included; compute comes on top.

Word attribution (no word timings exist for these recordings): each reference turn's real
transcript (corpus text or TTS prompt) is spread over the turn in proportion to word length; a word counts
as right when the hypothesis speaker at its midpoint (``final``, mapped to the reference names by
pyannote's optimal mapping) is the word's speaker.  This tests the labelling, not the recogniser.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.conversations import SCENARIOS, SR, Conversation, rttm_lines, scenario
from engines.speakers import online
from engines.speakers.clustering import ClusterConfig
from engines.speakers.embedding import VoiceEncoderEmbedder

CHUNK = 320  # 20 ms


class _Timed:
    """Wraps an embedder to count compute time."""

    def __init__(self, inner):
        self.inner = inner
        self.dim = inner.dim
        self.min_samples = inner.min_samples
        self.seconds = 0.0

    def embed(self, audio):
        t = time.perf_counter()
        out = self.inner.embed(audio)
        self.seconds += time.perf_counter() - t
        return out

    def embed_batch(self, windows):
        return np.stack([self.embed(w) for w in windows])


def run_online(conv: Conversation, embedder, config: online.DiarizerConfig, vad_kind: str = "webrtc", enrolled=None):
    """Returns [(input samples fed when emitted, update)].  ``vad_kind="own"``: no upstream VAD,
    the diarizer's own 10 ms voiced-frame detector segments (as ``Diarizer`` placed before ``VadNode``)."""
    from stream.vad import End, Start, make_segmenter

    st = online.init_state(config, enrolled)
    updates: list[tuple[int, online.TurnUpdate]] = []
    fed = 0

    def handle(outputs):
        nonlocal st
        for o in outputs:
            if isinstance(o, Start):
                st = online.speech_start(st, o.sample)
            elif isinstance(o, End):
                ups, st = online.speech_end(st, o.sample, embedder, config)
                updates.extend((fed, u) for u in ups)
            else:
                sample, samples = (o.sample, o.samples) if hasattr(o, "samples") else o
                st = online.feed_audio(st, samples, sample, config)
                ups, st = online.decide(st, embedder, config)
                updates.extend((fed, u) for u in ups)

    audio = conv.audio
    if vad_kind == "own":
        config = dataclasses.replace(config, use_vad_events=False)
        st = online.init_state(config, enrolled)
        for i in range(0, len(audio), CHUNK):
            fed = min(i + CHUNK, len(audio))
            handle([(i, audio[i : i + CHUNK])])
    else:
        seg = make_segmenter(vad_kind)
        vstate = seg.init_state()
        for i in range(0, len(audio), CHUNK):
            fed = min(i + CHUNK, len(audio))
            outs, vstate = seg.step(audio[i : i + CHUNK], vstate)
            handle(outs)
        outs, vstate = seg.flush(vstate)
        handle(outs)
    ups, st = online.flush(st, embedder, config)
    updates.extend((fed, u) for u in ups)
    return updates


def hypotheses(updates, n_samples: int, hop: int):
    """(online segments, final segments, first-emission delays per hop)."""
    final: dict[int, online.TurnUpdate] = {}
    first = np.full(n_samples, -1, np.int32)  # index into labels
    first_time = np.full(n_samples, -1, np.int64)
    labels: list[str] = []
    for t_emit, u in updates:
        if u.turn_id not in final or u.revision > final[u.turn_id].revision:
            final[u.turn_id] = u
        span = slice(u.start, min(u.end, n_samples))
        free = first[span] < 0
        if free.any():
            if u.speaker not in labels:
                labels.append(u.speaker)
            idx = labels.index(u.speaker)
            first[span][free] = idx
            first_time[span][free] = t_emit
    online_segs = []
    i = 0
    while i < n_samples:
        if first[i] < 0:
            i += 1
            continue
        j = i
        while j < n_samples and first[j] == first[i]:
            j += 1
        online_segs.append((i, j, labels[first[i]]))
        i = j
    final_segs = [(u.start, u.end, u.speaker) for u in final.values() if u.end > u.start]
    # delay of each hop's first label = emission time - hop start
    delays = []
    for h in range(0, n_samples, hop):
        if first_time[h] >= 0:
            delays.append((first_time[h] - h) / SR)
    return online_segs, final_segs, np.asarray(delays)


def annotation(segs, uri):
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for k, (s, e, spk) in enumerate(segs):
        ann[Segment(s / SR, e / SR), k] = spk
    return ann


def word_accuracy(conv: Conversation, texts: list[str], hyp_final, mapping) -> tuple[int, int]:
    """Words whose reference speaker equals the mapped hypothesis speaker at their midpoint."""
    n = len(conv.audio)
    lab = np.full(n, "", dtype=object)
    for s, e, spk in hyp_final:
        lab[s : min(e, n)] = mapping.get(spk, spk)
    right = total = 0
    for turn, text in zip(conv.turns, texts):
        words = text.split()
        weights = np.array([len(w) + 1 for w in words], float)
        edges = turn.start + (turn.end - turn.start) * np.concatenate([[0], np.cumsum(weights)]) / weights.sum()
        for k in range(len(words)):
            mid = int((edges[k] + edges[k + 1]) / 2)
            total += 1
            right += int(lab[min(mid, n - 1)] == turn.speaker)
    return right, total


def asr_word_attribution(conv: Conversation, model: str) -> tuple[int, int, int]:
    """The real pipeline (VAD -> Diarizer -> Recognizer -> SpeakerLabeler) on one conversation.

    Every recognised word's speaker (mapped to reference names by pyannote's optimal mapping of
    the run's turns) is compared with the reference speaker that overlaps the word most (the
    nearest reference turn when none does).  Returns (right, words, reference words)."""
    import asyncio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyannote.metrics.diarization import DiarizationErrorRate

    from stream.diarize import diarization_nodes
    from stream.events import FinalTranscript, SpeakerTurn
    from stream.graph import Graph
    from stream.node import Collect
    from stream.recognizer import Recognizer
    from stream.sources.array import ArraySource
    from stream.vad_node import VadNode

    diarizer, labeler = diarization_nodes()
    collect = Collect(keep_audio=False)
    graph = Graph(
        sources=[ArraySource(conv.audio, SR, stream_id=conv.name, block=CHUNK * 8)],
        nodes=[VadNode.create("webrtc"), diarizer, Recognizer(model), labeler, collect],
    )
    asyncio.run(graph.run(timeout_s=3600))
    latest: dict[str, SpeakerTurn] = {}
    for e in collect.events:
        if isinstance(e, SpeakerTurn) and (e.turn_id not in latest or e.revision > latest[e.turn_id].revision):
            latest[e.turn_id] = e
    ref = annotation([(t.start, t.end, t.speaker) for t in conv.turns], conv.name)
    hyp = annotation([(t.sample, t.end_sample, t.speaker) for t in latest.values()], conv.name)
    mapping = DiarizationErrorRate().optimal_mapping(ref, hyp)
    right = total = 0
    for f in (e for e in collect.events if isinstance(e, FinalTranscript)):
        for w in f.words:
            ov = [max(0, min(w.end_sample, t.end) - max(w.start_sample, t.start)) for t in conv.turns]
            k = int(np.argmax(ov))
            if ov[k] == 0:
                mid = (w.start_sample + w.end_sample) // 2
                k = int(np.argmin([min(abs(t.start - mid), abs(t.end - mid)) for t in conv.turns]))
            total += 1
            right += int(mapping.get(w.speaker, w.speaker) == conv.turns[k].speaker)
    return right, total, sum(len(t.text.split()) for t in conv.turns)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--hop-ms", type=int, default=250)
    ap.add_argument("--left-ms", type=int, default=750)
    ap.add_argument("--right-ms", type=int, default=750)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--change-threshold", type=float, default=None)
    ap.add_argument("--max-speakers", type=int, default=None)
    ap.add_argument(
        "--vad", default="webrtc", help="upstream VAD: webrtc | silero | own (diarizer's own voiced-frame gate only)"
    )
    ap.add_argument("--write-dir", type=Path, default=None)
    ap.add_argument(
        "--enroll", action="store_true", help="enroll every voice from one utterance that is not in the conversation"
    )
    ap.add_argument(
        "--asr",
        default=None,
        metavar="MODEL",
        help="also run the recogniser (this model) and score the speaker of every recognised word",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyannote.metrics.diarization import DiarizationErrorRate

    base = online.DiarizerConfig()
    cluster = base.cluster
    if args.threshold is not None:
        cluster = ClusterConfig(
            **{**{f: getattr(cluster, f) for f in cluster.__dataclass_fields__}, "threshold": args.threshold}
        )
    if args.max_speakers is not None:
        cluster = ClusterConfig(
            **{**{f: getattr(cluster, f) for f in cluster.__dataclass_fields__}, "max_speakers": args.max_speakers}
        )
    config = online.DiarizerConfig(
        hop_ms=args.hop_ms,
        left_ms=args.left_ms,
        right_ms=args.right_ms,
        cluster=cluster,
        change_threshold=args.change_threshold if args.change_threshold is not None else base.change_threshold,
    )
    embedder = _Timed(VoiceEncoderEmbedder.load())
    rows = []
    totals = {k: [0.0, 0.0] for k in ("on0", "on25", "on50", "fi0", "fi25", "fi50")}
    words_right = words_total = 0
    all_delays = []
    audio_s = compute_s = 0.0
    for name in args.scenarios.split(","):
        conv = scenario(name)
        texts = [t.text for t in conv.turns]
        embedder.seconds = 0.0
        t0 = time.perf_counter()
        enrolled = None
        if args.enroll:
            from bench.conversations import VOICES, utterance
            from engines.speakers.enrollment import speech_only

            rng = np.random.default_rng(1234)
            enrolled = {
                v: embedder.inner.embed(speech_only(utterance(VOICES[v], rng)[0]))
                for v in sorted({t.speaker for t in conv.turns})
            }
        updates = run_online(conv, embedder, config, args.vad, enrolled)
        wall = time.perf_counter() - t0
        on, fi, delays = hypotheses(updates, len(conv.audio), online._ms(config.hop_ms))
        ref = annotation([(t.start, t.end, t.speaker) for t in conv.turns], name)
        h_on, h_fi = annotation(on, name), annotation(fi, name)
        row = {
            "name": name,
            "dur": conv.duration_s,
            "spk": len({t.speaker for t in conv.turns}),
            "ovl": 100 * conv.overlap_fraction(),
            "nhyp": len({s for *_, s in fi}),
        }
        for tag, hyp in (("on", h_on), ("fi", h_fi)):
            for c, ck in ((0.0, "0"), (0.25, "25"), (0.5, "50")):
                m = DiarizationErrorRate(collar=c, skip_overlap=False)
                d = m(ref, hyp, detailed=True)
                row[tag + ck] = 100 * d["diarization error rate"]
                totals[tag + ck][0] += d["confusion"] + d["missed detection"] + d["false alarm"]
                totals[tag + ck][1] += d["total"]
        mapping = DiarizationErrorRate().optimal_mapping(ref, h_fi)
        r, n = word_accuracy(conv, texts, fi, mapping)
        words_right += r
        words_total += n
        row["words"] = 100 * r / max(n, 1)
        row["rtf"] = wall / conv.duration_s
        row["revs"] = sum(1 for _, u in updates if u.revision > 0)
        rows.append(row)
        all_delays.append(delays)
        audio_s += conv.duration_s
        compute_s += wall
        if args.write_dir:
            args.write_dir.mkdir(parents=True, exist_ok=True)
            (args.write_dir / f"{name}.ref.rttm").write_text(
                "\n".join(rttm_lines(name, [(t.start, t.end, t.speaker) for t in conv.turns])) + "\n"
            )
            (args.write_dir / f"{name}.hyp.rttm").write_text("\n".join(rttm_lines(name, fi)) + "\n")
            (args.write_dir / f"{name}.online.rttm").write_text("\n".join(rttm_lines(name, on)) + "\n")

    delays = np.concatenate(all_delays)
    asr_rows = []
    if args.asr:
        for name in args.scenarios.split(","):
            r, n, nref = asr_word_attribution(scenario(name), args.asr)
            asr_rows.append((name, r, n, nref))
    hdr = (
        f"{'scenario':<9} {'dur_s':>6} {'spk':>3} {'hyp':>3} {'ovl%':>5} | {'online DER% c0':>14} {'c.25':>6} {'c.5':>6} | "
        f"{'final DER% c0':>13} {'c.25':>6} {'c.5':>6} | {'words%':>6} {'revs':>4} {'RTF':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['name']:<9} {r['dur']:6.1f} {r['spk']:3d} {r['nhyp']:3d} {r['ovl']:5.1f} | {r['on0']:14.1f} {r['on25']:6.1f} {r['on50']:6.1f} | "
            f"{r['fi0']:13.1f} {r['fi25']:6.1f} {r['fi50']:6.1f} | {r['words']:6.1f} {r['revs']:4d} {r['rtf']:6.3f}"
        )
    agg = {k: 100 * v[0] / v[1] for k, v in totals.items()}
    print("-" * len(hdr))
    print(
        f"{'ALL':<9} {audio_s:6.1f} {'':3} {'':3} {'':5} | {agg['on0']:14.1f} {agg['on25']:6.1f} {agg['on50']:6.1f} | "
        f"{agg['fi0']:13.1f} {agg['fi25']:6.1f} {agg['fi50']:6.1f} | {100 * words_right / max(words_total, 1):6.1f} {'':4} {compute_s / audio_s:6.3f}"
    )
    lat = online.latency_samples(config) / SR
    print()
    print(
        f"latency: algorithmic worst case {lat:.3f} s (right {config.right_ms} ms + hop/2 {config.hop_ms // 2} ms + 10 ms frame); "
        f"measured first-label delay median {np.median(delays):.3f} s, p95 {np.percentile(delays, 95):.3f} s, max {delays.max():.3f} s "
        f"(input stream time); compute on top: RTF {compute_s / audio_s:.3f} (VAD + diarizer), "
        f"about {compute_s / audio_s * config.hop_ms:.0f} ms per {config.hop_ms} ms hop"
    )
    print(f"words: {words_right}/{words_total} labelled with the right speaker (final labels; see docstring)")
    if asr_rows:
        r = sum(x[1] for x in asr_rows)
        n = sum(x[2] for x in asr_rows)
        print(
            f"recognised words ({args.asr}): "
            + ", ".join(f"{a} {b}/{c}" for a, b, c, _ in asr_rows)
            + f"; all {r}/{n} = {100 * r / max(n, 1):.1f}% with the right speaker "
            f"(reference has {sum(x[3] for x in asr_rows)} words)"
        )
    print(
        "DER = (confusion + missed + false alarm) / total reference speech, overlap scored; pyannote.metrics collar = total width"
    )
    print("diart (published, real meetings): AMI 27.5 / DIHARD III 25.0 at 5 s latency; 30.4 / 27.6 at 1 s")
    print(
        "command: .venv/bin/python -m bench.bench_der "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
