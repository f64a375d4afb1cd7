"""A source over audio already in memory (tests, examples, synthetic benches)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..events import AudioChunk
from ..queues import EdgeSpec
from .base import Emit, Source

__all__ = ["ArraySource"]


class ArraySource(Source):
    """Emit ``samples`` (``(n,)`` or ``(n, channels)``) in blocks of ``block`` frames.

    ``block`` may be a sequence of sizes (cycled), to test odd chunking.
    ``realtime=True`` paces blocks at the audio rate.
    """

    def __init__(
        self,
        samples: np.ndarray[Any, Any],
        sample_rate_hz: int,
        *,
        stream_id: str = "array",
        block: int | Sequence[int] = 1600,
        realtime: bool = False,
        capture_edge: EdgeSpec | None = None,
    ):
        super().__init__(stream_id, capture_edge=capture_edge)
        self.samples = samples
        self._rate = sample_rate_hz
        self.realtime = realtime
        self.blocks: Sequence[int] = [block] if isinstance(block, int) else list(block)

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    def _sizes(self) -> Iterable[int]:
        while True:
            yield from self.blocks

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pos = 0
        n = self.samples.shape[0]
        for size in self._sizes():
            if pos >= n or self.stop_requested:
                return
            block = np.array(self.samples[pos : pos + size])  # a copy: frames never alias caller memory
            await emit(
                AudioChunk(
                    self.stream_id,
                    pos,
                    samples=block,
                    sample_rate_hz=self._rate,
                    channels=1 if block.ndim == 1 else block.shape[1],
                    sample_format="s16" if block.dtype == np.int16 else "f32",
                )
            )
            pos += block.shape[0]
            if self.realtime:
                await asyncio.sleep(max(0.0, t0 + pos / self._rate - loop.time()))
            else:
                await asyncio.sleep(0)
