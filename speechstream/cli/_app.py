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
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors its own click; older releases use the click package
    from typer import _click as click
except ImportError:  # pragma: no cover - depends on the installed typer
    import click  # type: ignore[no-redef]

from stream.config import TranscribeConfig

__all__ = ["app", "main", "click", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "EXIT_INTERRUPTED"]

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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="speechstream")
