"""FileSource: formats, rates, channels, blockwise reading, progress bar, clear errors."""

import numpy as np
import pytest
import soundfile as sf
import soxr

from stream.errors import SourceNotFoundError, UnreadableAudioError
from stream.events import AudioChunk, EndOfStream
from stream.graph import Graph
from stream.node import Collect
from stream.resample import Resample, expected_length
from stream.sources.file import FileSource


def tone(rate, seconds, channels):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.25 * np.sin(2 * np.pi * 330 * t)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    "fmt,subtype,rate,channels",
    [
        ("WAV", "PCM_16", 44100, 2),
        ("FLAC", "PCM_24", 48000, 1),
        ("OGG", "VORBIS", 22050, 2),
        ("WAV", "FLOAT", 16000, 3),
    ],
)
async def test_formats_rates_channels(tmp_path, fmt, subtype, rate, channels, capsys):
    x = tone(rate, 1.3, channels)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, x, rate, format=fmt, subtype=subtype)
    raw = Collect("raw")
    sink = Collect()
    src = FileSource(path, block_ms=70, progress=False)
    await Graph([src], [raw, Resample(), sink], bug_policy="raise").run()
    chunks = [e for e in raw.events if isinstance(e, AudioChunk)]
    assert src.stream_id == "a" and all(c.sample_rate_hz == rate and c.channels == channels for c in chunks)
    assert max(c.num_samples for c in chunks) == rate * 70 // 1000  # read block by block
    frames = sf.info(path).frames
    assert sum(c.num_samples for c in chunks) == frames
    out = np.concatenate([e.samples for e in sink.events if isinstance(e, AudioChunk)])
    assert out.shape[0] == expected_length(frames, rate) and sink.events[-1] == EndOfStream("a", out.shape[0])
    if fmt != "OGG":  # lossless: equals the one-shot downmix + resample of the file
        ref = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
        np.testing.assert_allclose(out, soxr.resample(ref, rate, 16000, "HQ"), atol=1e-5)
    assert capsys.readouterr().err == ""  # progress=False: no bar


async def test_progress_bar_on_stderr(tmp_path, capsys):
    path = tmp_path / "p.wav"
    sf.write(path, tone(16000, 0.5, 1), 16000)
    await Graph([FileSource(path, stream_id="p")], [Collect()]).run()
    assert "p.wav" in capsys.readouterr().err


async def test_realtime_source_uses_drop_oldest_capture_edge(tmp_path):
    path = tmp_path / "r.wav"
    sf.write(path, tone(16000, 0.2, 1), 16000)
    assert FileSource(path, realtime=True).capture_edge.overflow == "drop_oldest"
    assert FileSource(path).capture_edge.overflow == "block"
    sink = Collect()
    await Graph([FileSource(path, realtime=True, block_ms=50)], [sink]).run()
    assert sink.events[-1] == EndOfStream("r", 3200)


async def test_missing_file(tmp_path):
    graph = Graph([FileSource(tmp_path / "nope.wav")], [Collect()])
    with pytest.raises(SourceNotFoundError, match="audio file not found: .*nope.wav"):
        await graph.run()


@pytest.mark.parametrize("content", [b"this is not audio at all" * 10, b""])
async def test_unreadable_file(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(UnreadableAudioError, match="cannot read audio file .*bad.wav"):
        await Graph([FileSource(path)], [Collect()]).run()


async def test_directory_is_not_audio(tmp_path):
    with pytest.raises(UnreadableAudioError, match="directory"):
        await Graph([FileSource(tmp_path)], [Collect()]).run()
