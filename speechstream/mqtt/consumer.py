"""Helpers for programs that consume the events a worker publishes (QoS 1 repeats, JSON payloads)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FinalDeduper", "decode_event"]


@dataclass
class FinalDeduper:
    """QoS 1 is at least once: keep the first copy of each final, by (stream_id, segment_id)."""

    seen: set[tuple[str, str]] = field(default_factory=set)
    duplicates: int = 0

    def first_time(self, event: dict[str, Any]) -> bool:
        if event.get("type") != "final_transcript":
            return True
        key = (event["stream_id"], event["segment_id"])
        if key in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(key)
        return True


def decode_event(payload: bytes | bytearray | str) -> dict[str, Any]:
    """One published event payload -> its JSON dict."""
    return json.loads(payload)
