"""MQTT username/password and TLS against a real mosquitto configured for them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess

import aiomqtt
import pytest

from speechstream.mqtt import MqttPublisher, MqttSettings, mqtt_sink
from stream.events import FinalTranscript
from tests.integration.mqtt_broker import MOSQUITTO, Broker

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs mosquitto"),
]


async def _roundtrip(settings: MqttSettings, sub_settings: MqttSettings) -> dict:
    async with sub_settings.client() as sub:
        await sub.subscribe("speechstream/+/transcript", qos=1)
        sink = mqtt_sink(settings)
        await sink.consume(FinalTranscript("sec", 0, segment_id="sec-0", text="hello", end_sample=1600))
        await sink.close()
        assert sink.publisher.stats.published == 1
        async with asyncio.timeout(10):
            async for m in sub.messages:
                return json.loads(m.payload)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
async def test_username_password(tmp_path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "asr", "s3cret"], check=True, capture_output=True)
    os.chmod(pw, 0o600)
    broker = Broker(tmp_path / "b", anonymous=False, listener_extra=f"password_file {pw}\n")
    broker.start()
    try:
        good = MqttSettings(port=broker.port, username="asr", password="s3cret")
        got = await _roundtrip(good, good)
        assert got["text"] == "hello"
        with pytest.raises(aiomqtt.MqttError):
            async with MqttSettings(port=broker.port, username="asr", password="wrong").client():
                pass
        # The publisher keeps retrying a refused login; it never connects and keeps its QoS 1 message.
        pub = MqttPublisher(MqttSettings(port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.1))
        await pub.start()
        pub.publish("speechstream/x/transcript", "{}", qos=1)
        await asyncio.sleep(0.5)
        assert pub.stats.connects == 0 and pub.pending == 1
        await pub.close(0.2)
    finally:
        broker.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
# paho-mqtt 2.2 leaves the SSL socket of a refused handshake to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_tls_with_a_self_made_ca(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    os.chmod(key, 0o644)
    broker = Broker(tmp_path / "b", listener_extra=f"cafile {cert}\ncertfile {cert}\nkeyfile {key}\n")
    broker.start()
    try:
        tls = MqttSettings(port=broker.port, tls=True, ca_certs=str(cert))
        got = await _roundtrip(tls, tls)
        assert got["segment_id"] == "sec-0"
        with pytest.raises(aiomqtt.MqttError):  # the system CAs do not trust our certificate
            async with MqttSettings(port=broker.port, tls=True, timeout_s=3).client():
                pass
        with pytest.raises(aiomqtt.MqttError):  # plain MQTT against a TLS listener
            async with MqttSettings(port=broker.port, timeout_s=3).client():
                pass
    finally:
        broker.stop()
