"""Microphone source: a PortAudio input stream through sounddevice.

The PortAudio callback runs on PortAudio's thread and does one thing: it copies
the block and hands it to the event loop with ``loop.call_soon_threadsafe``.
On the loop, blocks go into a bounded queue (``queue_ms`` of audio) whose policy
is drop-oldest with a counter, so capture never waits for the graph. Offsets are
capture time: a dropped block leaves a gap in ``sample`` (the resampler fills it
with silence), so later audio keeps its true time.

Counters: ``input_overflows`` (blocks PortAudio flagged ``input_overflow``: the
device lost samples before we saw them) and ``dropped_blocks`` (blocks dropped by
our queue). Both surface in the stream when they move: ``QueueOverflow(edge=
"mic:<id>")`` for drops, a non-fatal ``ErrorEvent(code="input_overflow")`` for
device overflows; they are also logged at stop.

Devices are chosen by index or by (case-insensitive) substring of their name;
an unknown or output-only device raises :class:`~stream.errors.DeviceNotFoundError`
listing the available input devices. :func:`list_devices` serves the CLI's
``devices`` command.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, DeviceNotFoundError, SourceError
from ..events import AudioChunk, ErrorEvent, QueueOverflow, SampleFormat
from ..queues import EdgeSpec
from .base import Emit, Source

__all__ = ["InputDevice", "list_devices", "format_devices", "resolve_device", "MicSource"]

log = logging.getLogger("stream.sources.mic")

# One captured block, (frames, channels), in the stream's dtype.
_Block = npt.NDArray[np.int16] | npt.NDArray[np.float32]


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except OSError as exc:  # PortAudio shared library missing
        raise ConfigError(f"microphone input needs PortAudio (apt install libportaudio2): {exc}") from exc
    return sd


class InputDevice(NamedTuple):
    index: int  # type: ignore[assignment]  # the field shadows tuple.index(), as it always has
    name: str
    max_input_channels: int
    default_samplerate_hz: int
    hostapi: str
    is_default: bool


def list_devices() -> list[InputDevice]:
    """Every device with at least one input channel."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise ConfigError(f"cannot list audio devices: {exc}") from exc
    out = []
    for d in devices:
        if d["max_input_channels"] > 0:
            out.append(
                InputDevice(
                    int(d["index"]),
                    str(d["name"]),
                    int(d["max_input_channels"]),
                    int(d["default_samplerate"]),
                    str(hostapis[d["hostapi"]]["name"]),
                    int(d["index"]) == default_in,
                )
            )
    return out


def format_devices(devices: list[InputDevice] | None = None) -> str:
    devices = list_devices() if devices is None else devices
    if not devices:
        return "no audio input devices found"
    return "\n".join(
        f"{'*' if d.is_default else ' '} {d.index:3d}  {d.name}  ({d.hostapi}, {d.max_input_channels} in, {d.default_samplerate_hz} Hz)"
        for d in devices
    )


def resolve_device(device: int | str | None) -> InputDevice:
    """The input device for an index, a name substring, or None (the default input)."""
    devices = list_devices()
    available = "available input devices:\n" + format_devices(devices) if devices else "no audio input devices found"
    if device is None:
        for d in devices:
            if d.is_default:
                return d
        if devices:
            return devices[0]
        raise DeviceNotFoundError(f"no default input device; {available}")
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    if isinstance(device, int):
        for d in devices:
            if d.index == device:
                return d
        raise DeviceNotFoundError(f"no input device with index {device}; {available}")
    matches = [d for d in devices if device.lower() in d.name.lower()]
    exact = [d for d in matches if d.name.lower() == device.lower()]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceNotFoundError(f"no input device matching {device!r}; {available}")
    names = ", ".join(f"{d.index}: {d.name}" for d in matches)
    raise DeviceNotFoundError(f"input device {device!r} is ambiguous ({names}); give its index")


