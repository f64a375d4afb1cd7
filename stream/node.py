"""The node contract: receive an event, do one thing, push events on.

A :class:`Node` is fed by one bounded :class:`~stream.queues.Edge` and pushes into
the next one. Subclasses override a few small hooks; everything else (stream
bookkeeping, control frames, error isolation) lives here once::

    class Gain(Node):
        '''Multiply audio by a constant; pass every other event on unchanged.'''

        def __init__(self, gain: float):
            super().__init__(name="gain")
            self.gain = gain

        async def process(self, event: Event) -> None:
            if isinstance(event, AudioChunk):
                event = dataclasses.replace(event, samples=event.samples * self.gain)  # new frame
            await self.push(event)   # forward everything you do not consume

Hooks (all optional; the defaults pass events through):

``async start()`` / ``async stop()``
    open / close resources (models, executors, files). ``start`` raises
    :class:`~stream.errors.ConfigError` for bad configuration.
``async process(event)``
    handle one event of any stream; call ``await self.push(e)`` zero or more
    times. Push on every event you do not consume (errors, overflow reports,
    other nodes' events). Never mutate a frame: build a new one
    (``dataclasses.replace``).
``async flush(stream_id)``
    emit whatever is pending for that stream *now* (open VAD segment, partial
    hypothesis to final). Called on a :class:`~stream.queues.Flush` control frame
    and at end of stream.
``async end_of_stream(eos)``
    default: ``await self.flush(sid)`` then ``await self.push(eos)``. Override to
    rewrite the EOS (e.g. the resampler converts its time to 16 kHz).
``forget(stream_id)``
    drop this stream's state. Called after its EOS passed, or after a fatal error.

Per-stream state belongs in a dict keyed by ``stream_id`` whose values are
immutable named data (frozen dataclasses), replaced, never mutated.

Error policy (explicit; see :mod:`stream.errors`): when a hook raises while
handling an item of stream ``s``:

- :class:`~stream.errors.StreamError` -> ``ErrorEvent(s, code=exc.code,
  fatal=exc.fatal)`` is pushed on. If fatal, this node forgets ``s`` and drops
  its later items (ErrorEvents and the ``EndOfStream`` of ``s`` still pass), so
  downstream nodes still flush and end ``s`` cleanly.
- any other ``Exception`` is a bug: it is logged with its traceback
  (logger ``stream.node``) and, with ``bug_policy="isolate"`` (default), turned
  into a fatal ``ErrorEvent(code="internal_error")`` for ``s`` only; with
  ``bug_policy="raise"`` it ends the graph and ``Graph.run`` re-raises it.
- ``BaseException`` (cancellation) is never caught.

Containers. :class:`Pipeline` is a node made of nodes chained by edges, so
pipelines nest. :class:`FanOut` is a tee: each branch (a node or pipeline,
typically a sink) gets its own edge, and the event goes on downstream; an
``EndOfStream`` or ``Flush`` goes on only after every branch has handled it, so
"every pending final is written before shutdown" holds for sinks too.
:class:`Collect` keeps what reaches it (tests, examples).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .errors import GraphStateError, StreamError
from .events import AudioChunk, EndOfStream, ErrorEvent, Event
from .queues import ControlFrame, Edge, EdgeSpec, Flush, Item, Stop

__all__ = ["BugPolicy", "Node", "Pipeline", "FanOut", "Collect", "Outlet", "RunContext"]

log = logging.getLogger("stream.node")

BugPolicy = Literal["isolate", "raise"]


class Outlet(Protocol):
    """Where a node pushes: an :class:`Edge`, or a container's tail."""

    async def put(self, item: Item) -> None: ...

    def put_control(self, frame: ControlFrame) -> None: ...


@dataclass
class RunContext:
    """What a running graph hands to every node it contains."""

    spawn: Callable[[Awaitable[None], str], asyncio.Task[None]]
    bug_policy: BugPolicy = "isolate"
    # Streams whose results nobody will read (a network client vanished): nodes drop their
    # audio and skip costly end-of-stream work; the EOS still passes, so each stream ends.
    cancelled: set[str] = dataclasses.field(default_factory=set)


