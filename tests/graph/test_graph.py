"""Graph semantics: ordering, backpressure, flush, cancellation, error isolation, nesting."""

import asyncio
import logging

import numpy as np
import pytest

from stream.errors import BadAudioError, GraphStateError, GraphTimeoutError
from stream.events import AudioChunk, EndOfStream, ErrorEvent, FinalTranscript, PartialTranscript, QueueOverflow
from stream.executor import Executor
from stream.graph import Graph
from stream.node import Collect, FanOut, Node, Pipeline
from stream.queues import Edge, EdgeSpec, Flush, Stop
from stream.sources.array import ArraySource
from stream.sources.base import Source


def chunk(sid="s", sample=0, n=10):
    return AudioChunk(sid, sample, samples=np.zeros(n, np.float32))


def audio(seconds=1.0, rate=16000):
    return (np.arange(int(seconds * rate)) % 1000).astype(np.float32) / 1000


class Tag(Node):
    """Appends its name to a list in the order it sees chunks (checks ordering through nodes)."""

    def __init__(self, name, log):
        super().__init__(name)
        self.log = log

    async def process(self, event):
        if isinstance(event, AudioChunk):
            self.log.append((self.name, event.stream_id, event.sample))
        await self.push(event)


class Accumulate(Node):
    """Counts samples per stream; emits a FinalTranscript only when flushed (like a recogniser)."""

    def __init__(self, name="acc"):
        super().__init__(name)
        self.counts = {}
        self.finals = 0

    async def process(self, event):
        if isinstance(event, AudioChunk):
            self.counts[event.stream_id] = self.counts.get(event.stream_id, 0) + event.num_samples
        await self.push(event)

    async def flush(self, stream_id):
        if self.counts.get(stream_id):
            self.finals += 1
            await self.push(
                FinalTranscript(
                    stream_id,
                    0,
                    segment_id=f"{stream_id}-{self.finals}",
                    text=str(self.counts[stream_id]),
                    end_sample=self.counts[stream_id],
                )
            )
            self.counts[stream_id] = 0

    def forget(self, stream_id):
        self.counts.pop(stream_id, None)


class Slow(Node):
    def __init__(self, delay_s, name="slow"):
        super().__init__(name)
        self.delay_s = delay_s
        self.seen = 0

    async def process(self, event):
        if isinstance(event, AudioChunk):
            await asyncio.sleep(self.delay_s)
            self.seen += 1
        await self.push(event)


def no_other_tasks():
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


# --------------------------------------------------------------------------- edges


async def test_edge_control_frames_jump_the_queue():
    e = Edge("e", EdgeSpec(8))
    for i in range(3):
        await e.put(chunk(sample=i * 10))
    await e.put(Flush("s", 1))
    e.put_control(Stop())
    assert isinstance(await e.get(), Flush)
    assert isinstance(await e.get(), Stop)
    assert [(await e.get()).sample for _ in range(3)] == [0, 10, 20]


async def test_edge_drop_oldest_counts_and_reports_but_keeps_eos():
    e = Edge("cap", EdgeSpec(3, "drop_oldest"))
    await e.put(EndOfStream("other", 0))  # never droppable
    for i in range(6):
        await e.put(chunk(sample=i * 10))  # never waits
    assert len(e) == 3 and e.dropped("s") == 4 and e.dropped() == 4
    first = await e.get()
    assert isinstance(first, QueueOverflow) and first.edge == "cap" and first.dropped_total == 4 and first.sample == 30
    assert isinstance(await e.get(), EndOfStream)
    assert [(await e.get()).sample for _ in range(2)] == [40, 50]


async def test_edge_block_waits_for_room():
    e = Edge("b", EdgeSpec(2, "block"))
    await e.put(chunk(sample=0))
    await e.put(chunk(sample=10))
    put = asyncio.create_task(e.put(chunk(sample=20)))
    await asyncio.sleep(0.01)
    assert not put.done()
    assert (await e.get()).sample == 0
    await asyncio.wait_for(put, 1)
    assert e.dropped() == 0 and not e.put_nowait(chunk(sample=30))


