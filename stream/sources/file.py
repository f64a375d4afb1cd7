"""Audio file source: wav, flac, ogg (anything libsndfile reads), any rate and channel count.

The file is read block by block (``block_ms``), never loaded whole, so an hour
of audio costs one block of memory. Reads run in a worker thread. Either paced
in real time (``realtime=True``: a block is emitted when its audio would have
been captured) or as fast as the graph takes it, with a tqdm progress bar on
stderr (``progress=False`` to disable).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import soundfile as sf

from ..errors import SourceError, SourceNotFoundError, UnreadableAudioError
from ..events import AudioChunk
from ..queues import EdgeSpec
from .base import Emit, Source

__all__ = ["FileSource", "probe"]


def probe(path: str | os.PathLike[str]) -> sf._SoundFileInfo:
    """Rate, channels and length of an audio file; clear errors for missing / unreadable files."""
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"audio file not found: {p}")
    if p.is_dir():
        raise UnreadableAudioError(f"not an audio file (a directory): {p}")
    try:
        return sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise UnreadableAudioError(f"cannot read audio file {p}: {exc}") from exc


class FileSource(Source):
    """Stream one audio file as ``AudioChunk`` blocks at its native rate and channels."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stream_id: str | None = None,
        block_ms: int = 100,
        realtime: bool = False,
        progress: bool = True,
        capture_edge: EdgeSpec | None = None,
    ):
        super().__init__(stream_id or Path(path).stem, capture_edge=capture_edge)
        if block_ms <= 0:
            raise ValueError(f"block_ms must be positive, got {block_ms}")
        self.path = Path(path)
        self.block_ms = block_ms
        self.realtime = realtime
        self.progress = progress
        self._file: sf.SoundFile | None = None

    @property
    def sample_rate_hz(self) -> int:
        if self._file is None:
            return probe(self.path).samplerate
        return int(self._file.samplerate)

    async def start(self) -> None:
        probe(self.path)
        try:
            self._file = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise UnreadableAudioError(f"cannot read audio file {self.path}: {exc}") from exc

    async def run(self, emit: Emit) -> None:
        f = self._file
        assert f is not None, "start() first"
        rate = int(f.samplerate)
        block = max(1, rate * self.block_ms // 1000)
        bar = None
        if self.progress and not self.realtime:
            from tqdm import tqdm

            total = f.frames / rate if f.frames > 0 else None
            bar = tqdm(total=total, unit="s", unit_scale=False, desc=self.path.name, file=sys.stderr,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]",
                       leave=False)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pos = 0
        try:
            while not self.stop_requested:
                try:
                    data = await asyncio.to_thread(f.read, block, "float32", True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise SourceError(f"reading {self.path} failed at frame {pos}: {exc}") from exc
                n = data.shape[0]
                if n == 0:
                    return
                samples = data[:, 0].copy() if data.shape[1] == 1 else data
                await emit(AudioChunk(self.stream_id, pos, samples=samples, sample_rate_hz=rate, channels=data.shape[1]))
                pos += n
                if bar is not None:
                    bar.update(n / rate)
                if self.realtime:
                    await asyncio.sleep(max(0.0, t0 + pos / rate - loop.time()))
        finally:
            if bar is not None:
                bar.close()

    async def stop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
