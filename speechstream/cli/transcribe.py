"""``speechstream transcribe`` and ``speechstream devices``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from stream.config import TranscribeConfig, load_toml
from stream.errors import ConfigError, SpeechStreamError

from . import options as o
from ._app import (
    _DEFAULTS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    _error_line,
    app,
    click,
)


@app.command()
def transcribe(
    ctx: typer.Context,
    file: Path | None = typer.Argument(
        None,
        help="Audio file: wav, flac, ogg (Vorbis, Opus), mp3, aiff, au, caf or another format libsndfile reads (not m4a/aac); any rate and channel count.",
        show_default=False,
    ),
    mic: bool = typer.Option(
        _DEFAULTS.mic, "--mic", help="Capture from a microphone instead of a file.", show_default="off"
    ),
    device: str | None = typer.Option(
        None,
        "--device",
        help="Capture device: name (or part of it) or index; see 'speechstream devices'.",
        show_default="system default",
    ),
    model: str | None = o.model_option(
        "Model: a local Hugging Face-layout directory, a hub id already in the local HF cache, or 'none' (VAD only).",
        show_default="bundled default model (VAD only if none is installed)",
    ),
    lm: str | None = o.lm_option(
        "n-gram LM (ARPA or KenLM binary) for beam-search finals (partials stay greedy); 'none' turns off the model's own LM."
    ),
    unigrams: str | None = o.unigrams_option("Word list for a binary LM (one word per line)."),
    lm_alpha: float | None = o.lm_alpha_option("LM weight (tune with examples/lm/tune.py)."),
    lm_beta: float | None = o.LM_BETA,
    beam_width: int = o.BEAM_WIDTH,
    hotword: list[str] | None = o.HOTWORD,
    vad: o.Vad = o.vad_option("Voice activity detector; 'none' treats the whole input as one segment."),
    vad_pre_speech_pad_ms: int | None = o.VAD_PRE_SPEECH_PAD_MS,
    vad_hangover_ms: int | None = o.VAD_HANGOVER_MS,
    vad_min_speech_ms: int | None = o.VAD_MIN_SPEECH_MS,
    vad_min_silence_ms: int | None = o.VAD_MIN_SILENCE_MS,
    vad_backdate_max_ms: int | None = o.VAD_BACKDATE_MAX_MS,
    vad_threshold: float | None = o.VAD_THRESHOLD,
    vad_aggressiveness: int | None = o.VAD_AGGRESSIVENESS,
    max_utterance_ms: int = o.MAX_UTTERANCE_MS,
    mode: o.Mode = o.mode_option(
        "Recognition: 'offline' per segment, 'window' re-runs a sliding window, 'cached' streams with KV caches."
    ),
    chunk_ms: int = o.CHUNK_MS,
    left_context_ms: int = o.left_context_option("Left context the encoder keeps, ms."),
    lookahead_ms: int = o.LOOKAHEAD_MS,
    language: str | None = o.language_option(
        "Language code of a multilingual checkpoint (MMS: adapter.LANG.safetensors, nested vocab.json).",
        show_default="the checkpoint's own (its tokenizer's target_lang)",
    ),
    compute_device: str = o.COMPUTE_DEVICE,
    diarize: bool | None = typer.Option(
        None,
        "--diarize/--no-diarize",
        help="Online speaker diarization: speaker turns, and speakers on captions.",
        show_default="on with --rttm or --speaker",
    ),
    speaker: list[str] | None = typer.Option(
        None,
        "--speaker",
        metavar="NAME=CLIP",
        help="Enroll a known voice from a reference clip (repeatable); others are S1, S2, ...",
        show_default="none",
    ),
    max_speakers: int | None = o.max_speakers_option("At most this many speakers (diarization)."),
    speaker_model: str | None = typer.Option(
        None,
        "--speaker-model",
        help="Speaker embeddings: an HF *ForXVector checkpoint (local dir or cached hub id).",
        show_default="bundled voice encoder",
    ),
    realtime: bool = typer.Option(
        _DEFAULTS.realtime, "--realtime/--no-realtime", help="Pace a file like live audio (the microphone always is)."
    ),
    progress: bool = typer.Option(
        _DEFAULTS.progress,
        "--progress/--no-progress",
        help="Progress bar while a file runs faster than real time (when stderr is a terminal that live captions do not share).",
    ),
    console: bool = typer.Option(
        _DEFAULTS.console, "--console/--no-console", help="Live captions on stdout (off with --jsonl -)."
    ),
    jsonl: str | None = typer.Option(
        None, "--jsonl", metavar="PATH|-", help="Write every event as JSON lines; '-' for stdout.", show_default="off"
    ),
    srt: Path | None = typer.Option(
        None,
        "--srt",
        metavar="PATH",
        help="Write SRT captions (each final flushed as it is ready).",
        show_default="off",
    ),
    vtt: Path | None = typer.Option(
        None,
        "--vtt",
        metavar="PATH",
        help="Write WebVTT captions (each final flushed as it is ready).",
        show_default="off",
    ),
    rttm: Path | None = typer.Option(
        None, "--rttm", metavar="PATH", help="Write speaker turns as RTTM.", show_default="off"
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        metavar="TOML",
        help="Read settings from a TOML file; command-line options win.",
        show_default="none",
    ),
) -> None:
    """Transcribe an audio FILE, or the microphone with --mic."""
    try:
        cfg = _config_from(ctx, config).validate()
        o.check_compute_device_now(cfg.recognizer.compute_device)
        if config is not None:
            cfg.refuse_output_at(config, "--config")
    except ConfigError as exc:
        _error_line(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    raise typer.Exit(_run(cfg))


# parameter -> its flat setting (TranscribeConfig.field_names()), where the names differ
_SETTING_OF_PARAM = {"file": "input_path", "speaker": "speakers", "hotword": "hotwords"}


def _config_from(ctx: typer.Context, config_path: Path | None) -> TranscribeConfig:
    """TOML values first, then every option the user actually typed; built (and checked) once."""
    values: dict[str, Any] = dict(load_toml(config_path)) if config_path is not None else {}
    for param, value in ctx.params.items():
        if param == "config":
            continue
        key = _SETTING_OF_PARAM.get(param, param)
        if param in ("speaker", "hotword"):
            value = tuple(value or ())
        elif isinstance(value, o.Vad | o.Mode):
            value = value.value
        source = ctx.get_parameter_source(param)
        typed = source is not None and source.name != "DEFAULT"
        if key not in values or typed:
            values[key] = value
    return TranscribeConfig.from_mapping(values, source=str(config_path) if config_path else "options")


def _run(cfg: TranscribeConfig) -> int:
    """Heavy imports happen here, after parsing."""
    import asyncio

    try:
        return asyncio.run(_run_async(cfg))
    except ConfigError as exc:
        _error_line(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SpeechStreamError as exc:
        _error_line(str(exc))
        return EXIT_RUNTIME


async def _run_async(cfg: TranscribeConfig) -> int:
    import asyncio
    import signal

    from speechstream.builder import build_graph

    built = build_graph(cfg)
    try:
        await built.graph.start()  # opens the source and the model: config errors raise here
    except BaseException:
        for s in built.sinks:  # nothing was written: existing output files keep their contents
            s.release()
        raise
    if built.recognizer is None:
        click.echo("speechstream: no model (see --model): VAD only, printing speech segments", err=True)
    for note in built.notes:
        click.echo(f"speechstream: {note}", err=True)
    loop = asyncio.get_running_loop()
    stops = 0

    def request_stop() -> None:
        nonlocal stops
        stops += 1
        if stops > 1:  # second Ctrl-C: give up on the graceful path
            raise KeyboardInterrupt
        for src in built.sources:
            src.request_stop()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, request_stop)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
            pass
    try:
        await built.graph.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    fatal = [e for e in built.errors if e.fatal]
    for e in fatal:
        _error_line(f"stream {e.stream_id}: {e.message}")
    failed_sinks = [s for s in built.sinks if s.failed is not None]
    for s in failed_sinks:
        _error_line(f"{s.describe()} failed: {s.failed}")
    if stops:
        return EXIT_INTERRUPTED
    return EXIT_RUNTIME if (fatal or failed_sinks) else EXIT_OK


@app.command()
def devices() -> None:
    """List audio capture devices (* marks the default input)."""
    from stream.sources.mic import format_devices, list_devices  # sounddevice loads here, after parsing

    try:
        found = list_devices()
    except ConfigError as exc:  # PortAudio missing or failing
        _error_line(str(exc))
        raise typer.Exit(EXIT_RUNTIME) from None
    if not found:  # an answer, not a failure: say so and exit 0
        click.echo("no audio capture devices found")
        return
    click.echo(format_devices(found))
