"""RTTM speaker turns: ``SPEAKER <file> 1 <start_s> <dur_s> <NA> <NA> <speaker> <NA> <NA>``.

Speaker turns can be relabelled later (same ``turn_id``, higher ``revision``), and RTTM has no
way to say "this line replaces that one". Two policies:

- ``mode="rewrite"`` (default): the sink keeps the latest revision of every turn and, on every
  change, writes the whole file to a temporary file beside it and renames it over ``<path>``
  (atomic on POSIX). The file on disk is always complete, valid and up to date, even if the
  process is killed; an existing file is left as it was until the first turn (or a clean close
  with no turn, which leaves an empty, valid RTTM). Cost: O(turns) bytes per change, about 60
  bytes a turn.
- ``mode="append"``: each turn is appended once, when first seen; later revisions only update
  memory, and :meth:`close` rewrites the file with the final labels. Cheap and tail-able, but a
  killed process leaves the first-seen labels.

Lines are sorted by start time, then turn id. Whitespace in the file id or speaker label is
replaced by ``_`` (RTTM fields are space-separated). Turns of zero or negative length are skipped.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Literal

from sinks.base import FileSink, SinkErrorHandler
from stream.events import Event, SpeakerTurn

__all__ = ["RttmSink", "rttm_line"]

RttmMode = Literal["rewrite", "append"]


def _field(text: str) -> str:
    return "_".join(text.split()) or "<NA>"


def rttm_line(turn: SpeakerTurn, file_id: str) -> str:
    rate = turn.sample_rate_hz
    start = turn.sample / rate
    dur = (turn.end_sample - turn.sample) / rate
    return f"SPEAKER {_field(file_id)} 1 {start:.3f} {dur:.3f} <NA> <NA> {_field(turn.speaker)} <NA> <NA>\n"


class RttmSink(FileSink):
    kind = "rttm"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        file_id: str | None = None,
        mode: RttmMode = "rewrite",
        fsync: bool = False,
        stream_id: str | None = None,
        on_error: SinkErrorHandler | None = None,
    ) -> None:
        if mode not in ("rewrite", "append"):
            raise ValueError(f"RTTM mode must be 'rewrite' or 'append', not {mode!r}")
        super().__init__(path, fsync=fsync, stream_id=stream_id, on_error=on_error)
        self.file_id = file_id if file_id is not None else Path(path).stem
        self.mode = mode
        self.turns: dict[tuple[str, str], SpeakerTurn] = {}  # (stream_id, turn_id) -> latest revision
        self._dirty = False  # append mode: a revision not yet on disk
        self._rewritten = False  # rewrite mode: the target holds this run's file
        self._file_mode: int | None = None
        if mode == "rewrite":
            self._rewritten = self.committed  # a new (empty, valid) file already stands; an old one waits
            self.release()  # the path is writable (checked); every change replaces the file whole
            # The file's permission bits (an existing file's, else what a new file got), for its replacements.
            self._file_mode = stat.S_IMODE(self._target.stat().st_mode) if self._target.is_file() else None

    def handle(self, event: Event) -> bool:
        if not isinstance(event, SpeakerTurn):
            return False
        key = (event.stream_id, event.turn_id)
        known = self.turns.get(key)
        if known is not None and event.revision <= known.revision:
            return False  # stale or duplicate revision
        self.turns[key] = event
        if self.mode == "rewrite":
            self._rewrite()
            return True
        if known is None:
            if event.end_sample > event.sample:
                self.write_text(rttm_line(event, self.file_id))
                return True
            return False
        self._dirty = True
        return False

    def render(self) -> str:
        turns = sorted(self.turns.values(), key=lambda t: (t.sample, t.stream_id, t.turn_id))
        return "".join(rttm_line(t, self.file_id) for t in turns if t.end_sample > t.sample)

    def _rewrite(self) -> None:
        if self._target.exists() and not self._target.is_file():  # /dev/null, a FIFO: never rename over it
            with open(self._target, "wb") as f:
                f.write(self.render().encode("utf-8"))
            self._rewritten = True
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{self._target.name}.", suffix=".part", dir=self._target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.render().encode("utf-8"))
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            if self._file_mode is not None:
                os.chmod(tmp, self._file_mode)
            os.replace(tmp, self._target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._rewritten = True

    def finish(self) -> None:
        if self.mode == "rewrite":
            if not self._rewritten and not self._fatal_seen:
                self._rewrite()  # a clean run without turns: an empty, valid RTTM
            return
        super().finish()
        if self._dirty:
            self._rewrite()

    async def _after_write(self) -> None:
        if self.mode == "append":
            await super()._after_write()