class Node:
    """Base of every node. Override the hooks documented in the module docstring."""

    def __init__(self, name: str | None = None):
        self.name = name or type(self).__name__
        self._out: Outlet | None = None
        self._ctx: RunContext | None = None
        self._open: dict[str, tuple[int, int]] = {}  # stream_id -> (last sample, rate) seen here
        self._failed: set[str] = set()
        self._eos_pushed: set[str] = set()

    # ------------------------------------------------------------------ hooks

    async def start(self) -> None:
        """Open resources. Raise ConfigError for bad configuration."""

    async def stop(self) -> None:
        """Close resources. Called once, after the node's task ended."""

    async def process(self, event: Event) -> None:
        """Handle one event; the default passes it on."""
        await self.push(event)

    async def flush(self, stream_id: str) -> None:
        """Emit what is pending for ``stream_id``; the default has nothing pending."""

    async def end_of_stream(self, eos: EndOfStream) -> None:
        await self.flush(eos.stream_id)
        await self.push(eos)

    def forget(self, stream_id: str) -> None:
        """Drop per-stream state."""

    def output_time(self, sample: int, rate_hz: int) -> tuple[int, int]:
        """Map an input position to this node's output time, for the ErrorEvent the
        error policy emits. Identity unless the node changes the time base (resampler)."""
        return sample, rate_hz

    # ------------------------------------------------------------------ for subclasses

    async def push(self, event: Event) -> None:
        """Send an event downstream (waits if the next edge is a full ``block`` edge)."""
        if self._out is None:
            raise GraphStateError(f"node {self.name!r} pushed before it was placed in a graph")
        if isinstance(event, EndOfStream):
            self._eos_pushed.add(event.stream_id)
        await self._out.put(event)

    def cancelled(self, stream_id: str) -> bool:
        """True once the graph cancelled ``stream_id`` (``Graph.cancel_stream``): its results go nowhere."""
        return self._ctx is not None and stream_id in self._ctx.cancelled

    @property
    def open_streams(self) -> tuple[str, ...]:
        """Streams seen by this node and not yet ended."""
        return tuple(self._open)

    # ------------------------------------------------------------------ machinery

    def bind(self, out: Outlet, ctx: RunContext) -> None:
        """Place the node: where it pushes, and the graph it runs in."""
        if self._ctx is not None:
            raise GraphStateError(f"node {self.name!r} is already placed in a graph")
        self._out = out
        self._ctx = ctx

    def push_control(self, frame: ControlFrame) -> None:
        assert self._out is not None
        self._out.put_control(frame)

    async def receive(self, item: Item) -> None:
        """Dispatch one item to the hooks, applying the error policy. Containers override."""
        if isinstance(item, Stop):
            self.push_control(item)
            return
        if isinstance(item, Flush):
            targets = list(self._open) if item.stream_id is None else [item.stream_id]
            for sid in targets:
                if sid in self._open and sid not in self._failed:
                    sample, rate = self._open[sid]
                    await self._guarded(sid, sample, rate, self.flush, sid)
            self.push_control(item)
            return
        if isinstance(item, ControlFrame):
            raise GraphStateError(f"node {self.name!r} got an unknown control frame {item!r}")
        sid = item.stream_id
        if isinstance(item, EndOfStream):
            if sid not in self._failed:
                self._open.setdefault(sid, (item.sample, item.sample_rate_hz))
                await self._guarded(sid, item.sample, item.sample_rate_hz, self.end_of_stream, item)
            if sid not in self._eos_pushed:  # failed stream, or a hook that raised before pushing it
                sample, rate = self.output_time(item.sample, item.sample_rate_hz)
                await self.push(dataclasses.replace(item, sample=sample, sample_rate_hz=rate))
            self._end(sid)
            return
        if sid in self._failed:
            if isinstance(item, ErrorEvent):
                await self.push(item)
            return  # the stream is dead at this node; drop its data
        if isinstance(item, AudioChunk) and self._ctx is not None and sid in self._ctx.cancelled:
            return  # nobody reads this stream's results any more
        self._open[sid] = (item.sample, item.sample_rate_hz)
        await self._guarded(sid, item.sample, item.sample_rate_hz, self.process, item)

    def _end(self, sid: str) -> None:
        self._safe_forget(sid)
        self._open.pop(sid, None)
        self._failed.discard(sid)
        self._eos_pushed.discard(sid)

    def _safe_forget(self, sid: str) -> None:
        try:
            self.forget(sid)
        except Exception:  # a bug in forget must not take other streams down
            log.exception("node %r: forget(%r) raised", self.name, sid)

    async def _guarded(
        self, sid: str, sample: int, rate: int, hook: Callable[[Any], Awaitable[None]], arg: Any
    ) -> None:
        try:
            await hook(arg)
        except StreamError as exc:
            sample, rate = self.output_time(sample, rate)
            await self.push(
                ErrorEvent(
                    sid, sample, sample_rate_hz=rate, code=exc.code, message=f"{self.name}: {exc}", fatal=exc.fatal
                )
            )
            if exc.fatal:
                self._fail(sid)
        except Exception as exc:
            policy = self._ctx.bug_policy if self._ctx else "raise"
            log.error("node %r: bug while handling stream %r (policy %s)", self.name, sid, policy, exc_info=exc)
            if policy == "raise":
                raise
            sample, rate = self.output_time(sample, rate)
            msg = f"{self.name}: internal error {type(exc).__name__}: {exc}"
            await self.push(
                ErrorEvent(sid, sample, sample_rate_hz=rate, code="internal_error", message=msg, fatal=True)
            )
            self._fail(sid)

    def _fail(self, sid: str) -> None:
        self._failed.add(sid)
        self._safe_forget(sid)

    def iter_nodes(self) -> Iterable[Node]:
        """This node and, for containers, every node inside (depth first)."""
        yield self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


