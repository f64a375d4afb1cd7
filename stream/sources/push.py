"""A source fed from outside: network handlers push audio in, the graph pulls chunks out.

Every network transport (WebSocket connection, MQTT stream, TCP connection) owns
one :class:`PushSource`.  The transport decodes frames with
:mod:`speechstream.net.protocol` and calls ``await source.feed(samples)``; the graph
runs ``source.run(emit)``, which turns each block into an
:class:`~stream.events.AudioChunk` at the client's declared rate (the pipeline's
resampler brings it to 16 kHz).  ``source.end()`` finishes the stream: the graph
then sends its ``EndOfStream`` behind the audio, so every pending final is
produced.

A transport whose frames carry an offset header feeds them with ``await source.feed_at(samples,
offset, max_gap)``: repeats are dropped, and a jump ahead is reported in order as an
``AudioLost`` event (its span at the sender's rate) just before the silence that stands in for it.
Every transport (WebSocket, MQTT) goes through this one path.

Backpressure: the inbox between the transport and ``run`` holds at most
``inbox_blocks`` blocks; ``feed`` waits while it is full, which stops the
transport reading its socket (TCP flow control reaches the client).  The capture
edge behind ``run`` is ``drop_oldest`` (a real-time source), so a slow graph
drops audio with a counted ``QueueOverflow`` instead of stalling the network.
"""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt

from ..errors import ProtocolError, StreamError
from ..events import AudioChunk, AudioLost, Event
from ..queues import EdgeSpec
from .base import Emit, Source

__all__ = ["PushSource", "align_to_offset"]

_END = None


class PushSource(Source):
    """One network stream's audio, pushed by its transport."""

    realtime = True

    def __init__(
        self,
        stream_id: str,
        sample_rate_hz: int,
        *,
        inbox_blocks: int = 32,
        capture_edge: EdgeSpec | None = None,
    ):
        super().__init__(stream_id, capture_edge=capture_edge)
        self._rate = int(sample_rate_hz)
        self._inbox: asyncio.Queue[npt.NDArray[np.float32] | Event | None] = asyncio.Queue(inbox_blocks)
        self._ended = False
        self._error: StreamError | None = None
        self.samples_fed = 0  # at the client's rate
        self.expected = 0  # next sender offset (offset-header streams)
        self.lost_samples = 0  # filled with silence by ``feed_at``
        self.lost_spans = 0

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    @property
    def inbox_full(self) -> bool:
        """``feed`` would wait (the graph is behind)."""
        return self._inbox.full()

    @property
    def ended(self) -> bool:
        return self._ended

    async def feed(self, samples: npt.NDArray[np.float32]) -> None:
        """Queue one block of mono float32 samples (waits while the inbox is full)."""
        if self._ended:
            return
        if samples.size == 0:
            return
        self.samples_fed += int(samples.shape[0])
        await self._inbox.put(samples)

    async def feed_at(self, samples: npt.NDArray[np.float32], offset: int, max_gap: int) -> AudioLost | None:
        """Feed a block whose first sample is at sender offset ``offset``: a repeated block (or head)
        is dropped; a jump ahead (up to ``max_gap`` samples, else ``ProtocolError("gap")``) is filled
        with silence and reported first as an ``AudioLost`` with its span. Returns that report."""
        if self._ended:
            return None
        before = self.expected
        x, self.expected, gap = align_to_offset(samples, offset, before, max_gap)
        lost = None
        if gap:
            rate = self._rate
            end = before + gap
            self.lost_samples += gap
            self.lost_spans += 1
            message = (
                f"audio lost on the way in: offsets {before} to {end} at {rate} Hz ({gap / rate:.3f} s, "
                f"from {before / rate:.3f} s to {end / rate:.3f} s) never arrived; filled with silence"
            )
            lost = AudioLost(self.stream_id, before, end_sample=end, sample_rate_hz=rate, message=message)
            await self.report(lost)
        await self.feed(x)
        return lost

    async def report(self, event: Event) -> None:
        """Queue a report of this stream (e.g. ``AudioLost``): the graph gets it between the blocks
        fed before and after it. Its times are at this source's rate (the resampler converts them)."""
        if self._ended:
            return
        await self._inbox.put(event)

    def end(self) -> None:
        """No more audio: ``run`` returns after the queued blocks and the stream ends."""
        if self._ended:
            return
        self._ended = True
        try:
            self._inbox.put_nowait(_END)
        except asyncio.QueueFull:
            # run() is behind; it checks ``_ended`` after draining, see below.
            pass

    def discard(self) -> int:
        """End the stream and throw away the blocks not yet taken by ``run`` (nobody will read
        what they would give: the client vanished). Returns the samples discarded."""
        n = 0
        while not self._inbox.empty():
            block = self._inbox.get_nowait()
            if isinstance(block, np.ndarray):  # (not the end marker, nor a queued report)
                n += int(block.shape[0])
        self._ended = False  # end() below queues the end marker into the now empty inbox
        self.end()
        return n

    def fail(self, message: str, code: str = "bad_audio") -> None:
        """End the stream with a fatal error: the graph emits ``ErrorEvent(code, fatal=True)`` then EOS."""
        if self._error is None:
            self._error = StreamError(message, code=code, fatal=True)
        self.end()

    def request_stop(self) -> None:
        super().request_stop()
        self.end()

    async def run(self, emit: Emit) -> None:
        sample = 0
        while True:
            if self._ended and self._inbox.empty():
                break
            block = await self._inbox.get()
            if block is _END:
                break
            if isinstance(block, Event):
                await emit(block)
                continue
            chunk = AudioChunk(self.stream_id, sample, samples=block, sample_rate_hz=self._rate, sample_format="f32")
            sample = chunk.end_sample
            await emit(chunk)
        if self._error is not None:
            raise self._error


def align_to_offset(
    x: npt.NDArray[np.float32], offset: int, expected: int, max_gap: int
) -> tuple[npt.NDArray[np.float32], int, int]:
    """Place a block that starts at ``offset`` into a stream that expects ``expected`` next.

    Returns (samples to feed, new expected offset, samples of silence inserted): a repeated
    block (or its repeated head) is dropped, a gap up to ``max_gap`` samples is filled with
    silence; a larger gap raises ``ProtocolError("gap")``.
    """
    if offset + x.shape[0] <= expected:
        return x[:0], expected, 0  # entirely seen before: a redelivery
    if offset < expected:
        x = x[expected - offset :]
        offset = expected
    gap = offset - expected
    if gap > max_gap:
        raise ProtocolError("gap", f"audio jumps ahead by {gap} samples (at most {max_gap} are filled)", fatal=True)
    if gap:
        x = np.concatenate([np.zeros(gap, np.float32), x])
    return x, expected + x.shape[0], gap
