"""Audio lost on the way in (issue 21): a real mosquitto killed with SIGKILL mid-stream and restarted on
the same port. Its sessions die with it, so frames the microphone publishes before the worker has
subscribed again go nowhere. The worker must fill the hole with silence (stream time stays exact)
and report its span, in the stream and on ``<prefix>/<stream>/error``; a stream without offsets is told
that its input was interrupted."""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
import pytest

from speechstream.mqtt import MqttPublisher, MqttSettings, MqttWorker, topic
from speechstream.net.protocol import encode_audio, with_offset_header
from stream.events import AudioChunk, EndOfStream, Event
from stream.node import Node
from stream.resample import Resample
from tests.integration.mqtt_broker import MOSQUITTO, Broker
from tests.integration.test_mqtt import Consumer

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs Debian mosquitto"),
]

RATE = 16000
FRAME = RATE // 50  # 20 ms


class Recorder(Node):
    """Keeps every stream's 16 kHz audio and every other event that reached it."""

    def __init__(self) -> None:
        super().__init__("recorder")
        self.audio: dict[str, list[np.ndarray]] = {}
        self.events: list[Event] = []

    async def process(self, event: Event) -> None:
        if isinstance(event, AudioChunk):
            self.audio.setdefault(event.stream_id, []).append(np.asarray(event.samples, np.float32))
        else:
            self.events.append(event)
        await self.push(event)

    async def end_of_stream(self, eos: EndOfStream) -> None:
        self.events.append(eos)
        await self.push(eos)


def zero_runs(x: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of exact zeros (the sent signal is never zero)."""
    z = np.concatenate([[0], (x == 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(z))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


async def test_audio_swallowed_by_a_sigkilled_broker_is_reported_with_its_span(tmp_path):
    broker = Broker(tmp_path / "broker")
    broker.start()
    recorder = Recorder()
    # The worker comes back 1 s after the broker died; the microphone within ~0.1 s of the restart,
    # and re-sends its outbox at once: those frames reach a broker where nobody has subscribed.
    worker = MqttWorker(
        [Resample(), recorder],
        MqttSettings(port=broker.port, client_id="loss-worker", reconnect_min_s=1.0, reconnect_max_s=1.0),
    )
    mic = MqttPublisher(MqttSettings(port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.1), name="mic")
    seconds = 3.0
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    audio = (0.3 + 0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # never 0 in s16: silence shows
    try:
        async with Consumer(broker.port, "speechstream/#", client_id="loss-consumer") as consumer, worker:
            await mic.start()
            await mic.wait_connected()
            mic.publish(
                topic("speechstream", "lab", "control"),
                json.dumps({"type": "start", "sample_rate_hz": RATE, "offset_header": True}),
                qos=1,
            )
            # Beside it, a stream without offsets: its loss cannot be measured, only announced.
            mic.publish(
                topic("speechstream", "plain", "control"), json.dumps({"type": "start", "sample_rate_hz": RATE}), qos=1
            )
            t0 = time.monotonic()
            for k, pos in enumerate(range(0, n, FRAME)):
                if k == 50:  # 1 s in
                    await asyncio.to_thread(broker.kill)
                    await asyncio.sleep(0.3)
                    await asyncio.to_thread(broker.start)
                    t0 += 0.3 + 0.1  # the paced clock does not count the outage (nor the restart)
                frame = with_offset_header(pos, encode_audio(audio[pos : pos + FRAME]))
                mic.publish(topic("speechstream", "lab", "audio"), frame, qos=1)
                mic.publish(topic("speechstream", "plain", "audio"), encode_audio(audio[pos : pos + FRAME]), qos=1)
                await asyncio.sleep(max(0.0, t0 + (pos + FRAME) / RATE - time.monotonic()))
            for sid in ("lab", "plain"):
                mic.publish(topic("speechstream", sid, "control"), json.dumps({"type": "end"}), qos=1)
            assert await mic.drain(15)
            await consumer.wait_for(lambda: sum(d["type"] == "end_of_stream" for _, d in consumer.raw) >= 2, 30)
    finally:
        await mic.close(2)
        broker.stop()

    got = np.concatenate(recorder.audio["lab"])
    assert np.concatenate(recorder.audio["plain"]).shape[0] < n  # it lost audio, silently shorter
    assert got.shape[0] == n  # stream time is exact: every sample there, lost ones as silence
    holes = zero_runs(got)
    assert holes and sum(b - a for a, b in holes) >= FRAME * 5, (
        f"the SIGKILL lost no audio ({holes}): the test did not reproduce the loss it is about"
    )
    # In the stream: one audio_lost per hole, with exactly its span, before the audio that follows it.
    lost = [e for e in recorder.events if e.type == "audio_lost"]
    assert [(e.sample, e.to_dict()["end_sample"]) for e in lost] == holes, (lost, holes)
    for e in lost:
        d = e.to_dict()
        assert d["time_s"] == pytest.approx(d["sample"] / RATE) and d["end_s"] == pytest.approx(d["end_sample"] / RATE)
        assert "never arrived" in d["message"] and f"{d['sample']} to {d['end_sample']} at {RATE} Hz" in d["message"]
    assert worker.ingest.stats["lost_samples"] == sum(b - a for a, b in holes)
    # On the error topic, the same reports (QoS 1: repeats allowed, none missing).
    published = {
        (d["sample"], d["end_sample"])
        for tp, d in consumer.raw
        if tp == "speechstream/lab/error" and d["type"] == "audio_lost"
    }
    assert published == set(holes), (published, holes, [d["type"] for _, d in consumer.raw])
    eos = [d for tp, d in consumer.raw if tp == "speechstream/lab/transcript" and d["type"] == "end_of_stream"]
    assert eos[0]["sample"] == n
    assert not any(d["type"] == "error" for tp, d in consumer.raw if tp == "speechstream/lab/error")
    # The stream without offsets: told that its input was interrupted, and for how long.
    plain = [d for tp, d in consumer.raw if tp == "speechstream/plain/error" and d["type"] == "error"]
    assert plain and plain[0]["code"] == "input_interrupted" and not plain[0]["fatal"], plain
    assert "was down for" in plain[0]["message"] and 0 < plain[0]["time_s"] < seconds
    assert any(e.type == "error" and e.stream_id == "plain" for e in recorder.events)  # in the stream too
