""":class:`SinkNode` puts a :class:`~sinks.base.Sink` into a graph (usually as a branch of a
:class:`~stream.node.FanOut`, so each sink has its own bounded edge)::

    FanOut([SinkNode(SrtSink("talk.srt")), SinkNode(JsonlSink("talk.jsonl"))])

Every event, end of stream included, goes to ``sink.consume`` and then on downstream, so the
node also works inside a plain chain; internal hints between nodes (``Event.internal``) are
only passed on. ``stop`` closes the sink. A sink's write failure has
already disabled only that sink (see :mod:`sinks.base`); it never becomes a graph failure.
"""

from __future__ import annotations

from sinks.base import Sink
from stream.events import EndOfStream, Event
from stream.node import Node

__all__ = ["SinkNode"]


class SinkNode(Node):
    def __init__(self, sink: Sink, name: str | None = None) -> None:
        super().__init__(name or f"sink:{sink.kind}")
        self.sink = sink

    async def process(self, event: Event) -> None:
        if not event.internal:
            await self.sink.consume(event)
        await self.push(event)

    async def end_of_stream(self, eos: EndOfStream) -> None:
        await self.sink.consume(eos)
        await self.push(eos)

    async def stop(self) -> None:
        await self.sink.close()
