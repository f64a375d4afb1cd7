"""``speechstream mqtt-worker``: one MQTT worker, alone or as a member of a pool (``--group``).

Registers itself on the CLI app when imported (one import line in :mod:`speechstream.cli`).
"""

from __future__ import annotations

import asyncio
import os
import signal

import typer

from speechstream import defaults as d
from speechstream.cli._app import app
from speechstream.cli.options import VAD

__all__ = ["worker"]


@app.command("mqtt-worker")
def worker(
    model: str = typer.Option("none", "--model", help="Model directory or hub id, or 'none' (VAD events only)."),
    vad: str = typer.Option(VAD.name, "--vad", help="VAD: webrtc or silero."),
    host: str = typer.Option(d.MQTT_HOST, "--host", help="MQTT broker address."),
    port: int = typer.Option(d.MQTT_PORT, "--port", help="MQTT broker port."),
    prefix: str = typer.Option(d.MQTT_PREFIX, "--prefix", help="Topic prefix."),
    group: str = typer.Option(
        "", "--group", help="Pool name: workers with the same group share the streams (MQTT v5 shared subscription)."
    ),
    worker_id: str = typer.Option("", "--worker-id", help="This worker's id (default: host name and pid)."),
    idle_timeout_s: float = typer.Option(
        d.MQTT_IDLE_TIMEOUT_S, "--idle-timeout-s", help="End a stream after this long without audio."
    ),
    max_streams: int = typer.Option(
        d.MQTT_MAX_STREAMS, "--max-streams", help="Live streams this worker takes at most."
    ),
    ops_host: str = typer.Option(d.OPS_HOST, "--ops-host", help="Address of the /healthz, /readyz, /metrics listener."),
    ops_port: int = typer.Option(
        0, "--ops-port", min=0, max=65535, help="Port of the /healthz, /readyz, /metrics listener (HTTP); 0: none."
    ),
    drain_timeout: float = typer.Option(
        d.MQTT_DRAIN_TIMEOUT_S,
        "--drain-timeout",
        min=0.0,
        help="On SIGTERM: /readyz fails, no new stream is claimed, open ones get this many seconds to end.",
    ),
) -> None:
    """Transcribe every stream published to an MQTT broker (with --group: this worker's share of them)."""
    from speechstream.net.serve import ServeOptions, build_nodes
    from stream.config import VadSettings

    from .settings import MqttSettings
    from .worker import MqttWorker

    wid = worker_id or f"{os.uname().nodename}-{os.getpid()}"
    settings = MqttSettings(host=host, port=port, prefix=prefix, client_id=wid)
    nodes, _ = build_nodes(ServeOptions(model=model, vad=VadSettings(name=vad)))  # type: ignore[arg-type]  # checked there

    async def run() -> None:
        from speechstream.ops_http import OpsServer

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        w = MqttWorker(nodes, settings, idle_timeout_s=idle_timeout_s, max_streams=max_streams, group=group or None)
        ops = OpsServer(w.metrics.render, w.readiness)
        if ops_port:  # up before the broker connection: /healthz answers, /readyz says 503 until connected
            await ops.start(ops_host, ops_port)
            print(f"mqtt worker {wid} ops on http://{ops_host}:{ops.port}/metrics", flush=True)
        try:
            await w.start()
            print(f"mqtt worker {wid} up (group {group or '-'}) at {host}:{port}/{prefix}", flush=True)
            await stop.wait()
            print(f"mqtt worker {wid} draining (up to {drain_timeout:g} s for open streams)", flush=True)
            left = await w.drain(drain_timeout)
            if left:
                print(f"mqtt worker {wid}: drain deadline: {left} stream(s) ended by the worker", flush=True)
        finally:
            await w.stop()
            await ops.close()

    asyncio.run(run())
