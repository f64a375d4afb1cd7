"""Minimal WebSocket client for ``speechstream serve``: stream a WAV file, print the captions.

    speechstream serve --port 8765 &
    .venv/bin/python examples/ws_client.py examples/hello.wav [--url ws://127.0.0.1:8765/ws] [--token T] [--speed 3]

``--speed 0`` sends unpaced: as fast as the server reads (it holds a stream to 4x real time
by reading more slowly, so nothing is lost).

Protocol (docs/network.md): send a JSON ``start``, then binary PCM16 frames at the
file's rate (the server resamples), then ``{"type": "end"}``; events come back as
JSON (``stream/events.py``) until ``end_of_stream``, then the server closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect


async def main(path: str, url: str, token: str | None, speed: float) -> None:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    pcm = (np.clip(audio.mean(axis=1), -1, 32767 / 32768) * 32768).astype("<i2")  # mono PCM16
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate_hz": rate, "format": "s16"}))

        async def send() -> None:
            step = rate // 50  # 20 ms frames
            t0 = time.monotonic()
            for pos in range(0, len(pcm), step):
                await ws.send(pcm[pos : pos + step].tobytes())
                if speed > 0:  # paced; 0: unpaced (the server applies back-pressure above 4x real time)
                    await asyncio.sleep(max(0.0, t0 + (pos + step) / rate / speed - time.monotonic()))
            await ws.send(json.dumps({"type": "end"}))

        def on_sent(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                asyncio.ensure_future(ws.close())  # stop reading too; ``await sender`` raises the error

        sender = asyncio.create_task(send())
        sender.add_done_callback(on_sent)
        async for message in ws:  # ends when the server closes after end_of_stream
            ev = json.loads(message)
            if ev["type"] == "partial_transcript":
                print(f"\r\033[K  … {ev['text']}", end="", flush=True)
            elif ev["type"] == "final_transcript":
                who = f"[{ev['speaker']}] " if ev.get("speaker") else ""
                print(f"\r\033[K{ev['time_s']:7.2f}s  {who}{ev['text']}")
            elif ev["type"] == "speech_ended":
                print(f"\r\033[K  (speech {ev['start_s']:.2f}-{ev['time_s']:.2f} s)")
            elif ev["type"] == "error":
                print(f"\r\033[Kerror {ev['code']}: {ev['message']}")
        await sender


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wav")
    p.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    p.add_argument("--token", default=None)
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="1 = like a live microphone; the server reads at most 4x real time; 0 = unpaced",
    )
    a = p.parse_args()
    if not a.speed >= 0:
        p.error(f"--speed must be >= 0, got {a.speed}")
    asyncio.run(main(a.wav, a.url, a.token, a.speed))
