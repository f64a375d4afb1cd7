"""The publisher's outbox: an ordered, bounded queue of messages waiting for the broker's acknowledgement.

Overflow policy: when full, the oldest QoS 0 message goes first, then the oldest QoS 1 message
(counted in ``dropped_outbox_full`` and logged). On a disconnect QoS 0 messages are purged, QoS 1
ones stay until acknowledged.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

__all__ = ["Msg", "Outbox", "PublisherStats"]

log = logging.getLogger("speechstream.mqtt")


@dataclass(slots=True)
class Msg:
    topic: str
    payload: bytes
    qos: int


@dataclass
class PublisherStats:
    published: int = 0
    dropped_qos0: int = 0
    dropped_outbox_full: int = 0  # QoS 1 messages lost because the outbox hit outbox_max
    dropped_invalid: int = 0  # refused by the client library (a bug upstream); logged
    connects: int = 0
    disconnects: int = 0


class Outbox:
    def __init__(self, max_len: int, stats: PublisherStats, name: str):
        self.max_len = max_len
        self.stats = stats
        self.name = name
        self._queue: collections.deque[Msg] = collections.deque()

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        return bool(self._queue)

    def append(self, msg: Msg) -> None:
        if len(self._queue) >= self.max_len:
            self._make_room()
        self._queue.append(msg)

    def head(self) -> Msg:
        return self._queue[0]

    def done(self, msg: Msg) -> None:
        """``msg`` (the head) was acknowledged or refused: it leaves the outbox."""
        if self._queue and self._queue[0] is msg:
            self._queue.popleft()

    def _make_room(self) -> None:
        for i, m in enumerate(self._queue):
            if m.qos == 0:
                del self._queue[i]
                self.stats.dropped_qos0 += 1
                return
        self._queue.popleft()
        self.stats.dropped_outbox_full += 1
        log.error("%s: outbox full (%d), dropped the oldest QoS 1 message", self.name, self.max_len)

    def purge_qos0(self) -> None:
        kept = collections.deque(m for m in self._queue if m.qos > 0)
        self.stats.dropped_qos0 += len(self._queue) - len(kept)
        self._queue = kept
