"""The options that ``transcribe``, ``eval`` and ``serve`` share, declared once, and the one function that
builds the nested settings from parsed options.

Defaults come from the configurations themselves (:class:`~engines.online.config.RecognizerConfig`,
:class:`~stream.config.VadSettings`); ranges from their constants. An option whose help text differs
between commands is a small factory (name, default and range here; the help given by the command).
Values are checked by the configurations' own validators when :func:`build_settings` (eval, serve) or
``TranscribeConfig.from_mapping`` (transcribe, after its TOML file) builds them, before anything
heavy is imported: one ``speechstream: error: ...`` line.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import typer

from engines.online.config import (
    FRAME_MS,
    MAX_LOOKAHEAD_MS,
    MIN_CHUNK_MS,
    MIN_MAX_UTTERANCE_MS,
    RecognizerConfig,
    check_compute_device,
)
from stream.config import MAX_VAD_TIMING_MS, TRANSCRIBE_RECOGNIZER_KEYS, VadSettings, nest_settings

__all__ = [
    "RECOGNIZER",
    "VAD",
    "CLI_RECOGNIZER_KEYS",
    "LOOKAHEAD_RANGE",
    "Vad",
    "Mode",
    "build_settings",
    "check_compute_device_now",
    "model_option",
    "vad_option",
    "mode_option",
    "left_context_option",
    "lookahead_option",
    "language_option",
    "lm_option",
    "unigrams_option",
    "lm_alpha_option",
    "max_speakers_option",
    "CHUNK_MS",
    "LOOKAHEAD_MS",
    "COMPUTE_DEVICE",
    "LM_BETA",
    "BEAM_WIDTH",
    "HOTWORD",
    "VAD_PRE_SPEECH_PAD_MS",
    "VAD_HANGOVER_MS",
    "VAD_MIN_SPEECH_MS",
    "VAD_MIN_SILENCE_MS",
    "VAD_THRESHOLD",
    "VAD_AGGRESSIVENESS",
    "MAX_UTTERANCE_MS",
]

RECOGNIZER = RecognizerConfig()  # the defaults every command shows
VAD = VadSettings()

# CLI parameter name -> RecognizerConfig field (the VAD's: stream.config.VAD_KEYS)
CLI_RECOGNIZER_KEYS: dict[str, str] = {**TRANSCRIBE_RECOGNIZER_KEYS, "hotword": "hotwords", "max_batch": "max_batch"}


class Vad(str, enum.Enum):
    webrtc = "webrtc"
    silero = "silero"
    none = "none"


class Mode(str, enum.Enum):
    offline = "offline"
    window = "window"
    cached = "cached"


def build_settings(params: Mapping[str, Any]) -> tuple[RecognizerConfig, VadSettings, dict[str, Any]]:
    """Parsed options (``ctx.params``) -> (RecognizerConfig, VadSettings, the command's own options).
    ConfigError for a bad value or combination (e.g. --vad-threshold without --vad silero)."""
    values = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in params.items()}
    if "hotword" in values:
        values["hotword"] = tuple(values["hotword"] or ())
    rec, vad, rest = nest_settings(values, CLI_RECOGNIZER_KEYS)
    check_compute_device_now(rec.compute_device)
    return rec, vad, rest


def check_compute_device_now(value: str) -> None:
    """``--compute-device`` at parse time: the spelling, and (for cuda) that the GPU exists; ConfigError."""
    from engines.online.config import resolve_compute_device

    check_compute_device(value)
    if value.startswith("cuda"):  # imports torch: only when a GPU is asked for
        resolve_compute_device(value)


# ----------------------------------------------------------------------------- recognition


def model_option(help: str, show_default: str) -> Any:
    return typer.Option(None, "--model", help=help, show_default=show_default)


def vad_option(help: str) -> Any:
    return typer.Option(Vad(VAD.name), "--vad", case_sensitive=False, help=help)


def mode_option(help: str) -> Any:
    return typer.Option(Mode(RECOGNIZER.mode), "--mode", case_sensitive=False, help=help)


CHUNK_MS = typer.Option(RECOGNIZER.chunk_ms, "--chunk-ms", min=MIN_CHUNK_MS, help="Streaming chunk length, ms.")


def left_context_option(help: str) -> Any:
    return typer.Option(RECOGNIZER.left_context_ms, "--left-context-ms", min=0, help=help)


LOOKAHEAD_RANGE = f"a multiple of {FRAME_MS}, at most {MAX_LOOKAHEAD_MS}"


def lookahead_option(help: str) -> Any:
    return typer.Option(RECOGNIZER.lookahead_ms, "--lookahead-ms", min=0, help=help)


# transcribe and serve; eval words it shorter
LOOKAHEAD_MS = lookahead_option(
    f"Lookahead (added latency), ms: {LOOKAHEAD_RANGE}. Cached mode: each chunk also attends to this much "
    "audio after it (recomputed next chunk)."
)


def language_option(help: str, show_default: str) -> Any:
    return typer.Option(RECOGNIZER.language, "--language", metavar="LANG", help=help, show_default=show_default)


COMPUTE_DEVICE = typer.Option(
    RECOGNIZER.compute_device,
    "--compute-device",
    metavar="auto|cpu|cuda[:N]",
    help="Where the model runs: 'auto' is cuda when a GPU is available, else cpu.",
)

# ----------------------------------------------------------------------------- LM finals


def lm_option(help: str) -> Any:
    return typer.Option(
        RECOGNIZER.lm_path,
        "--lm",
        metavar="PATH",
        help=help,
        show_default="the model's language_model/ if it has one, else greedy finals",
    )


def unigrams_option(help: str) -> Any:
    return typer.Option(
        RECOGNIZER.unigrams_path, "--unigrams", metavar="PATH", help=help, show_default="read from the ARPA file"
    )


def lm_alpha_option(help: str) -> Any:
    return typer.Option(RECOGNIZER.lm_alpha, "--lm-alpha", help=help, show_default="the LM's attrs.json, else 0.5")


LM_BETA = typer.Option(
    RECOGNIZER.lm_beta, "--lm-beta", help="Word insertion bonus.", show_default="the LM's attrs.json, else 1.0"
)
BEAM_WIDTH = typer.Option(RECOGNIZER.beam_width, "--beam-width", min=1, help="Beam width of LM finals.")
HOTWORD = typer.Option(
    None, "--hotword", metavar="WORD", help="Boost a word or phrase in finals (repeatable).", show_default="none"
)

# ----------------------------------------------------------------------------- VAD and endpointing
# show_default: the VADs' tuned values (stream.vad, not imported here: --help stays light; a test
# checks that they agree)


def _vad_timing_option(field: str, help: str, show_default: str) -> Any:
    """A VAD timing in ms (a VadSettings field; None: the VAD's tuned default), range-checked at parse time."""
    flag = "--vad-" + field.replace("_", "-")
    return typer.Option(getattr(VAD, field), flag, min=0, max=MAX_VAD_TIMING_MS, help=help, show_default=show_default)


VAD_PRE_SPEECH_PAD_MS = _vad_timing_option("pre_speech_pad_ms", "Audio kept before a detected speech onset, ms.", "100")
VAD_HANGOVER_MS = _vad_timing_option(
    "hangover_ms", "Audio kept after the start of the pause that ends a segment, ms.", "100"
)
VAD_MIN_SPEECH_MS = _vad_timing_option("min_speech_ms", "Shorter bursts are not speech, ms.", "60")
VAD_MIN_SILENCE_MS = _vad_timing_option(
    "min_silence_ms",
    "A pause this long ends a segment (a final), ms (webrtc: counted from where the energy fell).",
    "webrtc 180, silero 200",
)
VAD_BACKDATE_MAX_MS = _vad_timing_option(
    "backdate_max_ms",
    "Count the pause from where the energy fell, at most this long before the VAD's first silent frame, ms; 0: off.",
    "webrtc 90, silero 0",
)
VAD_THRESHOLD = typer.Option(
    VAD.threshold, "--vad-threshold", min=0.0, max=1.0, help="silero speech probability threshold.", show_default="0.7"
)
VAD_AGGRESSIVENESS = typer.Option(
    VAD.aggressiveness,
    "--vad-aggressiveness",
    min=0,
    max=3,
    help="webrtc aggressiveness (3 filters the most non-speech).",
    show_default="3",
)
MAX_UTTERANCE_MS = typer.Option(
    RECOGNIZER.max_utterance_ms,
    "--max-utterance-ms",
    min=MIN_MAX_UTTERANCE_MS,
    help="Longest segment; cut at its longest pause between words.",
)

# ----------------------------------------------------------------------------- diarization


def max_speakers_option(help: str) -> Any:
    return typer.Option(None, "--max-speakers", min=1, help=help, show_default="no limit")
