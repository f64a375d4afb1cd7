"""``speechstream serve``: build the server's pipeline from options and run until Ctrl-C / SIGTERM.

The pipeline is the CLI's standard one (``speechstream.builder``): Resample -> VAD ->
recogniser (when a model is configured or the bundled default is installed). Without a
model the server still streams VAD events, so the page shows speech activity.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from engines.online.config import RecognizerConfig, check_max_speakers, check_max_utterance_ms
from speechstream import defaults
from stream.config import NO_MODEL, TranscribeConfig, VadSettings, nest_settings
from stream.errors import ConfigError
from stream.node import Node
from stream.resample import Resample

from .protocol import Limits
from .ws import CaptionServer, ServerConfig

__all__ = ["ServeOptions", "SERVE_RECOGNIZER_KEYS", "build_nodes", "serve_main"]


# ServeOptions' flat names (keywords of from_flat) of RecognizerConfig fields
SERVE_RECOGNIZER_KEYS: dict[str, str] = {
    k: k
    for k in (
        "mode",
        "chunk_ms",
        "left_context_ms",
        "lookahead_ms",
        "language",
        "compute_device",
        "max_utterance_ms",
        "max_batch",
    )
}


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str = defaults.SERVE_HOST
    port: int = defaults.SERVE_PORT
    token: str | None = None
    model: str | None = None  # None: bundled default model if installed; "none": VAD only
    # the recogniser's one configuration: geometry, endpointing, cross-stream batching (max_batch: chunks
    # of different streams that are ready together share one forward; 1: every stream steps alone) and
    # the default language (a client's "start" message may name another for its stream)
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    vad: VadSettings = field(default_factory=VadSettings)  # as for transcribe; None fields: that VAD's tuned default
    max_connections: int = defaults.SERVE_MAX_CONNECTIONS
    max_frame_bytes: int = defaults.MAX_FRAME_BYTES
    max_realtime_factor: float = defaults.MAX_REALTIME_FACTOR
    idle_timeout_s: float | None = defaults.SERVE_IDLE_TIMEOUT_S  # None: an idle stream keeps its slot
    # SIGTERM: seconds open streams get to end before the server stops them
    drain_timeout_s: float = defaults.SERVE_DRAIN_TIMEOUT_S
    # worker processes sharing the port (SO_REUSEPORT), each with its own model and batcher
    workers: int = defaults.SERVE_WORKERS
    reuse_port: bool = False  # set for each worker of a --workers group
    allow_origins: tuple[str, ...] = ()  # browser origins allowed besides the page's own
    web: bool = defaults.SERVE_WEB
    diarize: bool = defaults.SERVE_DIARIZE  # online speaker turns (and speaker labels on finals when a model runs)
    max_speakers: int | None = None

    def __post_init__(self) -> None:
        check_max_speakers(self.max_speakers)
        check_max_utterance_ms(self.recognizer.max_utterance_ms)  # the front ends' floor

    @classmethod
    def from_flat(cls, **values: Any) -> ServeOptions:
        """Keyword construction with flat names (``vad="none", mode="window", chunk_ms=4000, max_batch=1``)."""
        rec, vad, rest = nest_settings(values, SERVE_RECOGNIZER_KEYS)
        return cls(recognizer=rec, vad=vad, **rest)

    def transcribe_config(self) -> TranscribeConfig:
        """The recognition and VAD settings as the CLI's config (the same nested objects)."""
        return TranscribeConfig(model=self.model, recognizer=self.recognizer, vad=self.vad)


def build_nodes(opts: ServeOptions) -> tuple[list[Node], str | None]:
    """(nodes, model path or None): Resample -> VAD -> [diarizer] -> [recogniser -> [speaker labeler]].
    Raises ConfigError for a bad model, VAD or speaker limit."""
    from speechstream.builder import build_recognizer, build_vad

    cfg = opts.transcribe_config()
    model = cfg.resolved_model()
    nodes: list[Node] = [Resample(), build_vad(opts.vad)]
    labeler = None
    if opts.diarize:
        from stream.diarize import diarization_nodes

        diarizer, labeler = diarization_nodes(max_speakers=opts.max_speakers)
        nodes.append(diarizer)  # turns go out before the audio that decided them
    if model and model != NO_MODEL:
        nodes.append(build_recognizer(opts.recognizer, model))
        if labeler is not None:
            nodes.append(labeler)  # speaker labels on words and finals
    return nodes, model


