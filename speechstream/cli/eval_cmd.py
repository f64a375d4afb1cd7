"""``speechstream eval``: WER/CER and finalisation latency of a manifest, streamed."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from speechstream import defaults as d
from stream.errors import ConfigError

from . import options as o
from ._app import EXIT_USAGE, _error_line, app, click


@app.command("eval")
def eval_(
    ctx: typer.Context,
    manifest: Path = typer.Argument(
        ..., help="TSV manifest: 'audio' and 'text' columns (header), paths relative to it."
    ),
    model: str | None = o.model_option("Model directory or cached hub id.", show_default="bundled default model"),
    lm: str | None = o.lm_option(
        "n-gram LM (ARPA or KenLM binary) for beam-search finals; 'none' turns off the model's own LM."
    ),
    unigrams: str | None = o.unigrams_option("Word list for a binary LM."),
    lm_alpha: float | None = o.lm_alpha_option("LM weight."),
    lm_beta: float | None = o.LM_BETA,
    beam_width: int = o.BEAM_WIDTH,
    vad: o.Vad = o.vad_option("Voice activity detector in front of the recogniser."),
    mode: o.Mode = o.mode_option("Streaming mode: 'cached' or 'window'."),
    chunk_ms: int = o.CHUNK_MS,
    left_context_ms: int = o.left_context_option("Encoder left context, ms."),
    lookahead_ms: int = o.lookahead_option(f"Lookahead, ms ({o.LOOKAHEAD_RANGE})."),
    language: str | None = o.language_option(
        "Language code of a multilingual checkpoint (MMS): every utterance, streamed and offline, is recognised in it.",
        show_default="the checkpoint's own",
    ),
    compute_device: str = o.COMPUTE_DEVICE,
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Score only the first N utterances.", show_default="all"
    ),
    concurrency: int = typer.Option(
        d.EVAL_CONCURRENCY, "--concurrency", min=1, help="Utterances streamed at once (separate streams)."
    ),
    realtime: bool = typer.Option(
        d.EVAL_REALTIME, "--realtime/--no-realtime", help="Pace audio like a microphone (needed for latencies)."
    ),
    pad_silence_ms: int = typer.Option(
        d.EVAL_PAD_SILENCE_MS, "--pad-silence-ms", min=0, help="Silence after each utterance, so endpointing closes it."
    ),
    block_ms: int = typer.Option(
        d.EVAL_BLOCK_MS, "--block-ms", min=1, help="Audio block the paced source delivers, ms (the microphone's is 20)."
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
    """Score streaming recognition on a MANIFEST: WER, CER, latencies, RTF, and offline WER."""
    if mode is o.Mode.offline:
        _error_line("eval streams: --mode must be 'cached' or 'window'")
        raise typer.Exit(EXIT_USAGE)
    from speechstream.eval import EvalConfig  # light: numpy only

    try:
        recognizer, vad_settings, rest = o.build_settings(ctx.params)
        cfg = EvalConfig(recognizer=recognizer, vad=vad_settings, **rest)
    except ConfigError as exc:
        _error_line(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    from speechstream.eval import evaluate, format_report  # heavy imports after parsing

    try:
        report = evaluate(cfg)
    except ConfigError as exc:
        _error_line(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    click.echo(format_report(report))
    click.echo(f"command: speechstream eval {' '.join(sys.argv[2:]) if len(sys.argv) > 2 else manifest}")
