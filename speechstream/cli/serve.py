"""``speechstream serve``: the WebSocket caption server."""

from __future__ import annotations

from typing import Any

import typer

from engines.online.config import check_language, check_lookahead_ms
from stream.config import TranscribeConfig
from stream.errors import ConfigError, SpeechStreamError

from ._app import (
    _COMPUTE_DEVICE,
    _MAX_UTTERANCE_MS,
    _VAD_AGGRESSIVENESS,
    _VAD_HANGOVER_MS,
    _VAD_MIN_SILENCE_MS,
    _VAD_MIN_SPEECH_MS,
    _VAD_PRE_SPEECH_PAD_MS,
    _VAD_THRESHOLD,
    EXIT_INTERRUPTED,
    EXIT_RUNTIME,
    EXIT_USAGE,
    Mode,
    Vad,
    _check_compute_device,
    _error_line,
    app,
)


@app.command()
def serve(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (loopback by default; use a token when exposing it)."
    ),
    port: int = typer.Option(
        8765, "--port", min=0, max=65535, help="TCP port for the page (HTTP) and the WebSocket (/ws)."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="SPEECHSTREAM_TOKEN",
        help="Require this token (?token= or 'Authorization: Bearer').",
        show_default="none",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model directory, cached hub id, or 'none' (VAD only).",
        show_default="bundled default model",
    ),
    vad: Vad = typer.Option(Vad.webrtc, "--vad", case_sensitive=False, help="Voice activity detector."),
    mode: Mode = typer.Option(
        Mode.cached, "--mode", case_sensitive=False, help="Streaming mode: 'cached' or 'window'."
    ),
    chunk_ms: int = typer.Option(640, "--chunk-ms", min=20, help="Streaming chunk length, ms."),
    lookahead_ms: int = typer.Option(
        0,
        "--lookahead-ms",
        min=0,
        help="Lookahead (added latency), ms: a multiple of 20, at most 10000. Cached mode: each chunk also attends to this much audio after it (recomputed next chunk).",
    ),
    max_connections: int = typer.Option(64, "--max-connections", min=1, help="Concurrent streams."),
    max_frame_bytes: int = typer.Option(
        256 * 1024, "--max-frame-bytes", min=64, help="Largest binary audio frame accepted."
    ),
    web: bool = typer.Option(True, "--web/--no-web", help="Serve the live-caption page on the same port."),
    diarize: bool = typer.Option(
        False, "--diarize/--no-diarize", help="Online speaker turns; speaker labels on finals."
    ),
    max_speakers: int | None = typer.Option(
        None, "--max-speakers", min=1, help="Most speakers per stream (with --diarize).", show_default="no limit"
    ),
    max_batch: int = typer.Option(
        8,
        "--max-batch",
        min=1,
        help="Chunks of different streams that are ready together run as one batch, at most this many; 1 turns batching off.",
    ),
    language: str | None = typer.Option(
        None,
        "--language",
        metavar="LANG",
        help="Default language of a multilingual checkpoint (MMS); a client's 'start' message may pick another per stream.",
        show_default="the checkpoint's own",
    ),
    compute_device: str = _COMPUTE_DEVICE,
    idle_timeout: float = typer.Option(
        30.0, "--idle-timeout", min=0.0, help="Close a stream that sends no audio for this many seconds (0: never)."
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="Worker processes sharing the port (SO_REUSEPORT), each with its own model and batcher.",
    ),
    drain_timeout: float = typer.Option(
        30.0,
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
    vad_pre_speech_pad_ms: int | None = _VAD_PRE_SPEECH_PAD_MS,
    vad_hangover_ms: int | None = _VAD_HANGOVER_MS,
    vad_min_speech_ms: int | None = _VAD_MIN_SPEECH_MS,
    vad_min_silence_ms: int | None = _VAD_MIN_SILENCE_MS,
    vad_threshold: float | None = _VAD_THRESHOLD,
    vad_aggressiveness: int | None = _VAD_AGGRESSIVENESS,
    max_utterance_ms: int = _MAX_UTTERANCE_MS,
) -> None:
    """Serve live captions: a WebSocket endpoint (one stream per connection) and a browser page."""
    vad_options: dict[str, Any] = dict(
        vad_pre_speech_pad_ms=vad_pre_speech_pad_ms,
        vad_hangover_ms=vad_hangover_ms,
        vad_min_speech_ms=vad_min_speech_ms,
        vad_min_silence_ms=vad_min_silence_ms,
        vad_threshold=vad_threshold,
        vad_aggressiveness=vad_aggressiveness,
        max_utterance_ms=max_utterance_ms,
    )
    try:
        check_lookahead_ms(lookahead_ms)
        check_language(language)
        _check_compute_device(compute_device)
        TranscribeConfig(vad=vad.value, **vad_options).check_vad()  # transcribe's checks
    except ConfigError as exc:
        _error_line(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    from speechstream.net.serve import ServeOptions, serve_main  # heavy imports after parsing

    opts = ServeOptions(
        host=host,
        port=port,
        token=token,
        model=model,
        vad=vad.value,
        mode=mode.value,
        chunk_ms=chunk_ms,
        lookahead_ms=lookahead_ms,
        max_connections=max_connections,
        max_frame_bytes=max_frame_bytes,
        web=web,
        diarize=diarize,
        max_speakers=max_speakers,
        max_batch=max_batch,
        language=language,
        compute_device=compute_device,
        idle_timeout_s=idle_timeout or None,
        drain_timeout_s=drain_timeout,
        workers=workers,
        allow_origins=tuple(allow_origin or ()),
        **vad_options,
    )
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
