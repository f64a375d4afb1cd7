"""``speechstream eval``: WER/CER and finalisation latency of a manifest, streamed."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from engines.online.config import check_language, check_lookahead_ms
from stream.errors import ConfigError

from ._app import (
    _COMPUTE_DEVICE,
    _MAX_UTTERANCE_MS,
    _VAD_AGGRESSIVENESS,
    _VAD_HANGOVER_MS,
    _VAD_MIN_SILENCE_MS,
    _VAD_MIN_SPEECH_MS,
    _VAD_PRE_SPEECH_PAD_MS,
    _VAD_THRESHOLD,
    EXIT_USAGE,
    Mode,
    Vad,
    _check_compute_device,
    _error_line,
    app,
    click,
)


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
