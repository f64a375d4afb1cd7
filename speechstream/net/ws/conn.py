"""What the parts of the WebSocket server share: one connection's bookkeeping and two small helpers."""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection

from stream.queues import ControlFrame, Edge
from stream.sources.push import PushSource

from ..protocol import StartConfig

__all__ = ["Conn", "Wake", "within", "MALLOC_TRIM"]


@dataclass(eq=False)
class Conn:
    """Mutable bookkeeping of one live connection (owned by its handler task)."""

    stream_id: str
    ws: ServerConnection
    cfg: StartConfig
    source: PushSource
    out: Edge
    gone: bool = False  # the socket is closed or abandoned; drop its events
    finishing: bool = False  # "end" (or a fatal error, an idle close): the stream's last events are due
    held: bool = False  # the reader is holding back (rate limit, or a graph that is behind)
    held_until: float = 0.0  # monotonic time it last stopped holding back
    close_code: int = 1000
    close_reason: str = ""
    # for the latency metrics: (16 kHz samples received so far, monotonic time), oldest first
    arrivals: collections.deque[tuple[int, float]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=4096)  # bounded: a VAD-only stream has no finals
    )
    first_audio_t: float | None = None
    partial_seen: bool = False


@dataclass(frozen=True, slots=True)
class Wake(ControlFrame):
    """Jumps a connection's outbound edge to wake its sender (so an abandoned one returns)."""


if sys.version_info >= (3, 11):

    async def within(aw: Any, timeout: float | None) -> Any:
        """``await aw`` with a timeout (None: none). Unlike 3.11's ``wait_for``, a cancellation
        that arrives as ``aw`` completes is never swallowed, so a cancelled reader stops."""
        async with asyncio.timeout(timeout):
            return await aw

else:  # pragma: no cover
    within = asyncio.wait_for


def _find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


MALLOC_TRIM = _find_malloc_trim()  # glibc's malloc_trim, or None
