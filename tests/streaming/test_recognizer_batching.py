"""Cross-stream batching in the recogniser: several streams through one step_batch forward give the
same events as one step per chunk, and one stream's bad chunk does not fail the others."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.api import load_model
from stream.errors import ConfigError
from stream.events import ErrorEvent, FinalTranscript, PartialTranscript
from stream.graph import Graph
from stream.node import Collect
from stream.recognizer import Recognizer, RecognizerConfig
from stream.sources.array import ArraySource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_tiny import build_tiny  # noqa: E402

from tests.streamkit import gated_tones as audio

CFG = RecognizerConfig(chunk_ms=320, left_context_ms=1280, max_utterance_ms=600)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    return load_model(build_tiny("wav2vec2", "ctc", tmp_path_factory.mktemp("tiny_ctc")))


async def run(model, streams: dict[str, np.ndarray], cfg: RecognizerConfig, policy: str = "raise"):
    rec, collect = Recognizer(model, cfg), Collect(keep_audio=False)
    sources = [ArraySource(x, 16000, stream_id=sid, block=(1000, 2300, 517)) for sid, x in streams.items()]
    await Graph(sources=sources, nodes=[rec, collect], bug_policy=policy).run(timeout_s=120)
    return rec, collect


def transcript(events) -> list[tuple]:
    return [
        (
            type(e).__name__,
            e.segment_id,
            e.revision,
            e.text,
            e.sample,
            e.end_sample,
            tuple((w.text, w.start_sample, w.end_sample) for w in e.words),
        )
        for e in events
        if isinstance(e, (PartialTranscript, FinalTranscript))
    ]


async def test_batched_streams_give_the_unbatched_events(model) -> None:
    streams = {"a": audio(0, 1.7), "b": audio(1, 2.3), "c": audio(2, 1.1)}
    rec1, one = await run(model, streams, replace(CFG, max_batch=1))
    rec3, batched = await run(model, streams, replace(CFG, max_batch=3, max_wait_ms=50))
    assert rec1.stats.batches == 0
    assert rec3.stats.batches > 0 and rec3.stats.largest_batch > 1  # batches really happened
    assert rec3.stats.steps == rec1.stats.steps
    for sid in streams:
        got, want = transcript(batched.of(sid)), transcript(one.of(sid))
        assert any(k == "FinalTranscript" for k, *_ in want)
        assert got == want
        assert [type(e) for e in batched.of(sid)] == [type(e) for e in one.of(sid)]


async def test_a_batch_holds_at_most_max_batch_streams(model) -> None:
    streams = {"a": audio(0, 1.7), "b": audio(1, 2.3), "c": audio(2, 1.1)}
    _, one = await run(model, streams, replace(CFG, max_batch=1))
    rec2, two = await run(model, streams, replace(CFG, max_batch=2, max_wait_ms=1000))
    assert rec2.stats.batches > 0 and rec2.stats.largest_batch == 2
    for sid in streams:
        assert transcript(two.of(sid)) == transcript(one.of(sid))


async def test_a_lone_chunk_waits_at_most_max_wait_ms(model) -> None:
    """One stream, batch limit never reached: each chunk runs when the wait timer fires."""
    import asyncio

    rec, collect = Recognizer(model, replace(CFG, max_batch=8, max_wait_ms=30)), Collect(keep_audio=True)
    graph = Graph(sources=[], nodes=[rec, collect], bug_policy="raise")
    await graph.start()
    try:
        from stream.events import AudioChunk

        loop = asyncio.get_running_loop()
        await rec.receive(AudioChunk("s", 0, samples=audio(0, 0.32)))
        t0 = loop.time()
        assert rec._timer is not None and not collect.events  # waiting for other streams
        await asyncio.wait_for(rec._timer, 10)
        assert 0.02 <= loop.time() - t0 < 5
        for _ in range(500):  # the collector's task takes the events off its edge (bounded: 5 s)
            if any(isinstance(e, AudioChunk) for e in collect.events):
                break
            await asyncio.sleep(0.01)
        assert isinstance(collect.events[-1], AudioChunk)  # stepped (its partial, if any, first), passed on
        assert rec.stats.steps == 1 and rec.stats.batches == 0
    finally:
        await graph.stop()


class OneBadStream:
    """A model whose forward raises on chunks of the stream whose audio is the constant 0.5."""

    def __init__(self, model):
        self._model = model
        self.failed_batches = 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    @staticmethod
    def _bad(chunk) -> bool:
        return bool(chunk.shape[0]) and bool((chunk == 0.5).all())

    def step(self, chunk, state):
        if self._bad(chunk):
            raise RuntimeError("bad chunk")
        return self._model.step(chunk, state)

    def step_batch(self, chunks, states):
        if any(self._bad(c) for c in chunks):
            self.failed_batches += 1
            raise RuntimeError("bad chunk in batch")
        return self._model.step_batch(chunks, states)


async def test_a_bad_stream_does_not_fail_its_batch(model) -> None:
    good = {"a": audio(0, 1.7), "b": audio(1, 2.3)}
    streams = {**good, "bad": np.full(16000, 0.5, np.float32)}
    cfg = replace(CFG, max_batch=3, max_wait_ms=50)
    _, alone = await run(model, good, replace(CFG, max_batch=1))
    flaky = OneBadStream(model)
    _, mixed = await run(flaky, streams, cfg, policy="isolate")
    assert flaky.failed_batches > 0  # the bad chunk shared a batch with good ones, which were redone alone
    errors = [e for e in mixed.events if isinstance(e, ErrorEvent)]
    assert [e.stream_id for e in errors] == ["bad"] and errors[0].code == "internal_error"
    for sid in good:
        assert transcript(mixed.of(sid)) == transcript(alone.of(sid))


async def test_bad_batch_settings_are_config_errors(model) -> None:
    with pytest.raises(ConfigError):
        await run(model, {"a": audio(0, 0.5)}, replace(CFG, max_batch=0))
