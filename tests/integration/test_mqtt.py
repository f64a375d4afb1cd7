"""MQTT against a real mosquitto started by the test: sink outbox across broker restarts, worker end to end."""

from __future__ import annotations

import asyncio
import json
import os
import time

import aiomqtt
import numpy as np
import pytest

from speechstream.mqtt import (
    FinalDeduper,
    MqttPublisher,
    MqttSettings,
    MqttWorker,
    mqtt_sink,
    parse_topic,
    route,
    topic,
)
from speechstream.net.protocol import encode_audio, with_offset_header
from stream.events import EndOfStream, FinalTranscript, PartialTranscript, SpeechStarted
from stream.resample import Resample
from tests.integration.mqtt_broker import MOSQUITTO, Broker
from tests.integration.netkit import EnergyCaptioner, SpeakerAwareCaptioner, sine

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs Debian mosquitto"),
]


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


class Consumer:
    """A durable consumer: fixed client id, persistent session, QoS 1, reconnects by itself."""

    def __init__(self, port: int, pattern: str, client_id: str = "test-consumer"):
        self.settings = MqttSettings(port=port, client_id=client_id, clean_session=False, reconnect_max_s=0.2)
        self.pattern = pattern
        self.raw: list[tuple[str, dict]] = []
        self.subscribed = asyncio.Event()
        self.connects = 0
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Consumer:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with self.settings.client() as c:
                    self.connects += 1
                    await c.subscribe(self.pattern, qos=1)
                    self.subscribed.set()
                    async for m in c.messages:
                        if str(m.topic).endswith(("/audio", "/control")):
                            continue  # the inputs, when subscribed to everything
                        self.raw.append((str(m.topic), json.loads(m.payload)))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def finals(self) -> list[dict]:
        return [d for _, d in self.raw if d["type"] == "final_transcript"]

    async def wait_for(self, pred, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; {len(self.raw)} messages: {[d['type'] for _, d in self.raw[-5:]]}")
            await asyncio.sleep(0.05)


def test_topics_and_routes():
    assert topic("speechstream", "mic-1", "audio") == "speechstream/mic-1/audio"
    assert parse_topic("speechstream", "speechstream/mic-1/audio") == ("mic-1", "audio")
    assert parse_topic("speechstream", "speechstream/a/b/c") is None
    assert parse_topic("speechstream", "other/mic/audio") is None
    assert parse_topic("speechstream", "speechstream/+bad/audio") is None
    assert route(FinalTranscript("s", 0)) == ("transcript", 1)
    assert route(PartialTranscript("s", 0)) == ("transcript", 0)
    assert route(EndOfStream("s", 0)) == ("transcript", 1)
    assert route(SpeechStarted("s", 0)) == ("vad", 0)
    # A stream id is one topic level and never a wildcard.
    assert topic("speechstream", "a/b+c#", "transcript") == "speechstream/a_b_c_/transcript"


async def test_sink_outbox_loses_no_final_across_a_broker_restart(broker):
    n = 300
    async with Consumer(broker.port, "speechstream/+/transcript") as consumer:
        sink = mqtt_sink(MqttSettings(port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2))
        await sink.start()
        await sink.publisher.wait_connected()
        restarted = False
        for i in range(n):
            await sink.consume(PartialTranscript("room", i * 1600, segment_id=f"room-{i}", text=f"partial {i}"))
            await sink.consume(
                FinalTranscript("room", i * 1600, segment_id=f"room-{i}", text=f"final {i}", end_sample=(i + 1) * 1600)
            )
            if i == n // 3:
                broker.stop()  # mid-stream; the sink keeps accepting events
            if i == n // 2 and not restarted:
                await asyncio.sleep(0.5)
                broker.start()
                restarted = True
            await asyncio.sleep(0.005)
        await sink.consume(EndOfStream("room", n * 1600))
        await sink.close()
        assert sink.publisher.stats.disconnects >= 1 and sink.publisher.stats.connects >= 2
        assert sink.publisher.pending == 0
        await consumer.wait_for(lambda: any(d["type"] == "end_of_stream" for _, d in consumer.raw), 20)
        assert consumer.connects >= 2

    dedupe = FinalDeduper()
    kept = [f for f in consumer.finals() if dedupe.first_time(f)]
    assert sorted(int(f["segment_id"].split("-")[1]) for f in kept) == list(range(n))  # none lost, none twice
    assert [f["text"] for f in kept] == [f"final {int(f['segment_id'].split('-')[1])}" for f in kept]
    # QoS 1 is at-least-once: only a message in flight at the moment the broker stopped may come twice.
    assert dedupe.duplicates <= 1, dedupe.duplicates
    # Partials are QoS 0 and may be dropped while disconnected (counted), never queued.
    assert sink.publisher.stats.dropped_qos0 > 0


async def test_publisher_without_broker_keeps_qos1_until_it_appears(tmp_path):
    b = Broker(tmp_path / "late")
    pub = MqttPublisher(MqttSettings(port=b.port, reconnect_min_s=0.05, reconnect_max_s=0.1))
    await pub.start()
    for i in range(10):
        pub.publish("speechstream/s/transcript", json.dumps({"i": i}), qos=1)
    pub.publish("speechstream/s/vad", "{}", qos=0)  # dropped: not connected
    await asyncio.sleep(0.3)
    assert pub.pending == 10 and pub.stats.dropped_qos0 == 1
    b.start()
    try:
        assert await pub.drain(10)
        assert pub.stats.published == 10
    finally:
        await pub.close(2)
        b.stop()


async def _publish_audio(
    settings: MqttSettings,
    sid: str,
    audio,
    rate: int,
    *,
    start: dict | None,
    realtime: bool,
    on_progress=None,
    controls: dict[int, dict] | None = None,
) -> MqttPublisher:
    pub = MqttPublisher(settings, name=f"mic:{sid}")
    await pub.start()
    await pub.wait_connected()
    if start is not None:
        pub.publish(topic(settings.prefix, sid, "control"), json.dumps(start), qos=1)
    step = rate // 50
    t0 = time.monotonic()
    framed = bool(start and start.get("offset_header"))
    for k, pos in enumerate(range(0, len(audio), step)):
        if controls and k in controls:  # in order with the audio: one publisher, QoS 1
            pub.publish(topic(settings.prefix, sid, "control"), json.dumps(controls[k]), qos=1)
        frame = encode_audio(audio[pos : pos + step])
        pub.publish(topic(settings.prefix, sid, "audio"), with_offset_header(pos, frame) if framed else frame, qos=1)
        if on_progress is not None:
            await on_progress(k)
        if realtime:
            await asyncio.sleep(max(0.0, t0 + (pos + step) / rate - time.monotonic()))
    pub.publish(topic(settings.prefix, sid, "control"), json.dumps({"type": "end"}), qos=1)
    return pub


async def test_worker_end_to_end_with_error_topic(broker):
    settings = MqttSettings(port=broker.port, reconnect_min_s=0.05)
    worker = MqttWorker([Resample(), EnergyCaptioner()], settings, default_rate_hz=16000)
    async with Consumer(broker.port, "speechstream/#", client_id="e2e-consumer") as consumer, worker:
        pub = await _publish_audio(
            settings,
            "kitchen",
            sine(2.0, 48000, 0.5),
            48000,
            start={"type": "start", "sample_rate_hz": 48000, "format": "s16"},
            realtime=False,
        )
        # A bad frame on another stream: odd byte count -> error event on its error topic; kitchen unaffected.
        pub.publish("speechstream/garage/audio", b"\x00\x01\x02", qos=1)
        await pub.drain(10)
        await pub.close()
        await consumer.wait_for(
            lambda: (
                any(t == "speechstream/kitchen/transcript" and d["type"] == "end_of_stream" for t, d in consumer.raw)
                and any(t == "speechstream/garage/error" for t, _ in consumer.raw)
            ),
            20,
        )
    kitchen = [d for t, d in consumer.raw if t == "speechstream/kitchen/transcript" and d["type"] == "final_transcript"]
    assert [f["text"] for f in kitchen] == ["seg0 rms35", "seg1 rms35"]
    err = [d for t, d in consumer.raw if t == "speechstream/garage/error"]
    assert err[0]["code"] == "bad_frame"
    assert not any(t.startswith("speechstream/kitchen/error") for t, _ in consumer.raw)


@pytest.mark.parametrize("takes_speakers", [True, False])
async def test_worker_passes_speaker_settings_on(broker, takes_speakers):
    """``start``'s num_speakers/names and a later ``set_speakers`` reach the node that takes them
    (the diarizer), as on the WebSocket; without one they are a non-fatal error on ``…/error``."""
    settings = MqttSettings(port=broker.port, reconnect_min_s=0.05)
    cap = SpeakerAwareCaptioner() if takes_speakers else EnergyCaptioner()
    worker = MqttWorker([Resample(), cap], settings, default_rate_hz=16000)
    async with Consumer(broker.port, "speechstream/#", client_id="spk-consumer") as consumer, worker:
        pub = await _publish_audio(
            settings,
            "den",
            sine(2.0, 16000, 0.5),
            16000,
            realtime=False,
            start={"type": "start", "sample_rate_hz": 16000, "num_speakers": 2, "names": ["Al"]},
            controls={10: {"type": "set_speakers", "names": ["Bo"]}},
        )
        await pub.drain(10)
        await pub.close()
        await consumer.wait_for(lambda: any(d["type"] == "end_of_stream" for _, d in consumer.raw), 20)
    finals = [d for t, d in consumer.raw if t == "speechstream/den/transcript" and d["type"] == "final_transcript"]
    assert len(finals) == 2  # the stream ran on either way
    errors = [(d["code"], d["fatal"]) for t, d in consumer.raw if t == "speechstream/den/error"]
    if takes_speakers:
        assert errors == [] and cap.speaker_settings["den"] == [(2, ("Al",)), (None, ("Bo",))]
    else:
        assert errors == [("speakers_unsupported", False)] * 2


async def test_worker_pipeline_survives_broker_restart_mid_stream(broker):
    """mic -> MQTT -> worker -> MQTT -> consumer, with the broker restarted in the middle of the stream."""
    settings = MqttSettings(port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    worker = MqttWorker(
        [Resample(), EnergyCaptioner(segment_samples=8000, partial_samples=2000)],
        MqttSettings(port=broker.port, client_id="worker", reconnect_min_s=0.05, reconnect_max_s=0.2),
    )
    async with Consumer(broker.port, "speechstream/+/transcript", client_id="restart-consumer") as consumer, worker:

        async def restart_at(k: int) -> None:
            if k == 75:  # 1.5 s into the 3 s stream
                await asyncio.to_thread(broker.stop)
                await asyncio.sleep(0.3)
                await asyncio.to_thread(broker.start)

        # QoS 1 may deliver an audio frame twice across the restart: the offset header lets the worker drop it.
        pub = await _publish_audio(
            settings,
            "lab",
            sine(3.0, 16000, 0.4),
            16000,
            realtime=True,
            on_progress=restart_at,
            start={"type": "start", "sample_rate_hz": 16000, "offset_header": True},
        )
        await pub.drain(15)
        await pub.close()
        await consumer.wait_for(lambda: any(d["type"] == "end_of_stream" for _, d in consumer.raw), 30)
    assert worker.sink.publisher.stats.disconnects >= 1
    dedupe = FinalDeduper()
    kept = [f for f in consumer.finals() if dedupe.first_time(f)]
    # 3 s of audio at 16 kHz in 0.5 s segments: 6 finals, every one exactly once, in order, none lost.
    assert [f["segment_id"] for f in kept] == [f"lab-{i}" for i in range(6)]
    assert all(f["text"].endswith("rms28") for f in kept), [f["text"] for f in kept]
    assert dedupe.duplicates <= 1


async def test_worker_fuzz_then_a_good_stream(broker):
    """A thousand malformed audio/control payloads on many streams; the worker keeps serving a good stream."""
    import random

    rng = random.Random(7)
    settings = MqttSettings(port=broker.port, reconnect_min_s=0.05)
    worker = MqttWorker([Resample(), EnergyCaptioner()], settings, default_rate_hz=16000, default_format="f32")
    async with Consumer(broker.port, "speechstream/good/transcript", client_id="fuzz-consumer") as consumer, worker:
        junk = MqttPublisher(settings, name="junk")
        await junk.start()
        await junk.wait_connected()
        for _ in range(1000):
            sid = rng.choice(["a", "b", "c", "d"])
            if rng.random() < 0.6:
                payload = rng.choice(
                    [
                        rng.randbytes(rng.choice([1, 3, 5, 8, 999])),
                        np.full(16, rng.choice([np.nan, np.inf, 1e20]), dtype="<f4").tobytes(),
                    ]
                )
                junk.publish(f"speechstream/{sid}/audio", payload, qos=0)
            else:
                junk.publish(
                    f"speechstream/{sid}/control",
                    rng.choice(
                        [
                            b"{",
                            b"[]",
                            b'{"type":"start"}',
                            b'{"type":"start","sample_rate_hz":7}',
                            b"\xff\xfe",
                            b'{"type":"set_speakers"}',
                            b'{"type":"bogus"}',
                        ]
                    ),
                    qos=0,
                )
        with pytest.raises(ValueError):
            junk.publish("speechstream/bad+topic/audio", b"\x00\x00", qos=0)  # refused at once, not in the pump
        await junk.drain(10)
        await junk.close()
        pub = await _publish_audio(
            settings,
            "good",
            sine(1.0, 16000, 0.5),
            16000,
            start={"type": "start", "sample_rate_hz": 16000, "format": "s16"},
            realtime=False,
        )
        await pub.drain(10)
        await pub.close()
        await consumer.wait_for(lambda: any(d["type"] == "end_of_stream" for _, d in consumer.raw), 20)
        assert worker.ingest.stats["protocol_errors"] > 100
    assert [f["text"] for f in consumer.finals()] == ["seg0 rms35"]
