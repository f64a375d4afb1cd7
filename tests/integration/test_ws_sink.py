"""WebSocketSink: a graph's events to a real WebSocket peer; a dead peer disables that sink only."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from websockets.asyncio.server import serve

from sinks.node import SinkNode
from sinks.websocket import WebSocketSink
from stream.graph import Graph
from stream.node import Collect, FanOut
from stream.resample import Resample
from stream.sources.array import ArraySource
from tests.integration.netkit import EnergyCaptioner, sine

pytestmark = pytest.mark.timeout(60)


def _source(sid: str = "s"):
    return ArraySource(sine(2.0, 16000, 0.5), 16000, stream_id=sid)


async def test_events_reach_the_peer_as_json():
    got: list[dict] = []

    async def handler(ws):
        async for m in ws:
            got.append(json.loads(m))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        sink = WebSocketSink(f"ws://127.0.0.1:{port}/events")
        await Graph(sources=[_source()], nodes=[Resample(), EnergyCaptioner(), FanOut([SinkNode(sink)])]).run(
            timeout_s=20
        )
        for _ in range(100):
            if got and got[-1]["type"] == "end_of_stream":
                break
            await asyncio.sleep(0.02)
    assert [e["text"] for e in got if e["type"] == "final_transcript"] == ["seg0 rms35", "seg1 rms35"]
    assert got[-1]["type"] == "end_of_stream" and not any(e["type"] == "audio_chunk" for e in got)
    assert sink.failed is None and sink.sent == len(got)


async def test_unreachable_peer_disables_only_that_sink():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    errors = []
    sink = WebSocketSink(f"ws://127.0.0.1:{port}/", on_error=lambda sk, exc: errors.append(exc))
    out = Collect(keep_audio=False)
    await Graph(sources=[_source()], nodes=[Resample(), EnergyCaptioner(), FanOut([SinkNode(sink)]), out]).run(
        timeout_s=20
    )
    assert isinstance(sink.failed, OSError) and len(errors) == 1
    assert [e.text for e in out.events if e.type == "final_transcript"] == ["seg0 rms35", "seg1 rms35"]