async def _serve(opts: ServeOptions) -> None:
    nodes, model = build_nodes(opts)
    limits = Limits(max_frame_bytes=opts.max_frame_bytes, max_realtime_factor=opts.max_realtime_factor)
    try:
        cfg = ServerConfig(
            host=opts.host,
            port=opts.port,
            token=opts.token,
            limits=limits,
            max_connections=opts.max_connections,
            serve_web=opts.web,
            idle_timeout_s=opts.idle_timeout_s,
            reuse_port=opts.reuse_port,
            allow_origins=opts.allow_origins,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    server = CaptionServer(nodes, cfg)
    # loads the model (slow on a busy machine): ConfigError for a bad one
    await server.graph.start(timeout_s=defaults.MODEL_START_TIMEOUT_S)
    try:
        await server.start()
    except OSError as exc:
        await server.graph.stop()
        raise ConfigError(f"cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}") from exc
    what = f"model {model}" if model else "no model: VAD events only"
    page = server.http_url + ("?token=<the --token value>" if opts.token else "")  # never the token itself
    print(f"speechstream: serving {what}", file=sys.stderr)
    print(f"speechstream: page {page}  WebSocket {server.url}", file=sys.stderr)
    stop = asyncio.Event()
    term = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig, ev in ((signal.SIGINT, stop), (signal.SIGTERM, term)):
        try:
            loop.add_signal_handler(sig, ev.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(term.wait())}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for p in pending:
            p.cancel()
    finally:
        if term.is_set() and not stop.is_set():
            # what a load balancer expects: /readyz fails at once, open streams finish, then the process ends
            print(f"speechstream: draining (up to {opts.drain_timeout_s:g} s for open streams)", file=sys.stderr)
            left = await server.drain(opts.drain_timeout_s)
            if left:
                print(f"speechstream: drain deadline: {left} stream(s) ended by the server", file=sys.stderr)
        else:
            print("speechstream: stopping (finishing open streams)", file=sys.stderr)
            await server.stop()


def serve_main(opts: ServeOptions) -> None:
    """Run the server; raises ConfigError for user mistakes (the CLI prints them on one line)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if opts.host not in ("127.0.0.1", "localhost", "::1") and opts.token is None:
        print(f"speechstream: warning: listening on {opts.host} without --token", file=sys.stderr)
    if opts.workers > 1:
        _run_workers(opts)
        return
    asyncio.run(_serve(opts))


def _worker_main(opts: ServeOptions) -> None:  # the body of one --workers process
    try:
        serve_main(opts)
    except ConfigError as exc:
        print(f"speechstream: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _run_workers(opts: ServeOptions) -> None:
    """``--workers N``: N processes, each with its own model and batcher, bound to one port with
    SO_REUSEPORT; the kernel spreads new connections over them. This process only starts them,
    forwards SIGTERM (each worker drains) and SIGINT, and exits when they have; a worker that dies
    is reported and not replaced (its port share closes with it, so new connections go to the others).
    For placement by load and for health checks, run single workers behind HAProxy (docs/deploy.md)."""
    import multiprocessing
    import socket

    port = opts.port
    if port == 0:  # one free port for all workers
        with socket.socket() as s:
            s.bind((opts.host, 0))
            port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no torch state crosses a fork
    child = dataclasses.replace(opts, workers=1, port=port, reuse_port=True)
    procs = [
        ctx.Process(target=_worker_main, args=(child,), name=f"speechstream-worker-{i}") for i in range(opts.workers)
    ]
    for p in procs:
        p.start()
    print(f"speechstream: {opts.workers} workers on port {port} (SO_REUSEPORT)", file=sys.stderr)

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = []
    for p in procs:
        while p.is_alive():
            p.join(0.5)
        if p.exitcode not in (0, 130, -signal.SIGTERM):
            failed.append(f"{p.name} exited with {p.exitcode}")
    if failed:
        raise ConfigError("; ".join(failed))
