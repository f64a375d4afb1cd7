"""A custom sink, and two streams in one graph.

    .venv/bin/python examples/api_custom_sink.py examples/hello.wav

A sink implements ``handle(event) -> bool`` (True when it wrote something); the base class
gives it the async ``consume``/``close`` contract, per-stream filtering and failure isolation.
Here one graph runs two streams (the same file twice, under two stream ids) and a small sink
totals speech time per stream.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict

from sinks import Sink
from sinks.node import SinkNode
from stream.events import EndOfStream, Event, SpeechEnded
from stream.graph import Graph
from stream.node import FanOut
from stream.resample import Resample
from stream.sources.file import FileSource
from stream.vad_node import VadNode


class SpeechTime(Sink):
    """Seconds of speech per stream, printed when each stream ends."""

    kind = "speech-time"

    def __init__(self) -> None:
        super().__init__()
        self.samples: dict[str, int] = defaultdict(int)

    def handle(self, event: Event) -> bool:
        if isinstance(event, SpeechEnded):
            self.samples[event.stream_id] += event.sample - event.start_sample
        elif isinstance(event, EndOfStream):
            seconds = self.samples[event.stream_id] / event.sample_rate_hz
            print(f"{event.stream_id}: {seconds:.2f} s of speech in {event.time_s:.2f} s of audio")
            return True
        return False


async def main(path: str) -> None:
    sources = [FileSource(path, stream_id="left", progress=False), FileSource(path, stream_id="right", progress=False)]
    graph = Graph(sources=sources, nodes=[Resample(), VadNode.create("webrtc"), FanOut([SinkNode(SpeechTime())])])
    await graph.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "examples/hello.wav"))
