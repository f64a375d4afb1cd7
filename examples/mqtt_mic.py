"""Microphone (or a WAV file) -> MQTT: publishes one stream's audio for a speechstream MQTT worker.

    mosquitto -c broker.conf &                                  # listener 1883 127.0.0.1, allow_anonymous true
    .venv/bin/python examples/mqtt_worker.py &                  # transcribes every stream
    .venv/bin/python examples/mqtt_consumer.py &                # prints captions
    .venv/bin/python examples/mqtt_mic.py --stream kitchen      # or: --file examples/hello.wav

Audio goes to ``speechstream/<stream>/audio`` as PCM16 at 16 kHz, QoS 1, each frame
prefixed with its sample offset (``"offset_header": true`` in the ``start`` control), so
frames that QoS 1 delivers twice across a broker restart are dropped by the worker, and
the publisher's outbox keeps audio while the broker is away. Ctrl-C ends the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np

from speechstream.mqtt import MqttPublisher, MqttSettings, topic
from speechstream.net.protocol import encode_audio, with_offset_header

RATE = 16_000
BLOCK = RATE // 50  # 20 ms


async def blocks_from_file(path: str):
    import soundfile as sf
    import soxr

    x, rate = sf.read(path, dtype="float32", always_2d=True)
    x = soxr.resample(x.mean(axis=1), rate, RATE).astype(np.float32)
    t0 = time.monotonic()
    for pos in range(0, len(x), BLOCK):
        yield x[pos : pos + BLOCK]
        await asyncio.sleep(max(0.0, t0 + (pos + BLOCK) / RATE - time.monotonic()))  # like a live microphone


async def blocks_from_mic(device: str | None):
    import sounddevice as sd

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=500)

    def callback(indata, frames, t, status) -> None:  # PortAudio thread: only enqueue
        loop.call_soon_threadsafe(lambda b=indata[:, 0].copy(): queue.full() or queue.put_nowait(b))

    with sd.InputStream(
        samplerate=RATE, channels=1, dtype="float32", blocksize=BLOCK, device=device, callback=callback
    ):
        while True:
            yield await queue.get()


async def main(args: argparse.Namespace) -> None:
    settings = MqttSettings(
        host=args.host,
        port=args.port,
        username=args.username,
        password=args.password,
        tls=args.tls,
        ca_certs=args.ca_certs,
    )
    pub = MqttPublisher(settings, name=f"mic:{args.stream}")
    await pub.start()
    await pub.wait_connected()
    pub.publish(
        topic(settings.prefix, args.stream, "control"),
        json.dumps(
            {"type": "start", "sample_rate_hz": RATE, "format": "s16", "offset_header": True}
            | ({"language": args.language} if args.language else {})
        ),
        qos=1,
    )
    offset = 0
    source = blocks_from_file(args.file) if args.file else blocks_from_mic(args.device)
    try:
        async for block in source:
            pub.publish(
                topic(settings.prefix, args.stream, "audio"), with_offset_header(offset, encode_audio(block)), qos=1
            )
            offset += len(block)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        pub.publish(topic(settings.prefix, args.stream, "control"), json.dumps({"type": "end"}), qos=1)
        await pub.close(10)
        print(f"published {offset / RATE:.1f} s of audio on {topic(settings.prefix, args.stream, 'audio')}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", default="mic")
    p.add_argument("--language", help="language of a multilingual model (MMS) for this stream; default: the worker's")
    p.add_argument("--file", help="publish a WAV file in real time instead of the microphone")
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
