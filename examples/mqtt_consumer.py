"""Prints live captions from MQTT: ``speechstream/+/transcript`` (partials replaced in place, finals appended).

Errors and lost audio (``speechstream/+/error``: ``error``, ``queue_overflow``, ``audio_lost``) go to stderr.

    .venv/bin/python examples/mqtt_consumer.py [--host 127.0.0.1 --port 1883] [--exit-after-eos N]

A durable consumer: a fixed client id and a persistent session (``clean_session=False``,
QoS 1), so finals published while it reconnects wait for it at the broker; QoS 1 may
repeat a message, so finals are deduplicated by segment id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import aiomqtt

from speechstream import FinalDeduper, MqttSettings


async def main(args: argparse.Namespace) -> None:
    settings = MqttSettings(
        host=args.host,
        port=args.port,
        username=args.username,
        password=args.password,
        tls=args.tls,
        ca_certs=args.ca_certs,
        client_id=args.client_id,
        clean_session=False,
    )
    dedupe = FinalDeduper()
    ended = 0
    while True:
        try:
            async with settings.client() as client:
                await client.subscribe([(f"{settings.prefix}/+/transcript", 1), (f"{settings.prefix}/+/error", 1)])
                print("consumer subscribed", flush=True)
                async for message in client.messages:
                    ev = json.loads(message.payload)
                    if ev["type"] == "audio_lost":
                        print(
                            f"\n[{ev['stream_id']}] audio lost from {ev['time_s']:.2f} s to {ev['end_s']:.2f} s",
                            file=sys.stderr,
                            flush=True,
                        )
                    elif ev["type"] == "error":
                        print(f"\n[{ev['stream_id']}] error {ev['code']}: {ev['message']}", file=sys.stderr, flush=True)
                    elif ev["type"] == "partial_transcript":
                        print(f"\r\033[K[{ev['stream_id']}] … {ev['text']}", end="", flush=True)
                    elif ev["type"] == "final_transcript" and dedupe.first_time(ev):
                        print(f"\r\033[K[{ev['stream_id']}] {ev['time_s']:7.2f}s  {ev['text']}", flush=True)
                    elif ev["type"] == "end_of_stream":
                        print(f"\r\033[K[{ev['stream_id']}] end of stream", flush=True)
                        ended += 1
                        if args.exit_after_eos and ended >= args.exit_after_eos:
                            return
        except aiomqtt.MqttError as exc:
            print(f"\nbroker connection lost ({exc}); reconnecting", flush=True)
            await asyncio.sleep(1.0)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca-certs")
    p.add_argument("--client-id", default="speechstream-captions")
    p.add_argument("--exit-after-eos", type=int, default=0, help="exit after N streams ended (0: run forever)")
    try:
        asyncio.run(main(p.parse_args()))
    except KeyboardInterrupt:
        pass
