"""The sink contract: ``await sink.consume(event)`` for every event, then ``await sink.close()``.

A sink is small and knows one format or transport. Its synchronous core, :meth:`Sink.handle`,
turns one event into writes; the async shell (:meth:`Sink.consume`) filters by stream, runs
``handle`` and, when asked, ``fsync`` off the event loop.

Failure isolation: an ``OSError`` while writing (disk full, broken pipe, a closed terminal)
disables *that sink only*: it is logged once on the ``speechstream.sinks`` logger, kept in
:attr:`Sink.failed`, and later events are ignored. ``consume`` never raises ``OSError``, so one
broken output cannot stop the graph or the other streams. Other exceptions are bugs and propagate.
Opening a file that cannot be opened is a configuration error and raises at construction.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import IO, Callable

from stream.events import Event

__all__ = ["Sink", "FileSink", "SinkErrorHandler"]

log = logging.getLogger("speechstream.sinks")

SinkErrorHandler = Callable[["Sink", OSError], None]


def _log_failure(sink: "Sink", exc: OSError) -> None:
    log.error("%s failed and is disabled, other outputs continue: %s", sink.describe(), exc)


class Sink:
    """Base of all sinks. Subclasses implement :meth:`handle` and, if they hold resources, :meth:`finish`."""

    kind = "sink"

    def __init__(self, *, stream_id: str | None = None, on_error: SinkErrorHandler | None = None) -> None:
        self.stream_id = stream_id  # None: take events of every stream
        self.failed: OSError | None = None
        self.closed = False
        self._on_error = on_error or _log_failure

    # -- the contract -------------------------------------------------------------------------

    async def consume(self, event: Event) -> None:
        """Handle one event. Never raises ``OSError``: a write failure disables this sink."""
        if self.failed is not None or self.closed:
            return
        if self.stream_id is not None and event.stream_id != self.stream_id:
            return
        try:
            wrote = self.handle(event)
            if wrote:
                await self._after_write()
        except OSError as exc:
            self._fail(exc)

    async def close(self) -> None:
        """Write what is pending and release resources. Idempotent; never raises ``OSError``."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.failed is None:
                self.finish()
        except OSError as exc:
            self._fail(exc)
        finally:
            self.release()

    # -- for subclasses -------------------------------------------------------------------------

    def handle(self, event: Event) -> bool:
        """Synchronous core: act on one event; return True when bytes were written."""
        raise NotImplementedError

    def finish(self) -> None:
        """Write anything pending at close (runs only if the sink has not failed)."""

    def release(self) -> None:
        """Release resources (always runs at close, also after a failure)."""

    async def _after_write(self) -> None:
        """Hook after a write (file sinks fsync here when asked)."""

    def describe(self) -> str:
        return f"{self.kind} sink"

    def _fail(self, exc: OSError) -> None:
        self.failed = exc
        try:
            self.release()
        except OSError:
            pass
        self._on_error(self, exc)


class FileSink(Sink):
    """A sink writing one file. Opens at construction, so a bad path fails at start, not mid-stream.

    The file is opened unbuffered in binary mode and every logical record (a caption cue block,
    a JSON line) goes out in one ``write`` call: a process killed at any moment leaves only whole
    records on disk. ``fsync=True`` also forces each write to stable storage (in a worker thread).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = False,
        stream_id: str | None = None,
        on_error: SinkErrorHandler | None = None,
    ) -> None:
        super().__init__(stream_id=stream_id, on_error=on_error)
        self.path = Path(path)
        self.fsync = fsync
        self._file: IO[bytes] | None = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in release()

    def describe(self) -> str:
        return f"{self.kind} sink {str(self.path)!r}"

    def write_text(self, text: str) -> None:
        if self._file is None:
            raise OSError(f"{self.path} is closed")
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:  # a regular file takes it in one call; loop for the partial-write corner case
            n = self._file.write(view)
            view = view[n:]

    async def _after_write(self) -> None:
        if self.fsync and self._file is not None:
            await asyncio.to_thread(os.fsync, self._file.fileno())

    def release(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()
