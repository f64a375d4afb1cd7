"""Audio file source: any rate and channel count, in the formats libsndfile reads.

Formats read (:data:`READ_FORMATS`): WAV (and RF64/W64), FLAC, Ogg Vorbis and Opus, MP3
(MPEG-1/2 layer I-III), AIFF, AU, CAF and libsndfile's other formats; not AAC/M4A, WMA or
video containers (convert those first, e.g. ``ffmpeg -i in.m4a out.flac``).

Decoder noise: libsndfile's bundled mpg123 writes diagnostics straight to file descriptor 2
from C (dozens of ``[src/libmpg123/layer3.c...] error: part2_3_length ...`` lines for an
ordinary ffmpeg/LAME MP3, whose audio decodes correctly all the same). While an MP3 is opened
or read, :func:`quiet_decoder` points fd 2 at a temporary file, then writes back everything in
it that is not an mpg123 line, so nothing another thread wrote in that moment is lost.

The file is read block by block (``block_ms``), never loaded whole, so an hour
of audio costs one block of memory. Reads run in a worker thread. Either paced
in real time (``realtime=True``: a block is emitted when its audio would have
been captured) or as fast as the graph takes it, with a tqdm progress bar on
stderr (``progress=False`` to disable).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt
import soundfile as sf

from ..errors import SourceError, SourceNotFoundError, UnreadableAudioError
from ..events import AudioChunk
from ..queues import EdgeSpec
from .base import Emit, Source

__all__ = ["FileSource", "probe", "quiet_decoder", "READ_FORMATS"]

READ_FORMATS = "wav, flac, ogg (Vorbis, Opus), mp3, aiff, au, caf and the other formats libsndfile reads"

# What libmpg123 prints: "[src/libmpg123/layer3.c:INT123_do_layer3():1774] error: ..." and
# the like ("Note: ...", "Warning: ..."), one line each.
_DECODER_NOISE = re.compile(rb"^\[[^\]]*mpg123[^\]]*\]|^(Note|Warning|error): .*mpg123", re.IGNORECASE)
_FD2_LOCK = threading.Lock()
_held: list[IO[bytes]] = []  # one temporary file for the process, reused (a new one per read costs more than the read)


@contextlib.contextmanager
def quiet_decoder(active: bool = True) -> Iterator[None]:
    """Keep C decoders' diagnostics off the terminal: fd 2 goes to a temporary file meanwhile,
    and what in it is not decoder noise is written back to fd 2 afterwards."""
    if not active:
        yield
        return
    with _FD2_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no fd 2 to speak of: nothing to hide
            yield
            return
        if not _held:
            _held.append(tempfile.TemporaryFile())
        held = _held[0]
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            size = os.lseek(held.fileno(), 0, os.SEEK_CUR)
            if size:
                captured = os.pread(held.fileno(), size, 0)
                os.ftruncate(held.fileno(), 0)
                os.lseek(held.fileno(), 0, os.SEEK_SET)
                kept = b"".join(line for line in captured.splitlines(keepends=True) if not _DECODER_NOISE.search(line))
                if kept:
                    with contextlib.suppress(OSError):
                        os.write(2, kept)


def _noisy(info_format: str) -> bool:
    return info_format.upper() in ("MP3", "MPEG")


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
        hint = f" (formats read: {READ_FORMATS})" if "not recognised" in str(exc).lower() else ""
        raise UnreadableAudioError(f"cannot read audio file {p}: {exc}{hint}") from exc


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
        self._quiet = False  # MP3: keep mpg123's diagnostics off stderr

    @property
    def sample_rate_hz(self) -> int:
        if self._file is None:
            return int(probe(self.path).samplerate)
        return int(self._file.samplerate)

    async def start(self) -> None:
        self._quiet = _noisy(probe(self.path).format)
        try:
            with quiet_decoder(self._quiet):
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
            bar = tqdm(
                total=total,
                unit="s",
                unit_scale=False,
                desc=self.path.name,
                file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]",
                leave=False,
            )
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pos = 0
        try:
            while not self.stop_requested:
                try:
                    data = await asyncio.to_thread(self._read, f, block)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise SourceError(f"reading {self.path} failed at frame {pos}: {exc}") from exc
                n = data.shape[0]
                if n == 0:
                    return
                samples = data[:, 0].copy() if data.shape[1] == 1 else data
                await emit(
                    AudioChunk(self.stream_id, pos, samples=samples, sample_rate_hz=rate, channels=data.shape[1])
                )
                pos += n
                if bar is not None:
                    bar.update(n / rate)
                if self.realtime:
                    await asyncio.sleep(max(0.0, t0 + pos / rate - loop.time()))
        finally:
            if bar is not None:
                bar.close()

    def _read(self, f: sf.SoundFile, block: int) -> npt.NDArray[np.float32]:
        """Up to ``block`` frames as float32 ``(frames, channels)``."""
        with quiet_decoder(self._quiet):
            data: npt.NDArray[np.float32] = f.read(block, "float32", True)
        return data

    async def stop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
