"""The source contract: produce one stream's audio chunks, in stream order.

A source owns one ``stream_id``. The graph calls ``await start()`` (open the
file or device; raise :class:`~stream.errors.ConfigError` with the offending
value), then runs ``await run(emit)`` in its own task, then ``await stop()``.
``run`` calls ``await emit(chunk)`` for each :class:`~stream.events.AudioChunk`
at the source's native rate and channel count (``samples`` shaped ``(n,)`` or
``(n, channels)``, ``sample`` = offset of its first frame, from 0, increasing;
a gap means lost audio and is filled with silence by the resampler), and returns
when the input is exhausted or :meth:`request_stop` was called. A source may
also emit its own reports (``QueueOverflow``, a non-fatal ``ErrorEvent``) for its
stream; it never emits ``EndOfStream``.
The graph then sends the stream's :class:`~stream.events.EndOfStream`.

A ``realtime`` source (microphone, paced file) feeds a ``drop_oldest`` capture
edge, so a slow graph never stalls it (drops are counted and surfaced as
``QueueOverflow`` events); a fast file source feeds a ``block`` edge, so reading
simply waits for the graph (no drops).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..events import Event
from ..queues import EdgeSpec

__all__ = ["Emit", "Source"]

Emit = Callable[[Event], Awaitable[None]]  # AudioChunk, or the source's own reports


class Source:
    """Base class of sources. Subclasses implement ``run`` and usually ``start``/``stop``."""

    realtime: bool = False

    def __init__(self, stream_id: str, *, capture_edge: EdgeSpec | None = None):
        self.stream_id = stream_id
        self._stop_requested = False
        self._capture_edge = capture_edge

    @property
    def capture_edge(self) -> EdgeSpec:
        """The edge between this source and the graph (see module docstring)."""
        if self._capture_edge is not None:
            return self._capture_edge
        return EdgeSpec(256, "drop_oldest") if self.realtime else EdgeSpec(8, "block")

    @property
    def sample_rate_hz(self) -> int:
        """Native rate of the chunks this source emits (known after ``start``)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Open the input. Raise ConfigError for a bad path, format or device."""

    async def run(self, emit: Emit) -> None:
        raise NotImplementedError

    def request_stop(self) -> None:
        """Ask ``run`` to return soon (graceful stop: the stream still ends with EOS)."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    async def stop(self) -> None:
        """Release the input. Called once, after ``run`` ended or was cancelled."""