async def run_node(node: Node, edge: Edge) -> None:
    """The task body of one node: take items from its input edge until Stop."""
    task = asyncio.current_task()
    while True:
        item = await edge.get()
        await node.receive(item)
        if isinstance(item, Stop):
            return
        if task is not None and getattr(task, "cancelling", lambda: 0)():
            # A hook swallowed our cancellation (some libraries do): honour it now.
            raise asyncio.CancelledError


class _Tail:
    """The outlet at the end of a container: forwards to the container's outlet,
    and records which EOS / flush tokens / Stop went through (for waiting)."""

    def __init__(self, forward: Outlet | None, swallow_stop: bool = True, record: bool = True):
        self.forward = forward
        self.swallow_stop = swallow_stop
        self.record = record
        self._seen: dict[tuple[str, Any], asyncio.Event] = collections.defaultdict(asyncio.Event)

    def mark(self, key: tuple[str, Any]) -> None:
        if self.record:
            self._seen[key].set()

    async def wait(self, key: tuple[str, Any]) -> None:
        await self._seen[key].wait()
        self._seen.pop(key, None)

    async def put(self, item: Item) -> None:
        if isinstance(item, ControlFrame):
            self.put_control(item)
            return
        if self.forward is not None:
            await self.forward.put(item)
        if isinstance(item, EndOfStream):
            self.mark(("eos", item.stream_id))

    def put_control(self, frame: ControlFrame) -> None:
        if isinstance(frame, Stop):
            self.mark(("stop", None))
            if self.swallow_stop:
                return
        if isinstance(frame, Flush):
            self.mark(("flush", frame.token))
        if self.forward is not None:
            self.forward.put_control(frame)


class _Container(Node):
    """Shared start/stop of nodes that run child nodes on their own edges."""

    _edges: list[Edge]  # set by each container's __init__, one per child

    def __init__(self, name: str | None, edge: EdgeSpec):
        super().__init__(name)
        self.edge_spec = edge
        self._tasks: list[asyncio.Task[None]] = []

    def _children(self) -> Sequence[Node]:
        raise NotImplementedError

    def iter_nodes(self) -> Iterable[Node]:
        yield self
        for child in self._children():
            yield from child.iter_nodes()

    @property
    def edges(self) -> list[Edge]:
        """The bounded edges in front of this container's children (not nested ones: see ``iter_nodes``)."""
        return list(self._edges)

    async def start(self) -> None:
        started: list[Node] = []
        try:
            for child in self._children():
                await child.start()
                started.append(child)
        except BaseException:
            for child in reversed(started):
                await child.stop()
            raise
        assert self._ctx is not None
        for child, edge in zip(self._children(), self._edges):
            self._tasks.append(self._ctx.spawn(run_node(child, edge), f"{self.name}/{child.name}"))

    async def stop(self) -> None:
        for child in reversed(self._children()):
            await child.stop()