class MicSource(Source):
    """Capture from a PortAudio input device.

    ``sample_rate_hz=None`` asks for 16 kHz and falls back to the device's default
    rate if the device refuses (the resampler takes care of the rest).
    ``dtype`` ``"int16"`` (default; ``AudioChunk.sample_format="s16"``) or ``"float32"``.
    ``max_duration_ms`` ends the stream after that much audio (tests, timed recordings).
    """

    realtime = True

    def __init__(
        self,
        device: int | str | None = None,
        *,
        stream_id: str = "mic",
        sample_rate_hz: int | None = None,
        channels: int = 1,
        dtype: str = "int16",
        block_ms: int = 20,
        queue_ms: int = 2000,
        max_duration_ms: int | None = None,
        capture_edge: EdgeSpec | None = None,
    ):
        super().__init__(stream_id, capture_edge=capture_edge)
        if dtype not in ("int16", "float32"):
            raise ConfigError(f"MicSource dtype must be 'int16' or 'float32', got {dtype!r}")
        if block_ms <= 0 or queue_ms < block_ms:
            raise ConfigError(f"MicSource needs 0 < block_ms <= queue_ms, got block_ms={block_ms}, queue_ms={queue_ms}")
        self.device = device
        self.requested_rate_hz = sample_rate_hz
        self.channels = channels
        self.dtype = dtype
        self.block_ms = block_ms
        self.queue_ms = queue_ms
        self.max_duration_ms = max_duration_ms
        self.input_overflows = 0
        self.dropped_blocks = 0
        self.device_info: InputDevice | None = None
        self._rate: int | None = None
        self._stream: Any = None
        self._queue: collections.deque[tuple[int, _Block]] = collections.deque()
        self._max_blocks = 1
        self._captured = 0  # frames captured so far (including dropped blocks)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def sample_rate_hz(self) -> int:
        if self._rate is None:
            raise ConfigError("MicSource: rate unknown before start()")
        return self._rate

    async def start(self) -> None:
        sd = _sounddevice()
        dev = resolve_device(self.device)
        self.device_info = dev
        if self.channels > dev.max_input_channels:
            raise ConfigError(
                f"device {dev.name!r} has {dev.max_input_channels} input channel(s), asked for {self.channels}"
            )
        rate = self.requested_rate_hz or 16_000
        try:
            sd.check_input_settings(device=dev.index, channels=self.channels, dtype=self.dtype, samplerate=rate)
        except (sd.PortAudioError, ValueError) as exc:
            if self.requested_rate_hz is not None:
                raise ConfigError(
                    f"device {dev.name!r} refuses {rate} Hz / {self.channels} ch / {self.dtype}: {exc}"
                ) from exc
            rate = dev.default_samplerate_hz
        self._rate = rate
        block = max(1, rate * self.block_ms // 1000)
        self._max_blocks = max(1, self.queue_ms // self.block_ms)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            self._stream = sd.InputStream(
                device=dev.index,
                channels=self.channels,
                samplerate=rate,
                dtype=self.dtype,
                blocksize=block,
                callback=self._callback,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            raise ConfigError(f"cannot open input device {dev.index} {dev.name!r}: {exc}") from exc

    # PortAudio thread: copy and hand over, nothing else.
    def _callback(self, indata: _Block, frames: int, time: Any, status: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._enqueue, indata.copy(), bool(status.input_overflow))
        except RuntimeError:  # loop closed while the device was still running
            pass

    # Event loop thread.
    def _enqueue(self, block: _Block, overflow: bool) -> None:
        if overflow:
            self.input_overflows += 1
        if self.max_duration_ms is not None and self._captured >= self._limit_frames():
            return
        if len(self._queue) >= self._max_blocks:
            self._queue.popleft()
            self.dropped_blocks += 1
        self._queue.append((self._captured, block))
        self._captured += block.shape[0]
        assert self._wake is not None
        self._wake.set()

    def _limit_frames(self) -> int:
        assert self._rate is not None and self.max_duration_ms is not None
        return self._rate * self.max_duration_ms // 1000

    def request_stop(self) -> None:
        super().request_stop()
        if self._wake is not None:
            self._wake.set()

    async def run(self, emit: Emit) -> None:
        assert self._wake is not None and self._rate is not None
        limit = self._limit_frames() if self.max_duration_ms is not None else None
        fmt: SampleFormat = "s16" if self.dtype == "int16" else "f32"
        reported = (0, 0)
        while True:
            if (self.dropped_blocks, self.input_overflows) != reported:
                await self._report(emit, reported)
                reported = (self.dropped_blocks, self.input_overflows)
            while self._queue:
                offset, block = self._queue.popleft()
                if limit is not None and offset + block.shape[0] > limit:
                    block = block[: max(0, limit - offset)]
                if block.shape[0]:
                    samples = block[:, 0] if block.shape[1] == 1 else block
                    await emit(
                        AudioChunk(
                            self.stream_id,
                            offset,
                            samples=samples,
                            sample_rate_hz=self._rate,
                            sample_format=fmt,
                            channels=self.channels,
                        )
                    )
                if limit is not None and offset + block.shape[0] >= limit:
                    return
            if self.stop_requested:
                return
            if self._stream is not None and not self._stream.active:
                raise SourceError(
                    f"input device {self.device_info.name if self.device_info else self.device!r} stopped"
                )
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def _report(self, emit: Emit, reported: tuple[int, int]) -> None:
        """Surface the counters in the stream: our drops as QueueOverflow, device overflows as a
        non-fatal ErrorEvent (the device lost samples; their number is unknown)."""
        at = self._queue[0][0] if self._queue else self._captured
        rate = self.sample_rate_hz
        if self.dropped_blocks != reported[0]:
            await emit(
                QueueOverflow(
                    self.stream_id,
                    at,
                    sample_rate_hz=rate,
                    edge=f"mic:{self.stream_id}",
                    dropped_total=self.dropped_blocks,
                )
            )
        if self.input_overflows != reported[1]:
            await emit(
                ErrorEvent(
                    self.stream_id,
                    at,
                    sample_rate_hz=rate,
                    code="input_overflow",
                    fatal=False,
                    message=f"input device overflowed: samples lost ({self.input_overflows} time(s) so far)",
                )
            )

    async def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(_close_stream, stream)
            if self.input_overflows or self.dropped_blocks:
                log.warning(
                    "mic %r: %d input overflow(s), %d block(s) dropped",
                    self.stream_id,
                    self.input_overflows,
                    self.dropped_blocks,
                )


def _close_stream(stream: Any) -> None:
    try:
        stream.stop()
    finally:
        stream.close()
