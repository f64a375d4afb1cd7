"""The Python program the README showed before the facade (copied verbatim from commit d95013a)
still runs: those import paths did not move. Only the file name and model path are filled in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

OLD_README_PROGRAM = """
import asyncio
from sinks import ConsoleSink, SrtSink
from sinks.node import SinkNode
from stream.graph import Graph
from stream.node import FanOut
from stream.recognizer import Recognizer, RecognizerConfig
from stream.resample import Resample
from stream.sources.file import FileSource
from stream.vad_node import VadNode

graph = Graph(
    sources=[FileSource("talk.wav", stream_id="talk")],
    nodes=[
        Resample(),
        VadNode.create("webrtc"),
        Recognizer("path/to/model", RecognizerConfig(chunk_ms=640)),
        FanOut([SinkNode(ConsoleSink()), SinkNode(SrtSink("talk.srt"))]),
    ],
)
asyncio.run(graph.run())
"""


def test_old_readme_program_runs(tmp_path):
    (tmp_path / "talk.wav").write_bytes((ROOT / "examples" / "hello.wav").read_bytes())
    program = OLD_README_PROGRAM.replace("path/to/model", str(ROOT / "engines" / "default_model"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", program],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LISTENING" in proc.stdout.upper(), proc.stdout  # the console sink printed the captions
    assert "-->" in (tmp_path / "talk.srt").read_text()
