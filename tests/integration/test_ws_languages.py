"""Per-stream languages on the WebSocket server go through the shared helper (speechstream.net.languages),
as on MQTT and TCP: a refused language leaves nothing behind in any node, other streams run on."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect

from speechstream.net.ws import CaptionServer, ServerConfig
from stream.errors import ConfigError
from stream.resample import Resample
from tests.integration.netkit import EnergyCaptioner, read_until_closed

pytestmark = pytest.mark.timeout(60)


class _LanguageNode(EnergyCaptioner):
    """Records set_language calls; refuses the codes it does not have, as the Recognizer does."""

    def __init__(self, has: set[str]) -> None:
        super().__init__()
        self.has, self.calls = has, []

    def set_language(self, stream_id: str, language: str | None) -> None:
        if language is not None and language not in self.has:
            raise ConfigError(f"unknown language {language!r}; available: {', '.join(sorted(self.has))}")
        self.calls.append((stream_id, language))


async def test_a_language_one_node_refuses_is_forgotten_by_the_others():
    takes, refuses = _LanguageNode({"fra", "deu"}), _LanguageNode({"deu"})
    async with CaptionServer([Resample(), takes, refuses], ServerConfig(port=0)) as srv:
        async with connect(srv.url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000, "stream_id": "a", "language": "fra"}))
            events = await read_until_closed(ws)
        assert [(e["type"], e["code"]) for e in events] == [("error", "unknown_language")]
        assert "available: deu" in events[0]["message"] and ws.close_code == 1008
        assert takes.calls == [("a", "fra"), ("a", None)]  # the node that took it forgot it again
        assert refuses.calls == [("a", None)]
        async with connect(srv.url) as ws:  # the same stream id, a language both have: served
            await ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000, "stream_id": "a", "language": "deu"}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(json.dumps({"type": "end"}))
            assert (await read_until_closed(ws))[-1]["type"] == "end_of_stream"
        assert takes.calls[-1] == ("a", "deu") and refuses.calls[-1] == ("a", "deu")


async def test_a_language_without_a_recogniser_is_refused():
    async with CaptionServer([Resample(), EnergyCaptioner()], ServerConfig(port=0)) as srv:
        async with connect(srv.url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000, "language": "fra"}))
            events = await read_until_closed(ws)
        assert events[0]["code"] == "unknown_language" and "no recogniser" in events[0]["message"]
        assert ws.close_code == 1008