def test_edge_spec_validates():
    with pytest.raises(ValueError, match="overflow"):
        EdgeSpec(4, "drop_newest")
    with pytest.raises(ValueError, match="maxsize"):
        EdgeSpec(0)


# --------------------------------------------------------------------------- graph


async def test_ordering_through_nested_pipelines_and_fanout():
    log = []
    branch = Collect("branch")
    sink = Collect()
    inner = Pipeline([Tag("b", log), Pipeline([Tag("c", log)], name="innermost")], name="inner", edge=EdgeSpec(2))
    graph = Graph(
        [
            ArraySource(audio(0.5), 16000, stream_id="x", block=[100, 7, 333]),
            ArraySource(audio(0.3), 16000, stream_id="y", block=50),
        ],
        [Tag("a", log), inner, FanOut([Pipeline([Tag("d", log), branch], name="br")]), sink],
        edge=EdgeSpec(3),
        bug_policy="raise",
    )
    await graph.run()
    for sid, n in (("x", 8000), ("y", 4800)):
        got = [e for e in sink.of(sid) if isinstance(e, AudioChunk)]
        assert [c.sample for c in got] == sorted(c.sample for c in got)
        assert sum(c.num_samples for c in got) == n
        assert sink.of(sid)[-1] == EndOfStream(sid, n)
        assert [e.sample for e in branch.of(sid)] == [e.sample for e in sink.of(sid)]
        for name in "abcd":
            assert [s for (nm, sd, s) in log if nm == name and sd == sid] == [c.sample for c in got]
    assert no_other_tasks() == []


async def test_flush_at_end_of_stream_reaches_sinks_before_run_returns():
    acc = Accumulate()
    slow_sink = Pipeline([Slow(0.005), Collect("slow_sink")], name="slow")
    graph = Graph(
        [ArraySource(audio(0.2), 16000, stream_id="a", block=320)], [acc, FanOut([slow_sink])], bug_policy="raise"
    )
    await graph.run()
    written = slow_sink.nodes[-1].events
    assert [type(e).__name__ for e in written[-2:]] == ["FinalTranscript", "EndOfStream"]
    assert written[-2].text == "3200"


async def test_graph_flush_mid_stream():
    sink = Collect()
    acc = Accumulate()
    src = ArraySource(audio(5.0), 16000, stream_id="live", block=1600, realtime=True)
    graph = Graph([src], [acc, sink], bug_policy="raise")
    await graph.start()
    while not any(isinstance(e, AudioChunk) for e in sink.events):
        await asyncio.sleep(0.01)
    await graph.flush("live", timeout_s=5)
    finals = [e for e in sink.events if isinstance(e, FinalTranscript)]
    assert len(finals) == 1 and int(finals[0].text) > 0  # emitted mid-stream, before flush returned
    await graph.stop(timeout_s=5)  # graceful: source asked to stop, stream ends with EOS
    assert isinstance(sink.events[-1], EndOfStream)
    total = sum(e.num_samples for e in sink.events if isinstance(e, AudioChunk))
    assert sink.events[-1].sample == total < 16000 * 5
    assert sum(int(e.text) for e in sink.events if isinstance(e, FinalTranscript)) == total
    assert no_other_tasks() == []


