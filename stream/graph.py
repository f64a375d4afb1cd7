"""The graph: sources feeding one pipeline of nodes, run on one event loop.

::

    from stream.graph import Graph
    from stream.node import FanOut
    from stream.queues import EdgeSpec
    from stream.resample import Resample
    from stream.sources.file import FileSource
    from stream.vad_node import VadNode

    graph = Graph(
        sources=[FileSource("talk.wav", stream_id="talk")],
        nodes=[Resample(), VadNode.webrtc(), recognizer, FanOut([jsonl_sink, srt_sink])],
        edge=EdgeSpec(maxsize=64, overflow="block"),
    )
    await graph.run()             # start, wait until every stream ended, stop

    # or, by hand (a microphone runs until asked to stop):
    async with Graph(sources=[MicSource(device="USB")], nodes=[...]) as graph:
        ...
        await graph.flush("mic", timeout_s=5)   # emit pending results now
    # leaving the block = graph.stop(): sources end, every pending final is
    # flushed to the sinks, node tasks end, resources close.

Shape of a running graph::

    source A -> capture edge A --\\
                                  >-- edge -> node 1 -> edge -> node 2 -> ... -> tail
    source B -> capture edge B --/

- Each source runs in its own task and feeds its own capture edge (policy from
  the source: ``drop_oldest`` for real-time capture, ``block`` for fast files); a
  forwarder task moves items into the pipeline. Capture never waits for the model.
- Every stream ends with exactly one ``EndOfStream`` that travels in order behind
  its data; each node flushes that stream before passing it on.
- ``Flush`` and ``Stop`` are control frames that jump the queues.
- Nodes run sequentially, one task each; model nodes await an
  :class:`~stream.executor.Executor`, so the loop stays free.
- Errors follow the policy in :mod:`stream.node` (``bug_policy``).
- Streams come and go: ``await graph.start_source(src)`` adds one to a running
  graph (servers); a source is stopped and forgotten as soon as its stream's
  EOS reaches the tail, so a graph can run for days. ``on_event`` sees every
  event that reaches the tail but internal hints (``Event.internal``: a graph
  without a recogniser passes the VAD's ``SpeechPausing`` on).

Lifecycle and timeouts: ``start(timeout_s)`` opens sources and nodes (config
errors raise here); ``stop(timeout_s)`` is graceful (sources asked to stop, every
EOS reaches the tail, then nodes end) and falls back to cancelling every task,
waiting at most ``cancel_timeout_s`` in case a library swallows cancellation,
then raises :class:`~stream.errors.GraphTimeoutError`. Only a task that ignores
cancellation outlives ``stop`` (it is named in that error, and ends as soon as
its blocking call returns).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from .errors import GraphStateError, GraphTimeoutError, StreamError
from .events import AudioChunk, EndOfStream, ErrorEvent, Event
from .node import BugPolicy, Node, Pipeline, RunContext, _Tail
from .queues import ControlFrame, Edge, EdgeSpec, Flush, Item, Stop
from .sources.base import Source

__all__ = ["Graph"]

log = logging.getLogger("stream.graph")

KEEP_CAPTURE_EDGES = 256


class _GraphTail(_Tail):
    def __init__(self, graph: Graph, on_event: Callable[[Event], None] | None):
        super().__init__(None, swallow_stop=False)
        self.graph = graph
        self.on_event = on_event

    async def put(self, item: Item) -> None:
        if isinstance(item, Event) and self.on_event is not None and not item.internal:
            self.on_event(item)
        await super().put(item)
        if isinstance(item, EndOfStream):
            self._seen.pop(("eos", item.stream_id), None)
            self.graph._stream_ended(item.stream_id)
        self.graph._wake.set()

    def put_control(self, frame: ControlFrame) -> None:
        super().put_control(frame)
        self.graph._wake.set()


class Graph:
    """Sources -> one :class:`~stream.node.Pipeline` of nodes -> tail. See module docstring."""

    def __init__(
        self,
        sources: Iterable[Source] = (),
        nodes: Sequence[Node] | Pipeline = (),
        *,
        edge: EdgeSpec = EdgeSpec(),
        bug_policy: BugPolicy = "isolate",
        on_event: Callable[[Event], None] | None = None,
        name: str = "graph",
    ):
        if bug_policy not in ("isolate", "raise"):
            raise ValueError(f"bug_policy must be 'isolate' or 'raise', got {bug_policy!r}")
        if isinstance(nodes, Pipeline):
            self.pipeline = nodes
        else:
            self.pipeline = Pipeline(list(nodes) or [Node("pass")], name=name, edge=edge)
        self.name = name
        self.bug_policy = bug_policy
        self.sources: list[Source] = []  # sources not ended yet (an ended stream's source is dropped)
        self._tail = _GraphTail(self, on_event)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._source_tasks: dict[str, list[asyncio.Task[Any]]] = {}
        self._capture: collections.OrderedDict[str, Edge] = collections.OrderedDict()  # recent capture edges
        self._wake = asyncio.Event()
        self._failure: BaseException | None = None
        self._tokens = itertools.count(1)
        self._state = "new"  # new -> running -> stopped
        self._ctx: RunContext | None = None
        for src in sources:
            self.add_source(src)

    # ------------------------------------------------------------------ observers

    @property
    def running(self) -> bool:
        return self._state == "running"

    def cancel_stream(self, stream_id: str) -> int:
        """Nobody will read a live stream's results (its client vanished): drop its audio waiting
        on the capture edge, and let every node drop the rest and skip costly end-of-stream work.
        The stream still ends (EndOfStream reaches the tail; nodes forget it). Returns the samples
        dropped from the capture edge, at the source's rate."""
        if stream_id not in self._source_tasks or self._ctx is None:
            return 0
        self._ctx.cancelled.add(stream_id)
        edge = self._capture.get(stream_id)
        if edge is None:
            return 0
        gone = edge.discard(lambda x: isinstance(x, AudioChunk) and x.stream_id == stream_id)
        return sum(int(x.samples.shape[0]) for x in gone if isinstance(x, AudioChunk))

    def capture_edge(self, stream_id: str) -> Edge:
        """The capture edge of a source (its ``dropped()`` counter, for tests and stats).
        Kept for the last ``KEEP_CAPTURE_EDGES`` streams after they end."""
        return self._capture[stream_id]

    def nodes(self) -> list[Node]:
        return list(self.pipeline.iter_nodes())

    # ------------------------------------------------------------------ lifecycle

    def add_source(self, source: Source) -> None:
        """Add a source; allowed before start or while running (it starts at once)."""
        if any(s.stream_id == source.stream_id for s in self.sources):
            raise GraphStateError(f"duplicate stream_id {source.stream_id!r}")
        if self._state != "new":
            raise GraphStateError(f"graph is {self._state}; use 'await graph.start_source(src)' on a running graph")
        self.sources.append(source)

    async def start_source(self, source: Source, timeout_s: float = 10.0) -> None:
        """Add and start a source on a running graph."""
        if self._state != "running":
            raise GraphStateError("start_source needs a running graph; use add_source before start")
        if any(s.stream_id == source.stream_id for s in self.sources):
            raise GraphStateError(f"duplicate stream_id {source.stream_id!r}")
        await self._wait_for(source.start(), timeout_s, f"start of source {source.stream_id!r}")
        self.sources.append(source)
        self._launch_source(source)

    async def start(self, timeout_s: float = 10.0) -> None:
        """Open every source and node; config errors raise here (resources are released)."""
        if self._state != "new":
            raise GraphStateError(f"graph already {self._state}")
        self._state = "running"
        ctx = self._ctx = RunContext(spawn=self._spawn, bug_policy=self.bug_policy)
        self.pipeline.bind(self._tail, ctx)
        started: list[Source] = []
        try:

            async def open_all() -> None:
                for src in self.sources:
                    await src.start()
                    started.append(src)
                await self.pipeline.start()

            await self._wait_for(open_all(), timeout_s, "graph start")
        except BaseException:
            self._state = "stopped"
            await self._abort(2.0)
            for src in started:
                await self._close(src.stop(), f"source {src.stream_id!r}")
            raise
        for src in self.sources:
            self._launch_source(src)

    async def run(self, timeout_s: float | None = None, *, stop_timeout_s: float = 10.0) -> None:
        """Start if needed, wait until every source's EOS reached the tail, stop.

        On cancellation (Ctrl-C), stops gracefully first, then re-raises.
        """
        if self._state == "new":
            await self.start()
        try:
            await self._wait_for(self.wait_streams(), timeout_s, "graph run")
        except asyncio.CancelledError:
            await self.stop(stop_timeout_s)
            raise
        except BaseException:
            await self.stop(stop_timeout_s, drain=False)
            raise
        await self.stop(stop_timeout_s)

    async def wait_streams(self) -> None:
        """Wait until the EOS of every source added so far reached the tail."""
        await self._until(lambda: not self.sources)

    async def flush(self, stream_id: str | None = None, timeout_s: float = 10.0) -> None:
        """Make every node emit what is pending for ``stream_id`` (None: all), and wait
        until that reached the tail (so sinks have written it)."""
        self._check_running()
        token = next(self._tokens)
        await self.pipeline.receive(Flush(stream_id, token))
        await self._wait_for(self._until(lambda: ("flush", token) in self._tail._seen), timeout_s, "flush")
        self._tail._seen.pop(("flush", token), None)

    async def stop(self, timeout_s: float = 10.0, *, drain: bool = True, cancel_timeout_s: float = 2.0) -> None:
        """Stop the graph. ``drain``: end every stream and flush it to the tail first."""
        if self._state == "stopped":
            return
        if self._state == "new":
            self._state = "stopped"
            return
        self._state = "stopped"
        timed_out = False
        try:
            if drain and self._failure is None:
                for src in self.sources:
                    src.request_stop()
                await self._wait_for(self._drain(), timeout_s, "graph stop")
        except GraphTimeoutError:
            timed_out = True
        except Exception as exc:
            if exc is not self._failure:
                raise
        finally:
            abort_error: GraphTimeoutError | None = None
            try:
                await self._abort(cancel_timeout_s)
            except GraphTimeoutError as exc:
                abort_error = exc
            await self._close(self.pipeline.stop(), "pipeline")
        if self._failure is not None:
            raise self._failure
        if abort_error is not None:
            raise abort_error
        if timed_out:
            raise GraphTimeoutError(
                f"graph {self.name!r}: stop did not finish within {timeout_s} s; tasks were cancelled"
            )

    async def __aenter__(self) -> Graph:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.stop(drain=exc_type is None or exc_type is asyncio.CancelledError)

    # ------------------------------------------------------------------ internals

    async def _drain(self) -> None:
        await self.wait_streams()
        await self.pipeline.receive(Stop())
        await self._until(lambda: ("stop", None) in self._tail._seen)

    def _check_running(self) -> None:
        if self._state != "running":
            raise GraphStateError(f"graph is {self._state}, not running")

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # also marks it retrieved
        if exc is not None and self._failure is None:
            log.error("graph %r: task %s failed", self.name, task.get_name(), exc_info=exc)
            self._failure = exc
        self._wake.set()

    async def _until(self, predicate: Callable[[], bool]) -> None:
        while True:
            if self._failure is not None:
                raise self._failure
            if predicate():
                return
            self._wake.clear()
            await self._wake.wait()

    @staticmethod
    async def _wait_for(aw: Awaitable[Any], timeout_s: float | None, what: str) -> Any:
        try:
            return await asyncio.wait_for(aw, timeout_s)
        except asyncio.TimeoutError as exc:
            raise GraphTimeoutError(f"{what} did not finish within {timeout_s} s") from exc

    async def _abort(self, cancel_timeout_s: float) -> None:
        """Cancel every task still alive; wait at most ``cancel_timeout_s`` for them."""
        pending = [t for t in self._tasks if not t.done()]
        for t in pending:
            t.cancel()
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=cancel_timeout_s)
        if still:
            names = ", ".join(sorted(t.get_name() for t in still))
            log.error("graph %r: tasks ignored cancellation for %s s: %s", self.name, cancel_timeout_s, names)
            raise GraphTimeoutError(f"graph {self.name!r}: tasks ignored cancellation: {names}")

    @staticmethod
    async def _close(aw: Awaitable[None], what: str) -> None:
        try:
            await asyncio.wait_for(aw, 10.0)
        except Exception:
            log.exception("closing %s failed", what)

    def _stream_ended(self, sid: str) -> None:
        """A stream's EOS reached the tail: forget its source (long-running servers add many)."""
        if self._ctx is not None:
            self._ctx.cancelled.discard(sid)
        self.sources = [s for s in self.sources if s.stream_id != sid]
        self._source_tasks.pop(sid, None)

    def _launch_source(self, src: Source) -> None:
        edge = Edge(f"capture:{src.stream_id}", src.capture_edge)
        self._capture[src.stream_id] = edge
        self._capture.move_to_end(src.stream_id)
        while len(self._capture) > KEEP_CAPTURE_EDGES:
            self._capture.popitem(last=False)
        self._source_tasks[src.stream_id] = [
            self._spawn(self._run_source(src, edge), f"source:{src.stream_id}"),
            self._spawn(self._forward(src.stream_id, edge), f"forward:{src.stream_id}"),
        ]

    async def _run_source(self, src: Source, edge: Edge) -> None:
        sid = src.stream_id
        pos: dict[str, int | None] = {"sample": 0, "rate": None}

        async def emit(chunk: Event) -> None:
            if chunk.stream_id != sid:
                raise StreamError(f"source {sid!r} emitted an event of stream {chunk.stream_id!r}")
            if not isinstance(chunk, AudioChunk):  # a source's own report (overflow, non-fatal error)
                if isinstance(chunk, EndOfStream):
                    raise StreamError(f"source {sid!r} emitted EndOfStream; return from run() instead")
                await edge.put(chunk)
                return
            if chunk.sample < (pos["sample"] or 0):  # gaps are allowed (a mic dropped blocks), overlaps are not
                raise StreamError(
                    f"source {sid!r}: chunk at sample {chunk.sample} overlaps audio up to {pos['sample']}"
                )
            pos["sample"] = chunk.end_sample
            pos["rate"] = chunk.sample_rate_hz
            await edge.put(chunk)

        def rate() -> int:
            if pos["rate"] is not None:
                return int(pos["rate"])
            try:
                return int(src.sample_rate_hz)
            except Exception:
                return 16_000

        try:
            await self._produce(src, edge, emit, pos, rate)
        finally:
            await self._close(src.stop(), f"source {sid!r}")  # right away: a server may run for days

    async def _produce(self, src: Source, edge: Edge, emit: Any, pos: dict[str, Any], rate: Callable[[], int]) -> None:
        sid = src.stream_id
        try:
            await src.run(emit)
        except StreamError as exc:
            await edge.put(
                ErrorEvent(
                    sid, pos["sample"], sample_rate_hz=rate(), code=exc.code, message=f"source {sid}: {exc}", fatal=True
                )
            )
        except Exception as exc:
            log.error("graph %r: source %r failed (bug)", self.name, sid, exc_info=exc)
            if self.bug_policy == "raise":
                raise
            await edge.put(
                ErrorEvent(
                    sid,
                    pos["sample"],
                    sample_rate_hz=rate(),
                    code="internal_error",
                    message=f"source {sid}: internal error {type(exc).__name__}: {exc}",
                    fatal=True,
                )
            )
        await edge.put(EndOfStream(sid, pos["sample"], sample_rate_hz=rate()))

    async def _forward(self, sid: str, edge: Edge) -> None:
        while True:
            item = await edge.get()
            await self.pipeline.receive(item)
            if isinstance(item, EndOfStream):
                return
