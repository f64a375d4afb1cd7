"""The ``speechstream`` command line.

    speechstream transcribe FILE [--srt out.srt --vtt out.vtt --jsonl - ...]
    speechstream transcribe --mic [--device NAME|INDEX]
    speechstream devices
    speechstream eval MANIFEST [--model DIR --lm LM.arpa]
    speechstream serve [--port 8765 --token T --model DIR]

Options map onto :class:`stream.config.TranscribeConfig` (``--config FILE`` reads a TOML file;
options given on the command line win). Only typer/click and the light config module are
imported before parsing; numpy, torch, soundfile and the models load after it, so ``--help``
answers at once.

User mistakes (a missing or unreadable file, an unknown device, a bad option value, a model
path that does not exist) print one line, ``speechstream: error: ...``, on stderr and exit
with status 2, without a traceback. A stream that fails while running exits with status 1.
Ctrl-C (or SIGTERM) ends the input gracefully: pending finals are written, files closed.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors its own click; older releases use the click package
    from typer import _click as click
except ImportError:  # pragma: no cover - depends on the installed typer
    import click  # type: ignore[no-redef]

from engines.online.config import check_language, check_lookahead_ms
from stream.config import TranscribeConfig, load_toml
from stream.errors import ConfigError, SpeechStreamError

__all__ = ["app", "main"]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _error_line(message: str) -> None:
    first = " ".join(str(message).split())  # one line, whatever the exception text looks like
    click.echo(f"speechstream: error: {first}", err=True)


class _OneLineErrors(TyperGroup):
    """Runs the command non-standalone, so usage errors become one line on stderr."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or "speechstream",
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except click.exceptions.UsageError as exc:  # bad option value, unknown option, missing argument
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare 'speechstream': show the help
                click.echo(exc.format_message(), err=True)
                sys.exit(EXIT_USAGE)
            _error_line(exc.format_message().replace("Value error, ", "") + _help_hint(exc))
            sys.exit(EXIT_USAGE)
        except click.exceptions.ClickException as exc:
            _error_line(exc.format_message())
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            click.echo("", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


def _help_hint(exc: Any) -> str:
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return ""
    return f" (see '{ctx.command_path} --help')"


app = typer.Typer(
    cls=_OneLineErrors,
    name="speechstream",
    help="Real-time streaming speech recognition: captions, event logs and speaker turns from files or a microphone.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Vad(str, enum.Enum):
    webrtc = "webrtc"
    silero = "silero"
    none = "none"


class Mode(str, enum.Enum):
    offline = "offline"
    window = "window"
    cached = "cached"


_DEFAULTS = TranscribeConfig()


# The VAD and endpointing options of transcribe, eval and serve: declared once, shared by the three.
_VAD_PRE_SPEECH_PAD_MS = typer.Option(
    None,
    "--vad-pre-speech-pad-ms",
    min=0,
    max=10000,
    help="Audio kept before a detected speech onset, ms.",
    show_default="100",
)
_VAD_HANGOVER_MS = typer.Option(
    None, "--vad-hangover-ms", min=0, max=10000, help="Audio kept after the last speech frame, ms.", show_default="100"
)
_VAD_MIN_SPEECH_MS = typer.Option(
    None, "--vad-min-speech-ms", min=0, max=10000, help="Shorter bursts are not speech, ms.", show_default="60"
)
_VAD_MIN_SILENCE_MS = typer.Option(
    None,
    "--vad-min-silence-ms",
    min=0,
    max=10000,
    help="A pause this long ends a segment (a final), ms.",
    show_default="webrtc 150, silero 200",
)
_VAD_THRESHOLD = typer.Option(
    None, "--vad-threshold", min=0.0, max=1.0, help="silero speech probability threshold.", show_default="0.7"
)
_VAD_AGGRESSIVENESS = typer.Option(
    None,
    "--vad-aggressiveness",
    min=0,
    max=3,
    help="webrtc aggressiveness (3 filters the most non-speech).",
    show_default="3",
)
_COMPUTE_DEVICE = typer.Option(
    _DEFAULTS.compute_device,
    "--compute-device",
    metavar="auto|cpu|cuda[:N]",
    help="Where the model runs: 'auto' is cuda when a GPU is available, else cpu.",
)


def _check_compute_device(value: str) -> None:
    """``--compute-device`` at parse time: the spelling, and (for cuda) that the GPU exists; ConfigError."""
    from engines.online.config import check_compute_device, resolve_compute_device

    check_compute_device(value)
    if value.startswith("cuda"):  # imports torch: only when a GPU is asked for
        resolve_compute_device(value)


_MAX_UTTERANCE_MS = typer.Option(
    _DEFAULTS.max_utterance_ms,
    "--max-utterance-ms",
    min=1000,
    help="Longest segment; cut at its longest pause between words.",
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
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model: a local Hugging Face-layout directory, a hub id already in the local HF cache, or 'none' (VAD only).",
        show_default="bundled default model (VAD only if none is installed)",
    ),
    lm: str | None = typer.Option(
        None,
        "--lm",
        metavar="PATH",
        help="n-gram LM (ARPA or KenLM binary) for beam-search finals (partials stay greedy); 'none' turns off the model's own LM.",
        show_default="the model's language_model/ if it has one, else greedy finals",
    ),
    unigrams: str | None = typer.Option(
        None,
        "--unigrams",
        metavar="PATH",
        help="Word list for a binary LM (one word per line).",
        show_default="read from the ARPA file",
    ),
    lm_alpha: float | None = typer.Option(
        None,
        "--lm-alpha",
        help="LM weight (tune with examples/lm/tune.py).",
        show_default="the LM's attrs.json, else 0.5",
    ),
    lm_beta: float | None = typer.Option(
        None, "--lm-beta", help="Word insertion bonus.", show_default="the LM's attrs.json, else 1.0"
    ),
    beam_width: int = typer.Option(_DEFAULTS.beam_width, "--beam-width", min=1, help="Beam width of LM finals."),
    hotword: list[str] | None = typer.Option(
        None, "--hotword", metavar="WORD", help="Boost a word or phrase in finals (repeatable).", show_default="none"
    ),
    vad: Vad = typer.Option(
        Vad(_DEFAULTS.vad),
        "--vad",
        help="Voice activity detector; 'none' treats the whole input as one segment.",
        case_sensitive=False,
    ),
    vad_pre_speech_pad_ms: int | None = _VAD_PRE_SPEECH_PAD_MS,
    vad_hangover_ms: int | None = _VAD_HANGOVER_MS,
    vad_min_speech_ms: int | None = _VAD_MIN_SPEECH_MS,
    vad_min_silence_ms: int | None = _VAD_MIN_SILENCE_MS,
    vad_threshold: float | None = _VAD_THRESHOLD,
    vad_aggressiveness: int | None = _VAD_AGGRESSIVENESS,
    max_utterance_ms: int = _MAX_UTTERANCE_MS,
    mode: Mode = typer.Option(
        Mode(_DEFAULTS.mode),
        "--mode",
        help="Recognition: 'offline' per segment, 'window' re-runs a sliding window, 'cached' streams with KV caches.",
        case_sensitive=False,
    ),
    chunk_ms: int = typer.Option(_DEFAULTS.chunk_ms, "--chunk-ms", min=20, help="Streaming chunk length, ms."),
    left_context_ms: int = typer.Option(
        _DEFAULTS.left_context_ms, "--left-context-ms", min=0, help="Left context the encoder keeps, ms."
    ),
    lookahead_ms: int = typer.Option(
        _DEFAULTS.lookahead_ms,
        "--lookahead-ms",
        min=0,
        help="Lookahead (added latency), ms: a multiple of 20, at most 10000. Cached mode: each chunk also attends to this much audio after it (recomputed next chunk).",
    ),
    language: str | None = typer.Option(
        None,
        "--language",
        metavar="LANG",
        help="Language code of a multilingual checkpoint (MMS: adapter.LANG.safetensors, nested vocab.json).",
        show_default="the checkpoint's own (its tokenizer's target_lang)",
    ),
    compute_device: str = _COMPUTE_DEVICE,
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
    max_speakers: int | None = typer.Option(
        None, "--max-speakers", min=1, help="At most this many speakers (diarization).", show_default="no limit"
    ),
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
    given = {
        "input_path": file,
        "mic": mic,
        "device": device,
        "model": model,
        "lm": lm,
        "unigrams": unigrams,
        "lm_alpha": lm_alpha,
        "lm_beta": lm_beta,
        "beam_width": beam_width,
        "hotwords": tuple(hotword or ()),
        "vad": vad.value,
        "vad_pre_speech_pad_ms": vad_pre_speech_pad_ms,
        "vad_hangover_ms": vad_hangover_ms,
        "vad_min_speech_ms": vad_min_speech_ms,
        "vad_min_silence_ms": vad_min_silence_ms,
        "vad_threshold": vad_threshold,
        "vad_aggressiveness": vad_aggressiveness,
        "max_utterance_ms": max_utterance_ms,
        "mode": mode.value,
        "diarize": diarize,
        "speakers": tuple(speaker or ()),
        "max_speakers": max_speakers,
        "speaker_model": speaker_model,
        "chunk_ms": chunk_ms,
        "left_context_ms": left_context_ms,
        "lookahead_ms": lookahead_ms,
        "language": language,
        "compute_device": compute_device,
        "realtime": realtime,
        "progress": progress,
        "console": console,
        "jsonl": jsonl,
        "srt": srt,
        "vtt": vtt,
        "rttm": rttm,
    }
    try:
        cfg = _config_from(ctx, given, config).validate()
        _check_compute_device(cfg.compute_device)
        if config is not None:
            cfg.refuse_output_at(config, "--config")
    except ConfigError as exc:
        _error_line(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    raise typer.Exit(_run(cfg))


_PARAM_OF_FIELD = {"input_path": "file", "speakers": "speaker", "hotwords": "hotword"}


def _config_from(ctx: typer.Context, given: dict[str, Any], config_path: Path | None) -> TranscribeConfig:
    """TOML values first, then every option the user actually typed."""
    values: dict[str, Any] = dict(load_toml(config_path)) if config_path is not None else {}
    for key, value in given.items():
        source = ctx.get_parameter_source(_PARAM_OF_FIELD.get(key, key))
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


@app.command("eval")
def eval_(
    manifest: Path = typer.Argument(
        ..., help="TSV manifest: 'audio' and 'text' columns (header), paths relative to it."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model directory or cached hub id.", show_default="bundled default model"
    ),
    lm: str | None = typer.Option(
        None,
        "--lm",
        metavar="PATH",
        help="n-gram LM (ARPA or KenLM binary) for beam-search finals; 'none' turns off the model's own LM.",
        show_default="the model's language_model/ if it has one, else greedy finals",
    ),
    unigrams: str | None = typer.Option(
        None, "--unigrams", metavar="PATH", help="Word list for a binary LM.", show_default="read from the ARPA file"
    ),
    lm_alpha: float | None = typer.Option(
        None, "--lm-alpha", help="LM weight.", show_default="the LM's attrs.json, else 0.5"
    ),
    lm_beta: float | None = typer.Option(
        None, "--lm-beta", help="Word insertion bonus.", show_default="the LM's attrs.json, else 1.0"
    ),
    beam_width: int = typer.Option(32, "--beam-width", min=1, help="Beam width of LM finals."),
    vad: Vad = typer.Option(
        Vad.webrtc, "--vad", case_sensitive=False, help="Voice activity detector in front of the recogniser."
    ),
    mode: Mode = typer.Option(
        Mode.cached, "--mode", case_sensitive=False, help="Streaming mode: 'cached' or 'window'."
    ),
    chunk_ms: int = typer.Option(640, "--chunk-ms", min=20, help="Streaming chunk length, ms."),
    left_context_ms: int = typer.Option(5120, "--left-context-ms", min=0, help="Encoder left context, ms."),
    lookahead_ms: int = typer.Option(
        0, "--lookahead-ms", min=0, help="Lookahead, ms (a multiple of 20, at most 10000)."
    ),
    language: str | None = typer.Option(
        None,
        "--language",
        metavar="LANG",
        help="Language code of a multilingual checkpoint (MMS): every utterance, streamed and offline, is recognised in it.",
        show_default="the checkpoint's own",
    ),
    compute_device: str = _COMPUTE_DEVICE,
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Score only the first N utterances.", show_default="all"
    ),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Utterances streamed at once (separate streams)."),
    realtime: bool = typer.Option(
        True, "--realtime/--no-realtime", help="Pace audio like a microphone (needed for latencies)."
    ),
    pad_silence_ms: int = typer.Option(
        2000, "--pad-silence-ms", min=0, help="Silence after each utterance, so endpointing closes it."
    ),
    block_ms: int = typer.Option(
        20, "--block-ms", min=1, help="Audio block the paced source delivers, ms (the microphone's is 20)."
    ),
    vad_pre_speech_pad_ms: int | None = _VAD_PRE_SPEECH_PAD_MS,
    vad_hangover_ms: int | None = _VAD_HANGOVER_MS,
    vad_min_speech_ms: int | None = _VAD_MIN_SPEECH_MS,
    vad_min_silence_ms: int | None = _VAD_MIN_SILENCE_MS,
    vad_threshold: float | None = _VAD_THRESHOLD,
    vad_aggressiveness: int | None = _VAD_AGGRESSIVENESS,
    max_utterance_ms: int = _MAX_UTTERANCE_MS,
) -> None:
    """Score streaming recognition on a MANIFEST: WER, CER, latencies, RTF, and offline WER."""
    if mode is Mode.offline:
        _error_line("eval streams: --mode must be 'cached' or 'window'")
        raise typer.Exit(EXIT_USAGE)
    try:
        check_lookahead_ms(lookahead_ms)
        check_language(language)
        _check_compute_device(compute_device)
    except ConfigError as exc:
        _error_line(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    from speechstream.eval import EvalConfig, evaluate, format_report  # heavy imports after parsing

    cfg = EvalConfig(
        manifest=manifest,
        model=model,
        mode=mode.value,
        chunk_ms=chunk_ms,
        left_context_ms=left_context_ms,
        lookahead_ms=lookahead_ms,
        vad=vad.value,
        lm_path=lm,
        unigrams_path=unigrams,
        lm_alpha=lm_alpha,
        lm_beta=lm_beta,
        beam_width=beam_width,
        limit=limit,
        concurrency=concurrency,
        realtime=realtime,
        pad_silence_ms=pad_silence_ms,
        language=language,
        compute_device=compute_device,
        block_ms=block_ms,
        vad_pre_speech_pad_ms=vad_pre_speech_pad_ms,
        vad_hangover_ms=vad_hangover_ms,
        vad_min_speech_ms=vad_min_speech_ms,
        vad_min_silence_ms=vad_min_silence_ms,
        vad_threshold=vad_threshold,
        vad_aggressiveness=vad_aggressiveness,
        max_utterance_ms=max_utterance_ms,
    )
    try:
        report = evaluate(cfg)
    except ConfigError as exc:
        _error_line(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    click.echo(format_report(report))
    click.echo(f"command: speechstream eval {' '.join(sys.argv[2:]) if len(sys.argv) > 2 else manifest}")


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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="speechstream")


if __name__ == "__main__":  # pragma: no cover
    main()
