"""WebVTT captions, written incrementally: the header at open, then each final's cues as it exists.

The file is valid WebVTT after every write (a header alone is a valid, empty file), so a process
killed mid-stream leaves a file that a parser accepts. A known speaker becomes a voice tag,
``<v Speaker>``. Cue identifiers are ``<segment_id>.<k>`` (the k-th cue of that segment).
Partials and other events are ignored.
"""

from __future__ import annotations

import os

from sinks.base import FileSink, SinkErrorHandler
from sinks.captions import CaptionLimits, cue_times_ms, cues_for_final, format_timestamp
from stream.events import Event, FinalTranscript

__all__ = ["VttSink", "escape_vtt"]


def escape_vtt(text: str) -> str:
    """Escape the characters WebVTT cue text reserves."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class VttSink(FileSink):
    kind = "vtt"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: CaptionLimits = CaptionLimits(),
        fsync: bool = False,
        stream_id: str | None = None,
        on_error: SinkErrorHandler | None = None,
    ) -> None:
        super().__init__(path, fsync=fsync, stream_id=stream_id, on_error=on_error)
        self.limits = limits
        self.cues_written = 0
        self.write_text("WEBVTT\n\n", commit=False)  # the target is replaced with the first cue (or at close)

    def handle(self, event: Event) -> bool:
        if not isinstance(event, FinalTranscript):
            return False
        blocks = []
        for cue in cues_for_final(event, self.limits):
            start, end = cue_times_ms(cue, event.sample_rate_hz)
            lines = [escape_vtt(line) for line in cue.lines]
            if cue.speaker:
                lines[0] = f"<v {escape_vtt(cue.speaker)}>" + lines[0]
            ident = f"{cue.ident}\n" if cue.ident else ""
            timing = f"{format_timestamp(start, '.')} --> {format_timestamp(end, '.')}"
            blocks.append(f"{ident}{timing}\n" + "\n".join(lines) + "\n\n")
        if not blocks:
            return False
        self.write_text("".join(blocks))  # one write per final: never half a final on disk
        self.cues_written += len(blocks)
        return True
