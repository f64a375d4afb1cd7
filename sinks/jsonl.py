"""JSONL event log: one JSON object per line (``Event.to_json``), flushed per line.

``path="-"`` writes to standard output. Audio chunks are left out unless asked for (they are
many and carry no samples in JSON anyway).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from sinks.base import FileSink, Sink, SinkErrorHandler
from stream.events import AudioChunk, Event

__all__ = ["JsonlSink", "JsonlStdoutSink", "open_jsonl"]


class JsonlSink(FileSink):
    """JSONL to a file (each line goes out in one unbuffered write)."""

    kind = "jsonl"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        include_audio: bool = False,
        fsync: bool = False,
        stream_id: str | None = None,
        on_error: SinkErrorHandler | None = None,
    ) -> None:
        super().__init__(path, fsync=fsync, stream_id=stream_id, on_error=on_error)
        self.include_audio = include_audio
        self.lines_written = 0

    def handle(self, event: Event) -> bool:
        if isinstance(event, AudioChunk) and not self.include_audio:
            return False
        self.write_text(event.to_json() + "\n")
        self.lines_written += 1
        return True


class JsonlStdoutSink(Sink):
    """JSONL to a text stream (standard output by default), flushed after every line; never closes it."""

    kind = "jsonl"

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        include_audio: bool = False,
        stream_id: str | None = None,
        on_error: SinkErrorHandler | None = None,
    ) -> None:
        super().__init__(stream_id=stream_id, on_error=on_error)
        self.out = out if out is not None else sys.stdout
        self.include_audio = include_audio
        self.lines_written = 0

    def describe(self) -> str:
        return "jsonl sink '-' (stdout)"

    def handle(self, event: Event) -> bool:
        if isinstance(event, AudioChunk) and not self.include_audio:
            return False
        self.out.write(event.to_json() + "\n")
        self.out.flush()
        self.lines_written += 1
        return True

    def finish(self) -> None:
        self.out.flush()


def open_jsonl(target: str | os.PathLike[str], **kwargs) -> Sink:
    """``"-"`` -> standard output, anything else -> a file."""
    if str(target) == "-":
        kwargs.pop("fsync", None)
        return JsonlStdoutSink(**kwargs)
    return JsonlSink(target, **kwargs)
