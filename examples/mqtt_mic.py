"""Microphone (or an audio file) -> MQTT: publishes one stream's audio for a speechstream MQTT worker.

    mosquitto -c broker.conf &                                  # listener 1883 127.0.0.1, allow_anonymous true
    .venv/bin/python examples/mqtt_worker.py &                  # transcribes every stream
    .venv/bin/python examples/mqtt_consumer.py &                # prints captions
    .venv/bin/python examples/mqtt_mic.py --stream kitchen      # or: --file examples/hello.wav

Audio goes to ``speechstream/<stream>/audio`` as PCM16 mono at the source's rate (16 kHz from a
microphone that allows it, else its default rate; a file's own rate: the worker resamples), 20 ms
frames, QoS 1, each prefixed with its sample offset (``"offset_header": true`` in the ``start``
control), so frames that QoS 1 delivers twice across a broker restart are dropped by the worker,
and the publisher's outbox keeps audio while the broker is away. Ctrl-C ends the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import speechstream as ss

BLOCK_MS = 20


async def main(args: argparse.Namespace) -> None:
    settings = ss.MqttSettings(
        host=args.host,
        port=args.port,
        username=args.username,
        password=args.password,
        tls=args.tls,
        ca_certs=args.ca_certs,
    )
    if args.file:  # paced like a live microphone
        source = ss.FileSource(args.file, realtime=True, progress=False, block_ms=BLOCK_MS)
    else:
        source = ss.MicSource(args.device, dtype="float32", block_ms=BLOCK_MS)
    await source.start()
    rate = source.sample_rate_hz
    control = ss.mqtt_topic(settings.prefix, args.stream, "control")
    audio = ss.mqtt_topic(settings.prefix, args.stream, "audio")
    pub = ss.MqttPublisher(settings, name=f"mic:{args.stream}")
    await pub.start()
    await pub.wait_connected()
    pub.publish(
        control,
        json.dumps(
            {"type": "start", "sample_rate_hz": rate, "format": "s16", "offset_header": True}
            | ({"language": args.language} if args.language else {})
        ),
        qos=1,
    )
    sent = 0  # samples, at ``rate``

    async def publish(event: ss.Event) -> None:
        nonlocal sent
        if isinstance(event, ss.AudioChunk):
            x = event.samples if event.samples.ndim == 1 else event.samples.mean(axis=1)  # to mono
            # the offset is capture time: a block the microphone dropped leaves a gap the worker fills
            pub.publish(audio, ss.with_offset_header(event.sample, ss.encode_audio(x)), qos=1)
            sent = event.end_sample
        elif isinstance(event, ss.ErrorEvent):
            print(event.message, file=sys.stderr, flush=True)

    try:
        await source.run(publish)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        await source.stop()
        pub.publish(control, json.dumps({"type": "end"}), qos=1)
        await pub.close(10)
        print(f"published {sent / rate:.1f} s of audio on {audio}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", default="mic")
    p.add_argument("--language", help="language of a multilingual model (MMS) for this stream; default: the worker's")
    p.add_argument("--file", help="publish an audio file in real time instead of the microphone")
    p.add_argument("--device", help="capture device (name or index)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca-certs")
    return p


if __name__ == "__main__":
    try:
        asyncio.run(main(parser().parse_args()))
    except KeyboardInterrupt:
        pass
