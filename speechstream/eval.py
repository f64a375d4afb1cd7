"""Score the streaming pipeline on a manifest: WER, CER, latencies, RTF, and offline WER.

    speechstream eval MANIFEST [--model DIR] [--lm LM.arpa] [--limit 50] [--concurrency 4]
    python -m speechstream.eval MANIFEST ...

``MANIFEST`` is a TSV with a header holding ``audio`` and ``text`` columns (the corpora layout;
extra columns are ignored), or two columns without a header. Audio paths are relative to the
manifest's folder.

Every utterance runs through the real graph, as a live stream would::

    PacedSource (mic-like: each 100 ms block delivered when it would have been captured)
      -> Resample -> VAD -> Recognizer (engine + streaming CTC decoder [+ LM finals]) -> tail

The source delivers ``block_ms`` (20 ms) blocks, as :class:`~stream.sources.mic.MicSource` does.
``--concurrency`` utterances stream at once (separate streams of one graph, one shared model),
each followed by ``--pad-silence-ms`` of silence so that endpointing (VAD end, CTC rules) has to
close the segment before the end of the stream.  In the same run, the same model decodes each
whole utterance offline (``LoadedModel.forward``) greedily, and with the LM when one is given.

Metrics (jiwer; texts upper-cased, punctuation other than the apostrophe removed):

- WER / CER of the streaming finals (all finals of a stream, joined), and offline;
- first-partial latency: wall time of a stream's first transcript event minus the moment its
  speech onset was delivered; finalisation latency: wall time of the final that covers the end of
  speech minus the moment the end of speech was delivered. Speech onset/end come from the audio
  (20 ms frames within 30 dB of the loudest), not from the model. P50 and P95 over utterances;
- RTF: the recogniser's compute seconds (engine + decoder, in its executor) over audio seconds.

``--no-realtime`` feeds audio as fast as the graph takes it: WER/CER/RTF only.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from engines.online.config import RecognizerConfig, check_max_utterance_ms
from speechstream import defaults
from stream.config import VAD_KEYS, VadSettings, nest_settings
from stream.errors import ConfigError
from stream.events import SAMPLE_RATE_HZ, AudioChunk, Endpoint, Event, FinalTranscript, PartialTranscript
from stream.sources.base import Emit, Source

if TYPE_CHECKING:
    from engines.ctc import StreamingCTCDecoder
    from engines.model import LoadedModel

__all__ = ["EvalConfig", "EvalReport", "evaluate", "format_report", "read_manifest", "normalize_text", "speech_extent"]


# EvalConfig's flat names (keywords of from_flat, ``python -m speechstream.eval`` options) of RecognizerConfig fields
EVAL_RECOGNIZER_KEYS: dict[str, str] = {
    k: k
    for k in (
        "mode",
        "chunk_ms",
        "left_context_ms",
        "lookahead_ms",
        "lm_path",
        "unigrams_path",
        "lm_alpha",
        "lm_beta",
        "beam_width",
        "language",
        "compute_device",
        "max_utterance_ms",
        "rule2_min_trailing_silence_ms",
        "peek_at_vad_end",
        "decode_ahead",
    )
}


@dataclass(frozen=True)
class EvalConfig:
    manifest: Path
    model: str | None = None  # None: the bundled default model
    # the recogniser's one configuration (language: every utterance, streamed and offline;
    # peek_at_vad_end False: the final waits for the chunk)
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    vad: VadSettings = field(default_factory=VadSettings)  # None fields: the defaults of ``speechstream transcribe``
    limit: int | None = None
    concurrency: int = defaults.EVAL_CONCURRENCY
    realtime: bool = defaults.EVAL_REALTIME
    pad_silence_ms: int = defaults.EVAL_PAD_SILENCE_MS
    block_ms: int = defaults.EVAL_BLOCK_MS  # as MicSource delivers it (before: 100)

    def __post_init__(self) -> None:
        check_max_utterance_ms(self.recognizer.max_utterance_ms)  # the front ends' floor

    @classmethod
    def from_flat(cls, manifest: Path, **values: Any) -> EvalConfig:
        """Keyword construction with flat names (``chunk_ms=320, lm_path="lm.arpa", vad="silero"``)."""
        rec, vad, rest = nest_settings(values, EVAL_RECOGNIZER_KEYS)
        return cls(manifest, recognizer=rec, vad=vad, **rest)

    def vad_node(self) -> Any:
        from speechstream.builder import build_vad

        return build_vad(self.vad)


@dataclass
class UttResult:
    audio: str
    ref: str
    stream_hyp: str
    offline_greedy: str
    offline_lm: str | None
    duration_s: float
    first_partial_latency_s: float | None
    final_latency_s: float | None
    endpoint_reasons: tuple[str, ...] = ()


@dataclass
class EvalReport:
    config: EvalConfig
    utterances: list[UttResult] = field(default_factory=list)
    compute_s: float = 0.0
    audio_s: float = 0.0
    wall_s: float = 0.0
    lm_path: str | None = None  # the LM the finals used (given, or the checkpoint's own)

    def _score(self, hyps: Sequence[str]) -> tuple[float, float]:
        import jiwer

        refs = [normalize_text(u.ref) for u in self.utterances]
        hyps = [normalize_text(h) for h in hyps]
        pairs = [(r, h) for r, h in zip(refs, hyps) if r]
        refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
        return float(jiwer.wer(refs, hyps)), float(jiwer.cer(refs, hyps))

    @property
    def streaming(self) -> tuple[float, float]:
        return self._score([u.stream_hyp for u in self.utterances])

    @property
    def offline_greedy(self) -> tuple[float, float]:
        return self._score([u.offline_greedy for u in self.utterances])

    @property
    def offline_lm(self) -> tuple[float, float] | None:
        if any(u.offline_lm is None for u in self.utterances):
            return None
        return self._score([u.offline_lm or "" for u in self.utterances])

    @property
    def rtf(self) -> float:
        return self.compute_s / max(self.audio_s, 1e-9)


def normalize_text(text: str) -> str:
    text = re.sub(r"[^A-Z' ]+", " ", text.upper())
    return " ".join(text.split())


def read_manifest(path: Path, limit: int | None = None) -> list[tuple[Path, str]]:
    if not path.is_file():
        raise ConfigError(f"manifest not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise ConfigError(f"manifest {path} is empty")
    first = 1  # the file's line number of rows[0] (QUOTE_NONE: one row per line)
    if "audio" in rows[0] and "text" in rows[0]:
        ia, it = rows[0].index("audio"), rows[0].index("text")
        rows, first = rows[1:], 2
    else:
        ia, it = 0, 1
    items = []
    for line, r in enumerate(rows, start=first):
        if not any(field.strip() for field in r):
            continue  # a blank line
        if len(r) <= max(ia, it):
            raise ConfigError(f"manifest {path} line {line}: expected audio<TAB>text, got {r!r}")
        audio = Path(r[ia])
        items.append((audio if audio.is_absolute() else path.parent / audio, r[it]))
    items = items[:limit] if limit else items
    missing = [str(a) for a, _ in items if not a.is_file()]
    if missing:
        raise ConfigError(f"manifest {path}: {len(missing)} audio file(s) not found, e.g. {missing[0]}")
    return items


def speech_extent(x: npt.NDArray[np.floating[Any]], frame: int = 320, range_db: float = 30.0) -> tuple[int, int]:
    """(first, end) sample of the 20 ms frames within ``range_db`` of the loudest frame."""
    n = len(x) // frame
    if n == 0:
        return 0, len(x)
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -range_db)
    return int(loud[0]) * frame, int(loud[-1] + 1) * frame


class PacedSource(Source):
    """In-memory audio delivered like a microphone: block ``[a, b)`` is emitted at ``t0 + b / rate``."""

    def __init__(self, samples: npt.NDArray[np.float32], stream_id: str, block: int, realtime: bool):
        super().__init__(stream_id)
        self.samples = samples
        self.block = block
        self.realtime = realtime
        self.t0: float | None = None

    @property
    def sample_rate_hz(self) -> int:
        return SAMPLE_RATE_HZ

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()
        for pos in range(0, len(self.samples), self.block):
            if self.stop_requested:
                return
            blk = np.array(self.samples[pos : pos + self.block], dtype=np.float32)
            if self.realtime:
                await asyncio.sleep(max(0.0, self.t0 + (pos + len(blk)) / SAMPLE_RATE_HZ - loop.time()))
            else:
                await asyncio.sleep(0)
            await emit(AudioChunk(self.stream_id, pos, samples=blk))


def _load_audio(path: Path) -> npt.NDArray[np.float32]:
    import soundfile as sf

    from stream.sources.file import quiet_decoder

    try:
        with quiet_decoder(path.suffix.lower() in (".mp3", ".mp2", ".mpga")):  # mpg123 noise off stderr
            x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise ConfigError(f"cannot read audio {path}: {exc}") from exc
    x = x.mean(axis=1)
    if sr != SAMPLE_RATE_HZ:
        import soxr

        x = soxr.resample(x, sr, SAMPLE_RATE_HZ).astype(np.float32)
    return x


async def _stream_batch(
    batch: list[tuple[int, npt.NDArray[np.float32]]],
    model: LoadedModel,
    decoder: StreamingCTCDecoder,
    cfg: EvalConfig,
    rcfg: RecognizerConfig,
) -> tuple[dict[str, list[tuple[float, Event]]], dict[str, float], float]:
    """Stream ``batch`` through one graph: per stream, its events with their wall times and the wall
    time its source started; and the recogniser's compute seconds."""
    from stream.graph import Graph
    from stream.recognizer import Recognizer
    from stream.resample import Resample

    loop = asyncio.get_running_loop()
    pad = np.zeros(cfg.pad_silence_ms * SAMPLE_RATE_HZ // 1000, np.float32)
    sources = {
        f"u{i}": PacedSource(np.concatenate([x, pad]), f"u{i}", cfg.block_ms * 16, cfg.realtime) for i, x in batch
    }
    timed: dict[str, list[tuple[float, Event]]] = {sid: [] for sid in sources}

    def on_event(e: Event) -> None:
        if e.stream_id in timed and not isinstance(e, AudioChunk):
            timed[e.stream_id].append((loop.time(), e))

    rec = Recognizer(model, rcfg, decoder=decoder)
    graph = Graph(
        sources=list(sources.values()), nodes=[Resample(), cfg.vad_node(), rec], on_event=on_event, name="eval"
    )
    await graph.run()
    t0: dict[str, float] = {}
    for sid, src in sources.items():
        if src.t0 is None:  # the graph runs every source; a source that never ran is a bug
            raise RuntimeError(f"eval: source {sid!r} never started")
        t0[sid] = src.t0
    return timed, t0, rec.stats.compute_s


def _latencies(
    events: list[tuple[float, Event]], t0: float, extent: tuple[int, int]
) -> tuple[float | None, float | None]:
    start, end = extent
    first = next((t for t, e in events if isinstance(e, (PartialTranscript, FinalTranscript)) and e.text), None)
    finals = [(t, e) for t, e in events if isinstance(e, FinalTranscript) and e.text]
    # the final that covers the end of speech: the first whose words reach past it, else the last
    cover = next(((t, e) for t, e in finals if e.end_sample >= end - 8000), finals[-1] if finals else None)
    fp = None if first is None else first - (t0 + start / SAMPLE_RATE_HZ)
    fl = None if cover is None else cover[0] - (t0 + end / SAMPLE_RATE_HZ)
    return fp, fl


def evaluate(cfg: EvalConfig, log: Callable[[str], object] | None = None) -> EvalReport:
    import torch

    from engines.api import load_model
    from engines.ctc import log_softmax
    from engines.errors import EngineError
    from engines.lm import BeamDecoder
    from engines.online.config import resolve_compute_device
    from stream.config import default_model_dir
    from stream.recognizer import build_decoder

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    items = read_manifest(cfg.manifest, cfg.limit)
    model_arg = cfg.model or (str(default_model_dir()) if default_model_dir() else None)
    if model_arg is None:
        raise ConfigError("no model: pass --model (no bundled default model is installed)")
    try:
        model = load_model(model_arg, device=resolve_compute_device(cfg.recognizer.compute_device))
    except EngineError as exc:
        text = str(exc)  # most name the file already (DIR/config.json: field ...)
        raise ConfigError(text if str(model_arg) in text else f"cannot load model {model_arg}: {text}") from exc
    try:  # the language's view (adapter weights, vocabulary), for the offline and the streamed pass
        model = model.for_language(cfg.recognizer.language)
    except EngineError as exc:  # an unknown code: one line listing the available ones
        raise ConfigError(str(exc)) from exc
    # the model is already the language's view (for the offline pass too): the recogniser runs on it as is
    rcfg = dataclasses.replace(cfg.recognizer, language=None)
    cfg.vad_node()  # ConfigError for a VAD that cannot be built, before any audio
    decoder = build_decoder(model, rcfg)  # ConfigError for a bad LM / vocabulary, before any audio
    tok = decoder.tokenizer
    audios = [_load_audio(a) for a, _ in items]
    report = EvalReport(cfg)
    final_decoder = decoder.final_decoder  # build_decoder's re-decoder is a BeamDecoder (LM or plain beam)
    if final_decoder is not None:
        report.lm_path = final_decoder.config.lm_path if isinstance(final_decoder, BeamDecoder) else None
        say(f"eval: LM finals with {report.lm_path or 'no LM (plain beam)'}")
    report.audio_s = sum(len(x) for x in audios) / SAMPLE_RATE_HZ

    # offline: the whole utterance at once, same model
    say(f"eval: {len(items)} utterances, {report.audio_s:.1f} s of audio; offline pass")
    offline_greedy: list[str] = []
    offline_lm: list[str] = []
    with torch.inference_mode():
        for x in audios:
            logits = model.forward(torch.from_numpy(x)).frames[0].float().numpy()
            offline_greedy.append(tok.decode(logits.argmax(-1).tolist()))
            if final_decoder is not None:
                offline_lm.append(final_decoder.decode_segment(log_softmax(logits))[0])

    # streaming, ``concurrency`` streams at a time
    say(f"eval: streaming pass ({'real time' if cfg.realtime else 'as fast as possible'}, {cfg.concurrency} at once)")
    t_start = time.perf_counter()
    results: dict[int, tuple[list[tuple[float, Event]], float]] = {}
    compute = 0.0
    order = list(range(len(items)))
    for b in range(0, len(order), max(1, cfg.concurrency)):
        batch = [(i, audios[i]) for i in order[b : b + cfg.concurrency]]
        timed, starts, c = asyncio.run(_stream_batch(batch, model, decoder, cfg, rcfg))
        compute += c
        for i, _ in batch:
            results[i] = (timed[f"u{i}"], starts[f"u{i}"])
    report.wall_s = time.perf_counter() - t_start
    report.compute_s = compute
    for i, ((audio, ref), x) in enumerate(zip(items, audios)):
        events, t0 = results[i]
        finals = [e for _, e in events if isinstance(e, FinalTranscript)]
        fp, fl = _latencies(events, t0, speech_extent(x)) if cfg.realtime else (None, None)
        reasons = tuple(e.reason for _, e in events if isinstance(e, Endpoint))
        report.utterances.append(
            UttResult(
                audio=str(audio),
                ref=ref,
                stream_hyp=" ".join(f.text for f in finals if f.text),
                offline_greedy=offline_greedy[i],
                offline_lm=offline_lm[i] if offline_lm else None,
                duration_s=len(x) / SAMPLE_RATE_HZ,
                first_partial_latency_s=fp,
                final_latency_s=fl,
                endpoint_reasons=reasons,
            )
        )
    return report


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def format_report(r: EvalReport) -> str:
    c, rc = r.config, r.config.recognizer
    lines = [
        f"| {c.manifest.name}: {len(r.utterances)} utterances, {r.audio_s:.1f} s | value |",
        "|---|---|",
    ]
    w, ce = r.streaming
    lm = f"beam {rc.beam_width} + LM finals" if r.lm_path else "greedy finals"
    lang = f", language {rc.language}" if rc.language else ""
    lines.append(
        f"| streaming WER / CER ({rc.mode}, chunk {rc.chunk_ms} ms, {lm}, VAD {c.vad.name}{lang}) | {100 * w:.2f}% / {100 * ce:.2f}% |"
    )
    w, ce = r.offline_greedy
    lines.append(f"| offline WER / CER (same model, greedy) | {100 * w:.2f}% / {100 * ce:.2f}% |")
    if r.offline_lm is not None:
        w, ce = r.offline_lm
        lines.append(
            f"| offline WER / CER (same model, beam {rc.beam_width} + LM) | {100 * w:.2f}% / {100 * ce:.2f}% |"
        )
    fps = [u.first_partial_latency_s for u in r.utterances if u.first_partial_latency_s is not None]
    fls = [u.final_latency_s for u in r.utterances if u.final_latency_s is not None]
    if fps:
        lines.append(
            f"| first-partial latency P50 / P95 (from speech onset) | {_pct(fps, 0.5):.2f} s / {_pct(fps, 0.95):.2f} s |"
        )
    if fls:
        lines.append(
            f"| finalisation latency P50 / P95 (from end of speech) | {_pct(fls, 0.5):.2f} s / {_pct(fls, 0.95):.2f} s |"
        )
    reasons: dict[str, int] = {}
    for u in r.utterances:
        for x in u.endpoint_reasons:
            reasons[x] = reasons.get(x, 0) + 1
    lines.append(f"| endpoints by reason | {', '.join(f'{k} {v}' for k, v in sorted(reasons.items())) or 'none'} |")
    vc = c.vad_node().segmenter.config
    lines.append(
        f"| VAD timing: pad / hangover / min speech / min silence; source blocks | {vc.pre_speech_pad_ms} / {vc.hangover_ms} / "
        f"{vc.min_speech_ms} / {vc.min_silence_ms} ms; {c.block_ms} ms |"
    )
    lines.append(f"| RTF (recogniser compute / audio) | {r.rtf:.3f} |")
    lines.append(
        f"| wall time (streaming pass, {c.concurrency} streams at once, {'real time' if c.realtime else 'unpaced'}) | {r.wall_s:.1f} s |"
    )
    return "\n".join(lines)


def _flat_options() -> list[tuple[str, Any, str]]:
    """``python -m speechstream.eval``'s options: (flat name, default, annotation) of EvalConfig's own
    fields and of its nested configs' flat names."""
    d = EvalConfig(Path("."))
    out = [(f.name, getattr(d, f.name), str(f.type)) for f in dataclasses.fields(EvalConfig)]
    out = [o for o in out if o[0] not in ("manifest", "recognizer", "vad")]
    rec = {f.name: f for f in dataclasses.fields(RecognizerConfig)}
    out += [(k, getattr(d.recognizer, v), str(rec[v].type)) for k, v in EVAL_RECOGNIZER_KEYS.items()]
    vad = {f.name: f for f in dataclasses.fields(VadSettings)}
    return out + [(k, getattr(d.vad, v), str(vad[v].type)) for k, v in VAD_KEYS.items()]


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m speechstream.eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path)
    for name, default, annotation in _flat_options():
        if name in ("realtime", "peek_at_vad_end", "decode_ahead"):
            continue
        kind = {"int": int, "float": float}.get(annotation.split(" ")[0], str)
        ap.add_argument("--" + name.replace("_", "-"), type=kind, default=default)
    ap.add_argument("--no-realtime", action="store_true")
    args = ap.parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k != "no_realtime"}
    try:
        report = evaluate(EvalConfig.from_flat(realtime=not args.no_realtime, **values))
    except ConfigError as exc:
        print(f"speechstream: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
