"""speechstream.Pipeline: bad options fail clearly; the graph form and add_sink run real graphs."""

from __future__ import annotations

from pathlib import Path

import pytest

import speechstream as ss

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello.wav"


class Count(ss.Sink):
    def __init__(self) -> None:
        super().__init__()
        self.kinds: dict[str, int] = {}

    def handle(self, event: ss.Event) -> bool:
        self.kinds[type(event).__name__] = self.kinds.get(type(event).__name__, 0) + 1
        return False


def test_unknown_option_is_a_config_error():
    with pytest.raises(ss.ConfigError, match="chunk_msec"):
        ss.Pipeline.from_file(HELLO, chunk_msec=320)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ss.ConfigError):
        ss.Pipeline.from_file(tmp_path / "nope.wav", model="none").run()


def test_graph_form_runs_the_nodes_given():
    sink = Count()
    src = ss.FileSource(HELLO, stream_id="a", progress=False)
    result = ss.Pipeline(sources=[src], nodes=[ss.Resample(), ss.VadNode.create("webrtc")], sinks=[sink]).run()
    assert result.ok and result.finals == []
    assert sink.kinds["SpeechEnded"] >= 1 and sink.kinds["EndOfStream"] == 1


def test_add_sink_beside_configured_output(tmp_path):
    sink = Count()
    result = ss.Pipeline.from_file(HELLO, model="none", jsonl=tmp_path / "o.jsonl").add_sink(sink).run()
    assert result.ok and "no model: VAD only" in result.notes
    assert sink.kinds["SpeechEnded"] >= 1
    assert "speech_ended" in (tmp_path / "o.jsonl").read_text()


def test_a_node_slower_to_start_than_graphs_default_still_runs(monkeypatch):
    """The recogniser loads its model in start(): the pipeline waits MODEL_START_TIMEOUT_S, not Graph's 10 s."""
    import asyncio

    from speechstream import defaults, pipeline
    from stream.errors import GraphTimeoutError

    class SlowStart(ss.Resample):
        async def start(self) -> None:
            await asyncio.sleep(0.3)
            await super().start()

    def run(start_timeout_s: float) -> ss.PipelineResult:
        monkeypatch.setattr(pipeline, "MODEL_START_TIMEOUT_S", start_timeout_s)
        src = ss.FileSource(HELLO, stream_id="a", progress=False)
        return ss.Pipeline(sources=[src], nodes=[SlowStart(), ss.VadNode.create("webrtc")], sinks=[Count()]).run()

    assert defaults.MODEL_START_TIMEOUT_S >= 300
    with pytest.raises(GraphTimeoutError, match="graph start"):
        run(0.1)  # the timeout is the pipeline's constant: too short, the start fails
    assert run(5.0).ok
