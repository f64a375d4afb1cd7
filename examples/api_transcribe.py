"""Transcribe a file with the Python API, building the graph by hand.

    .venv/bin/python examples/api_transcribe.py examples/hello.wav [--model DIR|none] [--srt out.srt]

source -> resample to 16 kHz mono -> webrtc VAD -> recogniser -> sinks (console + optional SRT).
Without a model (none given and no bundled default installed) the graph runs VAD only.
"""

from __future__ import annotations

import argparse
import asyncio

from sinks import ConsoleSink, SrtSink
from sinks.node import SinkNode
from stream.config import default_model_dir
from stream.graph import Graph
from stream.node import FanOut, Node
from stream.resample import Resample
from stream.sources.file import FileSource
from stream.vad_node import VadNode


async def transcribe(path: str, model: str | None, srt_path: str | None) -> None:
    nodes: list[Node] = [Resample(), VadNode.create("webrtc")]
    if model:
        from stream.recognizer import Recognizer, RecognizerConfig

        nodes.append(Recognizer(model, RecognizerConfig(mode="cached", chunk_ms=640, left_context_ms=5120)))
    sinks = [ConsoleSink(show_vad=not model)]
    if srt_path:
        sinks.append(SrtSink(srt_path))
    nodes.append(FanOut([SinkNode(s) for s in sinks]))
    graph = Graph(sources=[FileSource(path, progress=False)], nodes=nodes)
    await graph.run()  # start, wait for end of stream (every final flushed to the sinks), stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--model", default=None, help="HF-layout model dir; 'none' for VAD only (default: bundled model)")
    ap.add_argument("--srt", default=None)
    args = ap.parse_args()
    model = None if args.model == "none" else (args.model or (str(default_model_dir() or "") or None))
    asyncio.run(transcribe(args.file, model, args.srt))


if __name__ == "__main__":
    main()
