"""Emitted events validate against the committed JSON Schema, which equals the generated one."""

import json

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from stream.errors import BadAudioError
from stream.events import (
    EVENT_TYPES,
    SCHEMA_PATH,
    AudioChunk,
    Endpoint,
    FinalTranscript,
    PartialTranscript,
    SpeakerTurn,
    Word,
    event_from_json,
    json_schema,
)
from stream.graph import Graph
from stream.node import Node
from stream.queues import EdgeSpec
from stream.resample import Resample
from stream.sources.array import ArraySource
from stream.vad_node import VadNode
from tests.support.tts import espeak_ng, have_espeak, speech_with_pauses


def test_committed_schema_is_the_generated_one():
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema(), "run: python -m stream.events"


class Transcribe(Node):
    """Stands in for the recogniser: emits every transcript-side event kind per VAD segment."""

    async def process(self, event):
        await self.push(event)
        if type(event).__name__ == "SpeechEnded":
            sid, s, e = event.stream_id, event.start_sample, event.sample
            seg = f"{sid}-{s}"
            words = (Word("hello", s, (s + e) // 2, 0.9), Word("world", (s + e) // 2, e, speaker="S1"))
            await self.push(PartialTranscript(sid, s, segment_id=seg, revision=0, text="hello", end_sample=e))
            await self.push(Endpoint(sid, e, segment_id=seg, reason="vad"))
            await self.push(
                FinalTranscript(sid, s, segment_id=seg, revision=1, text="hello world", end_sample=e, words=words)
            )
            await self.push(SpeakerTurn(sid, s, turn_id="t1", speaker="S1", end_sample=e))


class Explode(Node):
    async def process(self, event):
        if isinstance(event, AudioChunk) and event.stream_id == "broken" and event.sample > 0:
            raise BadAudioError("synthetic failure")
        await self.push(event)


async def test_emitted_events_validate():
    if have_espeak():
        x, _ = speech_with_pauses([espeak_ng("One two three."), espeak_ng("Four five six.")], 0.8)
    else:
        x = np.zeros(16000, np.float32)
    seen = []
    graph = Graph(
        [
            ArraySource((x * 32767).astype(np.int16), 16000, stream_id="talk", block=1600),
            ArraySource(np.zeros((4410, 2), np.float32), 44100, stream_id="broken", block=441),
            ArraySource(
                np.zeros(16000, np.float32),
                16000,
                stream_id="mic",
                block=160,
                realtime=True,
                capture_edge=EdgeSpec(2, "drop_oldest"),
            ),
        ],
        [Explode("explode"), Resample(), VadNode.create("webrtc"), Transcribe("asr")],
        on_event=seen.append,
        edge=EdgeSpec(2),
    )
    await graph.run()
    validator = Draft202012Validator(json_schema())
    kinds = set()
    for event in seen:
        d = json.loads(event.to_json())
        errors = sorted(validator.iter_errors(d), key=str)
        assert not errors, (d, [e.message for e in errors])
        kinds.add(d["type"])
        if d["type"] != "audio_chunk":
            assert event_from_json(event.to_json()) == event
    expected = {"audio_chunk", "error", "end_of_stream"}
    if have_espeak():
        expected |= {
            "speech_started",
            "speech_ended",
            "partial_transcript",
            "final_transcript",
            "endpoint",
            "speaker_turn",
        }
    assert expected <= kinds


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_schema_rejects_unknown_fields(name):
    validator = Draft202012Validator(json_schema())
    cls = EVENT_TYPES[name]
    ev = cls("s", 0, samples=np.zeros(3, np.float32)) if cls is AudioChunk else cls("s", 0)
    d = json.loads(ev.to_json())
    assert validator.is_valid(d)
    d["surprise"] = 1
    assert not validator.is_valid(d)
