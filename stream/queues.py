"""Bounded edges between nodes, with a named overflow policy and a control lane.

Every edge of the graph is an :class:`Edge`: a bounded FIFO of items (events and
control frames) read by exactly one consumer task.

Overflow policies (:data:`Overflow`):

``"block"``
    ``put`` waits while the edge holds ``maxsize`` items: backpressure flows upstream.
``"drop_oldest"``
    ``put`` never waits for room held by *droppable* items: when full, the oldest
    droppable item (by default :class:`~stream.events.AudioChunk` and
    :class:`~stream.events.PartialTranscript`) is dropped and counted per stream.
    Items that must arrive (end of stream, finals, VAD and error events) are never
    dropped; if the edge is full of them, ``put`` waits as under ``"block"``.
    The consumer sees a :class:`~stream.events.QueueOverflow` event (``edge``,
    ``dropped_total``) for that stream before the next item after a drop, so drops
    are surfaced in the event stream and never silent.

Control frames (:class:`ControlFrame`: ``Flush``, ``Stop``) go into a separate lane
that ``get`` serves first: they jump the queue, and are never dropped nor bounded.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .events import AudioChunk, Event, PartialTranscript, QueueOverflow

__all__ = ["Overflow", "EdgeSpec", "Edge", "ControlFrame", "Flush", "Stop", "Item", "DEFAULT_DROPPABLE"]

Overflow = Literal["block", "drop_oldest"]

DEFAULT_DROPPABLE: tuple[type[Event], ...] = (AudioChunk, PartialTranscript)


@dataclass(frozen=True, slots=True)
class ControlFrame:
    """A frame that jumps the queue. Not an event: never serialised, never dropped."""


@dataclass(frozen=True, slots=True)
class Flush(ControlFrame):
    """Emit what is pending now. ``stream_id=None`` flushes every open stream.

    ``token`` identifies one flush request so the graph can tell when it reached the end.
    """

    stream_id: str | None = None
    token: int = 0


@dataclass(frozen=True, slots=True)
class Stop(ControlFrame):
    """Shut the consumer down after forwarding this frame. Sent by the graph once
    every stream has ended (graceful stop); never used for per-stream ends."""


Item = Event | ControlFrame


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    """How to build an edge: capacity in items and overflow policy."""

    maxsize: int = 64
    overflow: Overflow = "block"

    def __post_init__(self) -> None:
        if self.maxsize < 1:
            raise ValueError(f"EdgeSpec.maxsize must be >= 1, got {self.maxsize}")
        if self.overflow not in ("block", "drop_oldest"):
            raise ValueError(f"EdgeSpec.overflow must be 'block' or 'drop_oldest', got {self.overflow!r}")


class Edge:
    """A bounded single-consumer queue of items. See the module docstring for policies."""

    def __init__(
        self,
        name: str,
        spec: EdgeSpec = EdgeSpec(),
        *,
        droppable: tuple[type[Event], ...] = DEFAULT_DROPPABLE,
    ):
        self.name = name
        self.spec = spec
        self.droppable = droppable
        self._items: collections.deque[Event] = collections.deque()
        self._control: collections.deque[ControlFrame] = collections.deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._dropped: dict[str, int] = {}  # stream_id -> dropped so far
        self._unreported: dict[str, tuple[int, int]] = {}  # stream_id -> (sample, rate) of last drop

    # ------------------------------------------------------------------ observers

    def __len__(self) -> int:
        return len(self._items)

    def dropped(self, stream_id: str | None = None) -> int:
        """Items dropped so far, for one stream or all."""
        if stream_id is None:
            return sum(self._dropped.values())
        return self._dropped.get(stream_id, 0)

    # ------------------------------------------------------------------ producer side

    async def put(self, item: Item) -> None:
        if isinstance(item, ControlFrame):
            self.put_control(item)
            return
        while len(self._items) >= self.spec.maxsize:
            if self.spec.overflow == "drop_oldest" and self._drop_one():
                break
            self._writable.clear()
            await self._writable.wait()
        self._items.append(item)
        self._readable.set()

    def put_nowait(self, item: Event) -> bool:
        """Non-blocking put for callbacks. Returns False if a ``block`` edge is full
        (the item is not queued); a ``drop_oldest`` edge drops to make room."""
        if len(self._items) >= self.spec.maxsize:
            if not (self.spec.overflow == "drop_oldest" and self._drop_one()):
                return False
        self._items.append(item)
        self._readable.set()
        return True

    def put_control(self, frame: ControlFrame) -> None:
        self._control.append(frame)
        self._readable.set()

    def _drop_one(self) -> bool:
        for i, old in enumerate(self._items):
            if isinstance(old, self.droppable):
                del self._items[i]
                sid = old.stream_id
                self._dropped[sid] = self._dropped.get(sid, 0) + 1
                self._unreported[sid] = (old.sample, old.sample_rate_hz)
                self._readable.set()
                return True
        return False

    def discard(self, pred: Callable[[Event], bool]) -> list[Event]:
        """Remove (and return) the queued data items for which ``pred`` is true."""
        kept = collections.deque(x for x in self._items if not pred(x))
        gone = [x for x in self._items if pred(x)]
        self._items = kept
        if len(self._items) < self.spec.maxsize:
            self._writable.set()
        return gone

    # ------------------------------------------------------------------ consumer side

    async def get(self) -> Item:
        """Next item: control frames first, then a pending overflow report, then data."""
        while True:
            if self._control:
                return self._control.popleft()
            if self._unreported:
                sid = next(iter(self._unreported))
                sample, rate = self._unreported.pop(sid)
                return QueueOverflow(sid, sample, sample_rate_hz=rate, edge=self.name, dropped_total=self._dropped[sid])
            if self._items:
                item = self._items.popleft()
                if len(self._items) < self.spec.maxsize:
                    self._writable.set()
                return item
            self._readable.clear()
            await self._readable.wait()

    def __repr__(self) -> str:
        return f"Edge({self.name!r}, {self.spec.maxsize}, {self.spec.overflow!r}, len={len(self._items)})"
