"""SRT captions, written incrementally: each final's cues are appended (one write) as soon as it exists.

The file is valid SRT after every write, so a process killed mid-stream leaves a file that a
parser accepts. A known speaker prefixes the first line of each cue (``"{speaker}: "`` by default).
Partials and other events are ignored.
"""

from __future__ import annotations

import os

from sinks.base import FileSink, SinkErrorHandler
from sinks.captions import CaptionLimits, cue_times_ms, cues_for_final, format_timestamp
from stream.events import Event, FinalTranscript

__all__ = ["SrtSink"]


class SrtSink(FileSink):
    kind = "srt"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: CaptionLimits = CaptionLimits(),
        speaker_prefix: str = "{speaker}: ",
        fsync: bool = False,
        stream_id: str | None = None,
        on_error: SinkErrorHandler | None = None,
    ) -> None:
        super().__init__(path, fsync=fsync, stream_id=stream_id, on_error=on_error)
        self.limits = limits
        self.speaker_prefix = speaker_prefix
        self.cues_written = 0

    def handle(self, event: Event) -> bool:
        if not isinstance(event, FinalTranscript):
            return False
        blocks: list[str] = []
        for cue in cues_for_final(event, self.limits, self.speaker_prefix):
            start, end = cue_times_ms(cue, event.sample_rate_hz)
            lines = list(cue.lines)
            if cue.speaker:
                lines[0] = self.speaker_prefix.format(speaker=cue.speaker) + lines[0]
            index = self.cues_written + len(blocks) + 1
            timing = f"{format_timestamp(start, ',')} --> {format_timestamp(end, ',')}"
            blocks.append(f"{index}\n{timing}\n" + "\n".join(lines) + "\n\n")
        if not blocks:
            return False
        self.write_text("".join(blocks))  # one write per final: never half a final on disk
        self.cues_written += len(blocks)
        return True