class Pipeline(_Container):
    """Nodes in a chain, each fed by its own bounded edge. A pipeline is a node.

    ``edge`` (default ``EdgeSpec(64, "block")``) builds the edge in front of each
    child; pass a list to give each edge its own spec.
    """

    def __init__(
        self, nodes: Sequence[Node], *, name: str = "pipeline", edge: EdgeSpec | Sequence[EdgeSpec] = EdgeSpec()
    ):
        if not nodes:
            raise ValueError("Pipeline needs at least one node")
        super().__init__(name, edge if isinstance(edge, EdgeSpec) else EdgeSpec())
        specs = [edge] * len(nodes) if isinstance(edge, EdgeSpec) else list(edge)
        if len(specs) != len(nodes):
            raise ValueError(f"Pipeline {name!r}: {len(nodes)} nodes but {len(specs)} edge specs")
        self.nodes = list(nodes)
        self._edges = [Edge(f"{name}/{n.name}", s) for n, s in zip(self.nodes, specs)]
        self._tail: _Tail | None = None

    def _children(self) -> Sequence[Node]:
        return self.nodes

    def bind(self, out: Outlet, ctx: RunContext) -> None:
        super().bind(out, ctx)
        self._tail = _Tail(out, record=False)
        for i, node in enumerate(self.nodes):
            node.bind(self._edges[i + 1] if i + 1 < len(self.nodes) else self._tail, ctx)

    async def receive(self, item: Item) -> None:
        if isinstance(item, Stop):
            self._edges[0].put_control(item)
            await asyncio.gather(*self._tasks)
            self.push_control(item)
        else:
            await self._edges[0].put(item)


class FanOut(_Container):
    """A tee: every item goes to each branch (own edge) and then on downstream.

    Branch outputs are discarded (branches are sinks or sink pipelines). EOS and
    Flush go on only once every branch has passed them, so when the graph's tail
    sees a stream's EOS, every sink has written that stream's finals. Give a
    branch a ``drop_oldest`` edge so a slow sink never stalls the others.
    """

    def __init__(
        self, branches: Sequence[Node], *, name: str = "fanout", edge: EdgeSpec | Sequence[EdgeSpec] = EdgeSpec(256)
    ):
        if not branches:
            raise ValueError("FanOut needs at least one branch")
        super().__init__(name, edge if isinstance(edge, EdgeSpec) else EdgeSpec())
        specs = [edge] * len(branches) if isinstance(edge, EdgeSpec) else list(edge)
        if len(specs) != len(branches):
            raise ValueError(f"FanOut {name!r}: {len(branches)} branches but {len(specs)} edge specs")
        self.branches = list(branches)
        self._edges = [Edge(f"{name}/{b.name}", s) for b, s in zip(self.branches, specs)]
        self._tails = [_Tail(None) for _ in self.branches]

    def _children(self) -> Sequence[Node]:
        return self.branches

    def bind(self, out: Outlet, ctx: RunContext) -> None:
        super().bind(out, ctx)
        for branch, tail in zip(self.branches, self._tails):
            branch.bind(tail, ctx)

    async def receive(self, item: Item) -> None:
        if isinstance(item, Stop):
            for edge in self._edges:
                edge.put_control(item)
            await asyncio.gather(*self._tasks)
            self.push_control(item)
            return
        if isinstance(item, Flush):
            for edge in self._edges:
                edge.put_control(item)
            await asyncio.gather(*(t.wait(("flush", item.token)) for t in self._tails))
            self.push_control(item)
            return
        if isinstance(item, ControlFrame):
            raise GraphStateError(f"fan-out {self.name!r} got an unknown control frame {item!r}")
        for edge in self._edges:
            await edge.put(item)
        if isinstance(item, EndOfStream):
            await asyncio.gather(*(t.wait(("eos", item.stream_id)) for t in self._tails))
        await self.push(item)


class Collect(Node):
    """Keeps every event that reaches it (``events``; internal hints only with ``keep_internal``)
    and passes it on. For tests and examples."""

    def __init__(self, name: str = "collect", *, keep_audio: bool = True, keep_internal: bool = False):
        super().__init__(name)
        self.events: list[Event] = []
        self.keep_audio = keep_audio
        self.keep_internal = keep_internal

    async def process(self, event: Event) -> None:
        if (self.keep_audio or not isinstance(event, AudioChunk)) and (self.keep_internal or not event.internal):
            self.events.append(event)
        await self.push(event)

    async def end_of_stream(self, eos: EndOfStream) -> None:
        self.events.append(eos)
        await self.push(eos)

    def of(self, stream_id: str) -> list[Event]:
        return [e for e in self.events if e.stream_id == stream_id]