async def test_backpressure_slow_sink_does_not_stall_capture():
    n_chunks = 60
    emitted = []
    sink = Collect(keep_audio=True)
    slow = Slow(0.05)

    class Paced(ArraySource):
        async def run(self, emit):
            async def tracking(c):
                await emit(c)
                emitted.append(slow.seen)  # how far the slow node was when capture moved on

            await super().run(tracking)

    src = Paced(
        audio(n_chunks * 0.01),
        16000,
        stream_id="mic",
        block=160,
        realtime=True,
        capture_edge=EdgeSpec(4, "drop_oldest"),
    )
    graph = Graph([src], [slow, sink], edge=EdgeSpec(2), bug_policy="raise")
    await graph.run(timeout_s=30)
    # Capture produced every chunk while the slow node was far behind (it never waited for it) ...
    assert len(emitted) == n_chunks and emitted[-1] < n_chunks // 2
    # ... and the drops are counted on the capture edge and surfaced as events.
    dropped = graph.capture_edge("mic").dropped("mic")
    assert dropped > 0
    reports = [e for e in sink.events if isinstance(e, QueueOverflow)]
    assert reports and reports[-1].dropped_total == dropped and reports[-1].edge == "capture:mic"
    assert sum(isinstance(e, AudioChunk) for e in sink.events) == n_chunks - dropped
    assert isinstance(sink.events[-1], EndOfStream) and sink.events[-1].sample == n_chunks * 160


async def test_fast_file_source_blocks_instead_of_dropping():
    slow = Slow(0.001)
    graph = Graph([ArraySource(audio(0.5), 16000, stream_id="f", block=160)], [slow, Collect()], edge=EdgeSpec(2))
    await graph.run()
    assert graph.capture_edge("f").dropped() == 0 and slow.seen == 50


class FailOn(Node):
    def __init__(self, stream_id, at_sample, exc):
        super().__init__("failon")
        self.stream_id, self.at_sample, self.exc = stream_id, at_sample, exc
        self.forgotten = []

    async def process(self, event):
        if isinstance(event, AudioChunk) and event.stream_id == self.stream_id and event.sample == self.at_sample:
            raise self.exc
        await self.push(event)

    def forget(self, stream_id):
        self.forgotten.append(stream_id)


def two_streams():
    return [
        ArraySource(audio(0.5), 16000, stream_id="good", block=800),
        ArraySource(audio(0.5), 16000, stream_id="bad", block=800),
    ]


@pytest.mark.parametrize("fatal", [True, False])
async def test_stream_error_isolated_to_its_stream(fatal):
    sink = Collect()
    node = FailOn("bad", 1600, BadAudioError("broken block", fatal=fatal))
    graph = Graph(two_streams(), [node, Accumulate(), sink], bug_policy="raise")
    await graph.run()
    good = sink.of("good")
    assert not any(isinstance(e, ErrorEvent) for e in good)
    assert sum(e.num_samples for e in good if isinstance(e, AudioChunk)) == 8000
    assert isinstance(good[-1], EndOfStream) and isinstance(good[-2], FinalTranscript)
    bad = sink.of("bad")
    errors = [e for e in bad if isinstance(e, ErrorEvent)]
    assert [(e.code, e.fatal, e.sample) for e in errors] == [("bad_audio", fatal, 1600)]
    assert "failon: broken block" in errors[0].message
    n_bad = sum(e.num_samples for e in bad if isinstance(e, AudioChunk))
    assert n_bad == (1600 if fatal else 8000 - 800)  # fatal: the stream stops at that node
    assert isinstance(bad[-1], EndOfStream)  # EOS still passes, downstream flushed
    assert node.forgotten.count("bad") == (2 if fatal else 1)  # at the error and at EOS


async def test_bug_isolated_and_logged_with_traceback(caplog):
    sink = Collect()
    graph = Graph(two_streams(), [FailOn("bad", 800, KeyError("oops")), sink])  # default bug_policy="isolate"
    with caplog.at_level(logging.ERROR, logger="stream.node"):
        await graph.run()
    errors = [e for e in sink.events if isinstance(e, ErrorEvent)]
    assert [(e.stream_id, e.code, e.fatal) for e in errors] == [("bad", "internal_error", True)]
    assert "KeyError" in errors[0].message
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)
    assert isinstance(sink.of("good")[-1], EndOfStream)


