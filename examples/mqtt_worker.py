"""MQTT transcription worker: every ``speechstream/<stream>/audio`` stream -> captions on ``speechstream/<stream>/transcript``.

    .venv/bin/python examples/mqtt_worker.py [--model DIR|none] [--host 127.0.0.1 --port 1883]

Runs the standard pipeline (Resample -> VAD -> recogniser; VAD events only without a
model) on one graph; finals go out at QoS 1 through an outbox that survives broker
restarts. See examples/mqtt_mic.py and examples/mqtt_consumer.py.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from speechstream import MqttSettings, MqttWorker
from speechstream.net.serve import ServeOptions, build_nodes


async def main(args: argparse.Namespace) -> None:
    nodes, model = build_nodes(ServeOptions.from_flat(model=args.model, vad=args.vad, language=args.language))
    settings = MqttSettings(
        host=args.host,
        port=args.port,
        username=args.username,
        password=args.password,
        tls=args.tls,
        ca_certs=args.ca_certs,
        client_id=args.client_id,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with MqttWorker(nodes, settings, idle_timeout_s=args.idle_timeout_s):
        print(
            f"worker up ({'model ' + model if model else 'no model: VAD only'}); "
            f"listening on {settings.prefix}/+/audio at {settings.host}:{settings.port}",
            flush=True,
        )
        await stop.wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model dir, or 'none'; default: the bundled model if installed")
    p.add_argument("--vad", default="webrtc")
    p.add_argument(
        "--language", help="default language of a multilingual model (MMS); a stream's start may pick another"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca-certs")
    p.add_argument("--client-id", default="speechstream-worker", help="fixed id: persistent session across restarts")
    p.add_argument("--idle-timeout-s", type=float, default=30.0)
    asyncio.run(main(p.parse_args()))
