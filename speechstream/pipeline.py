"""The facade: one object that runs a whole transcription, simple first.

::

    from speechstream import Pipeline

    result = Pipeline.from_file("talk.wav", srt="talk.srt").run()
    print(result.text)

``from_file`` / ``from_mic`` build the standard graph (:func:`speechstream.builder.build_graph`);
``add_node`` and ``add_sink`` put your own nodes (before the sinks) and sinks into it. The graph form,
``Pipeline(sources=[...], nodes=[...], sinks=[...])``, runs exactly the nodes given.
Options left out keep the defaults of :class:`~stream.config.TranscribeConfig` (written once, there).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinks.base import Sink
from sinks.node import SinkNode
from speechstream.defaults import MODEL_START_TIMEOUT_S
from stream.config import TranscribeConfig
from stream.errors import ConfigError
from stream.events import ErrorEvent, Event, FinalTranscript
from stream.graph import Graph
from stream.node import FanOut, Node
from stream.queues import EdgeSpec
from stream.sources.base import Source

__all__ = ["Pipeline", "PipelineResult"]

_PATH_FIELDS = ("srt", "vtt", "rttm", "input_path")


def _transcribe_config(**options: Any) -> TranscribeConfig:
    """The one place that constructs a TranscribeConfig (keyword arguments only)."""
    known = {*TranscribeConfig.field_names(), "recognizer"}  # flat settings (chunk_ms=, vad=, lm=, ...) or recognizer=
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for name in _PATH_FIELDS:
        if options.get(name) is not None:
            options[name] = Path(options[name])
    if options.get("jsonl") is not None:
        options["jsonl"] = str(options["jsonl"])
    return TranscribeConfig.from_flat(**options)


@dataclass
class PipelineResult:
    """What a run produced: every final, every error event, sinks that failed, notes."""

    finals: list[FinalTranscript] = field(default_factory=list)
    errors: list[ErrorEvent] = field(default_factory=list)
    failed_sinks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def text(self) -> str:
        return " ".join(f.text for f in self.finals if f.text)

    @property
    def ok(self) -> bool:
        return not self.failed_sinks and not any(e.fatal for e in self.errors)


class Pipeline:
    """Sources -> nodes -> sinks, run once. See the module docstring."""

    def __init__(self, sources: Sequence[Source] = (), nodes: Sequence[Node] = (), sinks: Sequence[Sink] = ()) -> None:
        self._sources = list(sources)
        self._nodes = list(nodes)
        self._sinks = list(sinks)
        self._config: TranscribeConfig | None = None
        self._running: list[Source] = []

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> Pipeline:
        """A file through the standard graph. ``options``: any TranscribeConfig field (``model``, ``srt``,
        ``vtt``, ``jsonl``, ``rttm``, ``diarize``, ``vad``, ``mode``, ``chunk_ms``, ``language``...);
        ``console`` and ``progress`` default to off."""
        options.setdefault("console", False)
        options.setdefault("progress", False)
        return cls._from_config(_transcribe_config(input_path=path, **options))

    @classmethod
    def from_mic(cls, device: str | int | None = None, **options: Any) -> Pipeline:
        """The microphone through the standard graph; runs until :meth:`stop` (or Ctrl-C in ``run``)."""
        options.setdefault("console", False)
        return cls._from_config(_transcribe_config(mic=True, device=None if device is None else str(device), **options))

    @classmethod
    def _from_config(cls, cfg: TranscribeConfig) -> Pipeline:
        cfg.validate()
        pipe = cls()
        pipe._config = cfg
        return pipe

    def add_node(self, node: Node) -> Pipeline:
        """Your node, after the recogniser and before the sinks."""
        self._nodes.append(node)
        return self

    def add_sink(self, sink: Sink) -> Pipeline:
        """Your sink, on its own branch beside the configured outputs."""
        self._sinks.append(sink)
        return self

    def stop(self) -> None:
        """Ask the running sources to end (graceful: every pending final still reaches the sinks)."""
        for src in self._running:
            src.request_stop()

    def run(self) -> PipelineResult:
        """Run to the end (synchronous); Ctrl-C stops gracefully and returns what was done."""
        return asyncio.run(self.run_async())

    async def run_async(self) -> PipelineResult:
        result = PipelineResult()

        def on_event(event: Event) -> None:
            if isinstance(event, FinalTranscript):
                result.finals.append(event)
            elif isinstance(event, ErrorEvent):
                result.errors.append(event)

        graph, sources, sinks = self._graph(on_event, result)
        self._running = sources
        try:
            await graph.start(timeout_s=MODEL_START_TIMEOUT_S)  # it loads the model
        except BaseException:
            for s in sinks:  # nothing was written: existing output files keep their contents
                s.release()
            raise
        installed = self._install_stop(result)
        try:
            await graph.run()
        finally:
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)
            self._running = []
        result.failed_sinks = [f"{s.describe()}: {s.failed}" for s in sinks if s.failed is not None]
        return result

    def _install_stop(self, result: PipelineResult) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()

        def request_stop() -> None:
            result.interrupted = True
            self.stop()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, request_stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
                pass
        return installed

    def _graph(self, on_event: Any, result: PipelineResult) -> tuple[Graph, list[Source], list[Sink]]:
        edge = EdgeSpec(256, "drop_oldest")  # per-sink edges: a slow sink never stalls the graph
        if self._config is None:
            if not self._sources:
                raise ConfigError("Pipeline needs at least one source")
            nodes = list(self._nodes)
            if self._sinks:
                nodes.append(FanOut([SinkNode(s) for s in self._sinks], edge=edge))
            return Graph(sources=self._sources, nodes=nodes, on_event=on_event), self._sources, self._sinks
        from speechstream.builder import build_graph

        built = build_graph(self._config)
        result.notes.extend(built.notes)
        if built.recognizer is None:
            result.notes.append("no model: VAD only")
        nodes = list(built.graph.pipeline.nodes)
        if built.sinks and isinstance(nodes[-1], FanOut):
            nodes.pop()  # the configured outputs go on one FanOut with the added sinks
        nodes.extend(self._nodes)
        sinks = [*built.sinks, *self._sinks]
        if sinks:
            nodes.append(FanOut([SinkNode(s) for s in sinks], edge=edge))

        def tail(event: Event) -> None:
            built.on_event(event)
            on_event(event)

        graph = Graph(sources=built.sources, nodes=nodes, on_event=tail, name="transcribe")
        return graph, built.sources, sinks