async def test_bug_policy_raise_stops_graph_cleanly():
    graph = Graph(two_streams(), [FailOn("bad", 800, KeyError("oops")), Collect()], bug_policy="raise")
    with pytest.raises(KeyError, match="oops"):
        await graph.run()
    assert no_other_tasks() == []


async def test_cancellation_leaves_no_tasks():
    stopped = []

    class Closing(Collect):
        async def stop(self):
            stopped.append(self.name)

    sink = Closing()
    graph = Graph([ArraySource(audio(30), 16000, stream_id="long", block=1600, realtime=True)], [Slow(0.001), sink])
    runner = asyncio.create_task(graph.run())
    while not sink.events:
        await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert no_other_tasks() == []
    assert stopped == ["collect"]
    assert isinstance(sink.events[-1], EndOfStream)  # cancelled run still ended the stream gracefully


async def test_stop_timeout_cancels_and_reports():
    class Stuck(Node):
        async def process(self, event):
            await asyncio.sleep(3600)

    graph = Graph([ArraySource(audio(1), 16000, stream_id="s")], [Stuck("stuck")])
    await graph.start()
    await asyncio.sleep(0.05)
    with pytest.raises(GraphTimeoutError, match="stop did not finish"):
        await graph.stop(timeout_s=0.2)
    assert no_other_tasks() == []


async def test_start_errors_raise_and_release():
    class Broken(Source):
        async def start(self):
            raise FileNotFoundError("no such input")

        async def run(self, emit):
            pass

    class Closing(Node):
        closed = False

        async def stop(self):
            Closing.closed = True

    graph = Graph([Broken("x")], [Closing("c")])
    with pytest.raises(FileNotFoundError):
        await graph.run()
    assert no_other_tasks() == []


async def test_misuse_is_reported():
    node = Node("n")
    g1 = Graph([], [node])
    await g1.start()
    g2 = Graph([ArraySource(audio(0.1), 16000, stream_id="a")], [node])
    with pytest.raises(GraphStateError, match="already placed"):
        await g2.start()
    with pytest.raises(GraphStateError, match="already running"):
        await g1.start()
    await g1.stop()
    assert no_other_tasks() == []
    with pytest.raises(GraphStateError, match="duplicate"):
        Graph([ArraySource(audio(0.1), 16000, stream_id="a"), ArraySource(audio(0.1), 16000, stream_id="a")], [])


async def test_an_unknown_control_frame_is_a_clear_error():
    from dataclasses import dataclass

    from stream.node import RunContext
    from stream.queues import ControlFrame

    @dataclass(frozen=True, slots=True)
    class Odd(ControlFrame):
        pass

    for node in (Node("n"), FanOut([Collect()], name="f")):
        node.bind(Edge("out", EdgeSpec()), RunContext(spawn=lambda aw, name: asyncio.ensure_future(aw)))
        with pytest.raises(GraphStateError, match="unknown control frame"):
            await node.receive(Odd())


async def test_executor_runs_off_loop_with_bounded_concurrency():
    import threading
    import time

    pool = Executor(2, name="t")
    active, peak = [0], [0]
    lock = threading.Lock()
    loop_thread = threading.get_ident()

    def work(i):
        assert threading.get_ident() != loop_thread
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return i * i

    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    t = asyncio.create_task(ticker())
    assert await asyncio.gather(*(pool.run(work, i) for i in range(8))) == [i * i for i in range(8)]
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    await pool.aclose()
    assert peak[0] == 2 and ticks > 0  # the loop kept running while work ran
    with pytest.raises(RuntimeError, match="closed"):
        await pool.run(work, 1)


async def test_partial_transcripts_are_droppable_finals_are_not():
    e = Edge("ev", EdgeSpec(2, "drop_oldest"))
    await e.put(FinalTranscript("s", 0, segment_id="1", text="a"))
    await e.put(PartialTranscript("s", 0, segment_id="2", text="b"))
    await e.put(PartialTranscript("s", 0, segment_id="2", revision=1, text="bc"))
    items = [await e.get() for _ in range(3)]
    assert [type(i).__name__ for i in items] == ["QueueOverflow", "FinalTranscript", "PartialTranscript"]
    assert items[2].text == "bc"


