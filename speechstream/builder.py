"""Build the standard transcription graph from a :class:`~stream.config.TranscribeConfig`::

    source (file | mic) -> Resample (16 kHz mono) -> VAD -> [Diarizer] -> [Recognizer -> [SpeakerLabeler]] -> FanOut(sinks)

The recognizer is present when a model is configured (``--model``, or the bundled default
model when installed); without one the graph runs VAD only and the console prints speech
segments. Diarization (speaker turns, speaker labels on finals) runs with ``--diarize``, and by
default whenever an RTTM output is asked for. Each sink sits on its own ``FanOut`` branch with its own bounded edge, so a slow
sink never stalls the others, and a sink's write failure disables only that sink.

Construction opens the output files (a bad output path fails here, before any audio moves);
sources and models open in ``Graph.start``. Everything raises
:class:`~stream.errors.ConfigError` (or a subclass) with the offending value.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

from sinks import CaptionLimits, ConsoleSink, RttmSink, Sink, SrtSink, VttSink, open_jsonl
from sinks.node import SinkNode
from stream.config import RecognizerConfig, TranscribeConfig, VadSettings
from stream.errors import ConfigError
from stream.events import ErrorEvent, Event
from stream.graph import Graph
from stream.node import FanOut, Node
from stream.queues import EdgeSpec
from stream.resample import Resample
from stream.sources.base import Source

__all__ = [
    "BuiltGraph",
    "build_graph",
    "build_sinks",
    "build_source",
    "build_vad",
    "build_recognizer",
    "build_diarization",
]


@dataclass
class BuiltGraph:
    graph: Graph
    sources: list[Source]
    sinks: list[Sink]
    recognizer: Node | None
    errors: list[ErrorEvent] = field(default_factory=list)  # every ErrorEvent that reached the tail
    notes: list[str] = field(default_factory=list)  # things the user should know (printed by the CLI)

    def on_event(self, event: Event) -> None:
        if isinstance(event, ErrorEvent):
            self.errors.append(event)


def build_source(cfg: TranscribeConfig) -> Source:
    sid = cfg.resolved_stream_id
    if cfg.mic:
        try:
            from stream.sources.mic import MicSource
        except ImportError as exc:  # PortAudio missing, or no microphone support in this build
            raise ConfigError(f"microphone capture is not available: {exc}") from exc

        return MicSource(device=cfg.device, stream_id=sid)
    from stream.sources.file import FileSource

    assert cfg.input_path is not None
    # The bar is for a person at a terminal (not logs), and live captions on that same terminal
    # would overwrite its line.
    on_terminal = sys.stderr.isatty() and not (cfg.console_enabled and sys.stdout.isatty())
    return FileSource(cfg.input_path, stream_id=sid, realtime=cfg.realtime, progress=cfg.progress and on_terminal)


def build_vad(settings: VadSettings | TranscribeConfig) -> Node:
    """The VAD node of ``settings`` (a TranscribeConfig: its ``vad``); fields left None keep that VAD's
    tuned defaults."""
    import dataclasses as dc

    from stream.vad import DEFAULT_VAD_CONFIGS
    from stream.vad_node import VadNode

    vad = settings.vad if isinstance(settings, TranscribeConfig) else settings
    if vad.name == "none":
        return VadNode.create("none")
    kw: dict[str, object] = {}
    if vad.threshold is not None:
        kw["threshold"] = vad.threshold
    if vad.aggressiveness is not None:
        kw["aggressiveness"] = vad.aggressiveness
    return VadNode.create(vad.name, dc.replace(DEFAULT_VAD_CONFIGS[vad.name], **vad.timing()), **kw)


def build_recognizer(cfg: RecognizerConfig | TranscribeConfig, model: str, *, max_batch: int | None = None) -> Node:
    """The recogniser node for ``cfg`` (a TranscribeConfig: its ``recognizer``): an OfflineRecognizer in
    offline mode, else a streaming Recognizer; ``max_batch`` overrides the cross-stream batch limit."""
    try:
        from stream.offline_recognizer import OfflineRecognizer
        from stream.recognizer import Recognizer
    except ImportError as exc:
        raise ConfigError(f"cannot load model {model!r}: the recognizer is not available ({exc})") from exc
    config = cfg.recognizer if isinstance(cfg, TranscribeConfig) else cfg
    if max_batch is not None:
        config = dataclasses.replace(config, max_batch=max_batch)
    # the model loads in Graph.start (ConfigError if it cannot)
    if config.mode == "offline":
        return OfflineRecognizer(model, config)
    return Recognizer(model, config)


def build_diarization(cfg: TranscribeConfig) -> tuple[Node, Node]:
    """The online diarizer (before the recogniser) and the speaker labeler (after it)."""
    from stream.diarize import diarization_nodes

    return diarization_nodes(speakers=cfg.speaker_clips(), max_speakers=cfg.max_speakers, embedder=cfg.speaker_model)


def build_sinks(cfg: TranscribeConfig, *, recognizing: bool) -> list[Sink]:
    """Open every configured output. On failure, closes what was already opened."""
    limits = CaptionLimits(
        max_chars_per_line=cfg.caption_max_chars_per_line,
        max_lines=cfg.caption_max_lines,
        max_duration_ms=cfg.caption_max_duration_ms,
    )
    sinks: list[Sink] = []
    try:
        if cfg.console_enabled:
            # fatal errors: the CLI's end-of-run line says them once (speechstream.cli._run_async)
            sinks.append(ConsoleSink(show_vad=not recognizing, show_fatal=False))
        if cfg.jsonl is not None:
            sinks.append(open_jsonl(cfg.jsonl, fsync=cfg.fsync))
        if cfg.srt is not None:
            sinks.append(SrtSink(cfg.srt, limits=limits, fsync=cfg.fsync))
        if cfg.vtt is not None:
            sinks.append(VttSink(cfg.vtt, limits=limits, fsync=cfg.fsync))
        if cfg.rttm is not None:
            sinks.append(RttmSink(cfg.rttm, file_id=cfg.resolved_stream_id, fsync=cfg.fsync))
    except OSError as exc:
        for s in sinks:
            s.release()
        raise ConfigError(f"cannot open output {exc.filename}: {exc.strerror}") from exc
    return sinks


def build_graph(cfg: TranscribeConfig) -> BuiltGraph:
    cfg.validate()
    model = cfg.resolved_model()
    recognizer = build_recognizer(cfg, model) if model else None
    vad = build_vad(cfg)
    source = build_source(cfg)
    sinks = build_sinks(cfg, recognizing=recognizer is not None)
    nodes: list[Node] = [Resample(), vad]
    try:
        diarizer, labeler = build_diarization(cfg) if cfg.diarize_enabled else (None, None)
    except BaseException:
        for s in sinks:  # nothing was written: existing output files keep their contents
            s.release()
        raise
    if diarizer is not None:
        nodes.append(diarizer)  # turns go out before the audio/SpeechEnded that decided them
    if recognizer is not None:
        nodes.append(recognizer)
        if labeler is not None:
            nodes.append(labeler)  # puts speakers on words and finals
    if sinks:
        # Per-sink edges drop partials/audio before they would block the graph; finals never drop.
        nodes.append(FanOut([SinkNode(s) for s in sinks], edge=EdgeSpec(256, "drop_oldest")))
    built = BuiltGraph(graph=None, sources=[source], sinks=sinks, recognizer=recognizer)  # type: ignore[arg-type]
    if cfg.rttm is not None and diarizer is None:
        built.notes.append(f"--rttm {cfg.rttm}: diarization is off (--no-diarize); the file stays empty")
    built.graph = Graph(sources=[source], nodes=nodes, on_event=built.on_event, name="transcribe")
    return built
