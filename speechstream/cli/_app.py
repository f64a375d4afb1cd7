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


_DEFAULTS = TranscribeConfig()  # transcribe's own defaults (the shared options: speechstream.cli.options)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="speechstream")