async def test_task_swallowing_cancellation_is_bounded_and_reported():
    released = asyncio.Event()

    class Stubborn(Node):
        async def process(self, event):
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:  # a badly behaved library
                await released.wait()

    closed = []

    class Closing(Node):
        async def stop(self):
            closed.append(self.name)

    graph = Graph([ArraySource(audio(1), 16000, stream_id="s")], [Stubborn("stubborn"), Closing("after")])
    await graph.start()
    await asyncio.sleep(0.05)
    try:
        with pytest.raises(GraphTimeoutError, match="ignored cancellation: .*stubborn"):
            await graph.stop(timeout_s=0.1, cancel_timeout_s=0.1)
        assert closed == ["after"]  # resources still closed
    finally:
        released.set()
    for _ in range(100):  # the stubborn task honours its cancellation once its hook returns
        if not no_other_tasks():
            break
        await asyncio.sleep(0.01)
    assert no_other_tasks() == []


async def test_sources_added_while_running_are_released_when_they_end():
    stopped = []

    class Tracked(ArraySource):
        async def stop(self):
            stopped.append(self.stream_id)

    sink = Collect(keep_audio=False)
    graph = Graph([], [Accumulate(), sink], bug_policy="raise")
    await graph.start()
    for i in range(5):
        await graph.start_source(Tracked(audio(0.05), 16000, stream_id=f"conn{i}", block=160))
    await graph.wait_streams()
    assert graph.sources == [] and sorted(stopped) == [f"conn{i}" for i in range(5)]
    await graph.start_source(Tracked(audio(0.05), 16000, stream_id="conn0", block=160))  # an id may come back
    await graph.stop()
    ends = [e.stream_id for e in sink.events if isinstance(e, EndOfStream)]
    assert sorted(ends[:5]) == [f"conn{i}" for i in range(5)] and ends[5:] == ["conn0"]
    assert no_other_tasks() == []


async def test_cancel_stream_drops_its_audio_skips_its_work_and_still_ends_it():
    """``Graph.cancel_stream`` (a network client vanished): nodes drop the stream's audio, the
    stream still ends (EOS at the tail, nodes forget it), other streams are untouched."""
    from stream.sources.push import PushSource

    class Slow(Node):
        def __init__(self):
            super().__init__("slow")
            self.samples: dict[str, int] = {}

        async def process(self, event):
            if isinstance(event, AudioChunk):
                await asyncio.sleep(0.005)
                self.samples[event.stream_id] = self.samples.get(event.stream_id, 0) + event.samples.shape[0]
            await self.push(event)

    slow, ends = Slow(), []
    g = Graph(nodes=[slow], on_event=lambda e: ends.append(e.stream_id) if isinstance(e, EndOfStream) else None)
    await g.start()
    a, b = (PushSource(s, 16000, capture_edge=EdgeSpec(64, "block")) for s in ("a", "b"))
    await g.start_source(a)
    await g.start_source(b)
    for _ in range(100):  # 100 chunks each: 0.5 s of work per stream
        await a.feed(np.zeros(160, np.float32))
        await b.feed(np.zeros(160, np.float32))
    dropped = a.discard() + g.cancel_stream("a")
    b.end()

    async def both_ended():
        while set(ends) != {"a", "b"}:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(both_ended(), 10)
    assert slow.samples["b"] == 100 * 160  # the other stream: every sample
    assert slow.samples.get("a", 0) + dropped <= 100 * 160 and slow.samples.get("a", 0) < 100 * 160
    assert not slow.open_streams and not g.sources and not g._ctx.cancelled
    assert g.cancel_stream("a") == 0  # an ended stream: nothing to do
    await g.stop()
