"""``speechstream serve``: the WebSocket caption server."""

from __future__ import annotations

import typer

from speechstream import defaults as d
from stream.errors import ConfigError, SpeechStreamError

from . import options as o
from ._app import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, _error_line, app


@app.command()
def serve(
    ctx: typer.Context,
    host: str = typer.Option(
        d.SERVE_HOST, "--host", help="Address to listen on (loopback by default; use a token when exposing it)."
    ),
    port: int = typer.Option(
        d.SERVE_PORT, "--port", min=0, max=65535, help="TCP port for the page (HTTP) and the WebSocket (/ws)."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="SPEECHSTREAM_TOKEN",
        help="Require this token (?token= or 'Authorization: Bearer').",
        show_default="none",
    ),
    model: str | None = o.model_option(
        "Model directory, cached hub id, or 'none' (VAD only).", show_default="bundled default model"
    ),
    vad: o.Vad = o.vad_option("Voice activity detector."),
    mode: o.Mode = o.mode_option("Streaming mode: 'cached' or 'window'."),
    chunk_ms: int = o.CHUNK_MS,
    lookahead_ms: int = o.LOOKAHEAD_MS,
    max_connections: int = typer.Option(
        d.SERVE_MAX_CONNECTIONS, "--max-connections", min=1, help="Concurrent streams."
    ),
    max_frame_bytes: int = typer.Option(
        d.MAX_FRAME_BYTES, "--max-frame-bytes", min=64, help="Largest binary audio frame accepted."
    ),
    web: bool = typer.Option(d.SERVE_WEB, "--web/--no-web", help="Serve the live-caption page on the same port."),
    diarize: bool = typer.Option(
        d.SERVE_DIARIZE, "--diarize/--no-diarize", help="Online speaker turns; speaker labels on finals."
    ),
    max_speakers: int | None = o.max_speakers_option("Most speakers per stream (with --diarize)."),
    max_batch: int = typer.Option(
        o.RECOGNIZER.max_batch,
        "--max-batch",
        min=1,
        help="Chunks of different streams that are ready together run as one batch, at most this many; 1 turns batching off.",
    ),
    language: str | None = o.language_option(
        "Default language of a multilingual checkpoint (MMS); a client's 'start' message may pick another per stream.",
        show_default="the checkpoint's own",
    ),
    compute_device: str = o.COMPUTE_DEVICE,
    idle_timeout: float = typer.Option(
        d.SERVE_IDLE_TIMEOUT_S,
        "--idle-timeout",
        min=0.0,
        help="Close a stream that sends no audio for this many seconds (0: never).",
    ),
    workers: int = typer.Option(
        d.SERVE_WORKERS,
        "--workers",
        min=1,
        help="Worker processes sharing the port (SO_REUSEPORT), each with its own model and batcher.",
    ),
    drain_timeout: float = typer.Option(
        d.SERVE_DRAIN_TIMEOUT_S,
        "--drain-timeout",
        min=0.0,
        help="On SIGTERM: /readyz fails, new streams are refused, open ones get this many seconds to end.",
    ),
    allow_origin: list[str] | None = typer.Option(
        None,
        "--allow-origin",
        help="Browser origin (scheme://host[:port]) allowed to use the WebSocket besides the page's own; repeatable; '*' allows any.",
        show_default="same origin only",
    ),
    vad_pre_speech_pad_ms: int | None = o.VAD_PRE_SPEECH_PAD_MS,
    vad_hangover_ms: int | None = o.VAD_HANGOVER_MS,
    vad_min_speech_ms: int | None = o.VAD_MIN_SPEECH_MS,
    vad_min_silence_ms: int | None = o.VAD_MIN_SILENCE_MS,
    vad_backdate_max_ms: int | None = o.VAD_BACKDATE_MAX_MS,
    vad_threshold: float | None = o.VAD_THRESHOLD,
    vad_aggressiveness: int | None = o.VAD_AGGRESSIVENESS,
    max_utterance_ms: int = o.MAX_UTTERANCE_MS,
) -> None:
    """Serve live captions: a WebSocket endpoint (one stream per connection) and a browser page."""
    try:
        recognizer, vad_settings, rest = o.build_settings(ctx.params)  # every value checked, nothing heavy loaded
        from speechstream.net.serve import ServeOptions, serve_main  # heavy imports after parsing

        rest.update(
            idle_timeout_s=rest.pop("idle_timeout") or None,
            drain_timeout_s=rest.pop("drain_timeout"),
            allow_origins=tuple(rest.pop("allow_origin") or ()),
        )
        opts = ServeOptions(recognizer=recognizer, vad=vad_settings, **rest)
    except ConfigError as exc:
        _error_line(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    try:
        serve_main(opts)
    except ConfigError as exc:
        _error_line(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except SpeechStreamError as exc:
        _error_line(str(exc))
        raise typer.Exit(EXIT_RUNTIME) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
