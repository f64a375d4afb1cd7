"""Console captions.

On a terminal (TTY): the partial of the open segment is shown on one line that is rewritten in
place (``\\r`` + ANSI erase-line), cut to the terminal width so it never wraps; a final erases
that line and is committed on its own line::

    [00:00:01.20 -> 00:00:03.45] S1: the quick brown fox

Not a terminal (a pipe, a file): plain line mode, finals only, one line each, nothing rewritten.
``show_vad=True`` also prints speech segments (``[.. -> ..] (speech)``): useful when no
recogniser runs. Errors (fatal or not) go to ``err`` (stderr by default), never to
stdout, so a pipe carries finals only; ``show_fatal=False`` leaves fatal ones to the caller (the
CLI prints them once, as its end-of-run error line). With events from more than one stream, each line is
prefixed with its stream id.
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

from sinks.base import Sink, SinkErrorHandler
from stream.events import ErrorEvent, Event, FinalTranscript, PartialTranscript, SpeechEnded

__all__ = ["ConsoleSink", "format_clock"]

ERASE_LINE = "\r\x1b[2K"


def format_clock(sample: int, sample_rate_hz: int) -> str:
    """``HH:MM:SS.cc`` (centiseconds, floor) from a sample offset."""
    cs = sample * 100 // sample_rate_hz
    s, c = divmod(cs, 100)
    m, sec = divmod(s, 60)
    h, minute = divmod(m, 60)
    return f"{h:02d}:{minute:02d}:{sec:02d}.{c:02d}"


class ConsoleSink(Sink):
    kind = "console"

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        tty: bool | None = None,
        show_vad: bool = False,
        width: int | None = None,
        stream_id: str | None = None,
        on_error: SinkErrorHandler | None = None,
        err: TextIO | None = None,
        show_fatal: bool = True,
    ) -> None:
        super().__init__(stream_id=stream_id, on_error=on_error)
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.show_vad = show_vad
        self.show_fatal = show_fatal
        self.width = width
        self._partial_shown = False
        self._streams: set[str] = set()

    def describe(self) -> str:
        return "console sink"

    def _prefix(self, event: Event) -> str:
        self._streams.add(event.stream_id)
        return f"{event.stream_id} " if len(self._streams) > 1 else ""

    def _commit(self, line: str) -> None:
        erase = ERASE_LINE if self.tty else ""  # also clears anything else left on the line
        self.out.write(f"{erase}{line}\n")
        self.out.flush()
        self._partial_shown = False

    def handle(self, event: Event) -> bool:
        rate = event.sample_rate_hz
        if isinstance(event, FinalTranscript):
            if not event.text.strip():
                if self.tty and self._partial_shown:
                    self.out.write(ERASE_LINE)
                    self.out.flush()
                    self._partial_shown = False
                return False
            who = f"{event.speaker}: " if event.speaker else ""
            span = f"[{format_clock(event.sample, rate)} -> {format_clock(event.end_sample, rate)}]"
            self._commit(f"{self._prefix(event)}{span} {who}{event.text.strip()}")
            return True
        if isinstance(event, PartialTranscript):
            if not self.tty:
                return False
            who = f"{event.speaker}: " if event.speaker else ""
            line = f"{self._prefix(event)}... {who}{event.text.strip()}"
            width = self.width or shutil.get_terminal_size((80, 24)).columns
            if len(line) > width - 1:
                line = "..." + line[-(width - 4) :]  # keep the newest words visible
            self.out.write(ERASE_LINE + line)
            self.out.flush()
            self._partial_shown = True
            return True
        if isinstance(event, SpeechEnded) and self.show_vad:
            span = f"[{format_clock(event.start_sample, rate)} -> {format_clock(event.sample, rate)}]"
            self._commit(f"{self._prefix(event)}{span} (speech)")
            return True
        if isinstance(event, ErrorEvent):
            if event.fatal and not self.show_fatal:
                return False
            if self.tty and self._partial_shown:  # stderr may share the terminal: clear the partial first
                self.out.write(ERASE_LINE)
                self.out.flush()
                self._partial_shown = False
            fatal = " (stream stopped)" if event.fatal else ""
            self.err.write(f"{self._prefix(event)}error [{event.code}]: {event.message}{fatal}\n")
            self.err.flush()
            return True
        return False

    def finish(self) -> None:
        if self.tty and self._partial_shown:
            self.out.write("\n")  # leave the last partial visible, do not write over the prompt
            self._partial_shown = False
        self.out.flush()
