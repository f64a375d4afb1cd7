"""The sink contract: ``await sink.consume(event)`` for every event, then ``await sink.close()``.

A sink is small and knows one format or transport. Its synchronous core, :meth:`Sink.handle`,
turns one event into writes; the async shell (:meth:`Sink.consume`) filters by stream, runs
``handle`` and, when asked, ``fsync`` off the event loop.

Failure isolation: an ``OSError`` while writing (disk full, broken pipe, a closed terminal)
disables *that sink only*: it is logged once on the ``speechstream.sinks`` logger, kept in
:attr:`Sink.failed`, and later events are ignored. ``consume`` never raises ``OSError``, so one
broken output cannot stop the graph or the other streams. Other exceptions are bugs and propagate.
Opening a file that cannot be opened is a configuration error and raises at construction.
File sinks never truncate an existing file up front: see :class:`FileSink` (a temporary file
beside the target, renamed over it with the first record).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from stream.events import ErrorEvent, Event

__all__ = ["Sink", "FileSink", "SinkErrorHandler"]

log = logging.getLogger("speechstream.sinks")

SinkErrorHandler = Callable[["Sink", OSError], None]


def _log_failure(sink: Sink, exc: OSError) -> None:
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
    """A sink writing one file. Set up at construction, so a bad path fails at start, not mid-stream.

    Every logical record (a caption cue block, a JSON line) goes out in one unbuffered ``write``
    call, so a process killed at any moment leaves only whole records on disk. ``fsync=True``
    also forces each write to stable storage (in a worker thread).

    A new file is created at construction (empty, or with the format's header). An existing
    file is never truncated up front: the sink writes to a temporary file beside it
    (``.<name>.<random>.part``, same directory, so the rename is atomic) and renames that over
    the target with its first record (:meth:`write_text`, ``commit=True``), or at a clean
    close if no record came. Until then the target keeps its old contents: a run that fails
    before producing anything (unreadable input, model error, a fatal stream error) leaves it
    as it was, and a SIGKILL at any moment leaves at the target either the old file or a valid
    new one (a killed process may leave its ``.part`` file behind). A symlinked target is
    followed (the link stays); the old file's permission bits are kept. A target that is not a
    regular file (``/dev/null``, ``/dev/stdout``, a FIFO) is opened and written directly.
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
        self._fatal_seen = False
        self._tmp: Path | None = None  # the .part file, until it is renamed over the target
        target = Path(os.path.realpath(self.path))  # follow a symlink: replace its target, keep the link
        self._target = target
        if not target.is_file():  # a new file (nothing to keep), or a device / FIFO: write it directly
            self._file: IO[bytes] | None = open(target, "wb", buffering=0)  # noqa: SIM115 - closed in release()
            return
        mode = stat.S_IMODE(target.stat().st_mode)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        except OSError as exc:  # e.g. a read-only directory: refuse rather than truncate the file in place
            raise OSError(
                exc.errno,
                f"{exc.strerror} (replacing an existing file safely needs a new file beside it in {target.parent})",
                str(self.path),
            ) from exc
        self._tmp = Path(tmp)
        try:
            os.fchmod(fd, mode)  # the replacement keeps the old file's permission bits
        except OSError:
            pass
        self._file = os.fdopen(fd, "wb", buffering=0)

    @property
    def committed(self) -> bool:
        """True once the target path holds this sink's file (or it writes a device directly)."""
        return self._tmp is None

    def describe(self) -> str:
        return f"{self.kind} sink {str(self.path)!r}"

    async def consume(self, event: Event) -> None:
        if isinstance(event, ErrorEvent) and event.fatal and self.stream_id in (None, event.stream_id):
            self._fatal_seen = True  # nothing yet? then keep the old file at close
        await super().consume(event)

    def write_text(self, text: str, *, commit: bool = True) -> None:
        """Write one record in one call; ``commit`` renames the file over the target first time."""
        if self._file is None:
            raise OSError(f"{self.path} is closed")
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:  # a regular file takes it in one call; loop for the partial-write corner case
            n = self._file.write(view)
            view = view[n:]
        if commit:
            self.commit()

    def commit(self) -> None:
        """Rename the temporary file over the target (once; later writes go on in the same file)."""
        if self._tmp is None or self._file is None:
            return
        if self.fsync:
            os.fsync(self._file.fileno())
        os.replace(self._tmp, self._target)
        self._tmp = None

    async def _after_write(self) -> None:
        if self.fsync and self._file is not None:
            await asyncio.to_thread(os.fsync, self._file.fileno())

    def finish(self) -> None:
        if not self._fatal_seen:  # a clean end with no record: the (empty, valid) file replaces the old
            self.commit()

    def release(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()
        tmp, self._tmp = self._tmp, None
        if tmp is not None:  # never committed: the target keeps what it had
            try:
                tmp.unlink()
            except OSError:
                pass
