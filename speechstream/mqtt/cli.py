"""``speechstream mqtt-worker``: one MQTT worker, alone or as a member of a pool (``--group``).

Registers itself on the CLI app when imported (one import line in :mod:`speechstream.cli`).
"""

from __future__ import annotations

import asyncio
import os
import signal

import typer

from speechstream.cli._app import app

__all__ = ["worker"]


@app.command("mqtt-worker")
def worker(
    model: str = typer.Option("none", "--model", help="Model directory or hub id, or 'none' (VAD events only)."),
    vad: str = typer.Option("webrtc", "--vad", help="VAD: webrtc or silero."),
    host: str = typer.Option("127.0.0.1", "--host", help="MQTT broker address."),
    port: int = typer.Option(1883, "--port", help="MQTT broker port."),
    prefix: str = typer.Option("speechstream", "--prefix", help="Topic prefix."),
    group: str = typer.Option(
        "", "--group", help="Pool name: workers with the same group share the streams (MQTT v5 shared subscription)."
    ),
    worker_id: str = typer.Option("", "--worker-id", help="This worker's id (default: host name and pid)."),
    idle_timeout_s: float = typer.Option(30.0, "--idle-timeout-s", help="End a stream after this long without audio."),
    max_streams: int = typer.Option(64, "--max-streams", help="Live streams this worker takes at most."),
) -> None:
    """Transcribe every stream published to an MQTT broker (with --group: this worker's share of them)."""
    from speechstream.net.serve import ServeOptions, build_nodes

    from .settings import MqttSettings
    from .worker import MqttWorker

    wid = worker_id or f"{os.uname().nodename}-{os.getpid()}"
    settings = MqttSettings(host=host, port=port, prefix=prefix, client_id=wid)
    nodes, _ = build_nodes(ServeOptions(model=model, vad=vad))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        w = MqttWorker(nodes, settings, idle_timeout_s=idle_timeout_s, max_streams=max_streams, group=group or None)
        async with w:
            print(f"mqtt worker {wid} up (group {group or '-'}) at {host}:{port}/{prefix}", flush=True)
            await stop.wait()

    asyncio.run(run())
