"""Raw PCM over a real TCP socket on loopback: single-stream source, multi-stream server, ffmpeg piping."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from speechstream.net.protocol import encode_audio
from speechstream.net.tcp import PcmFramer, TcpPcmServer, TcpPcmSource
from stream.errors import ConfigError
from stream.events import EndOfStream, ErrorEvent, FinalTranscript
from stream.graph import Graph
from stream.node import Collect
from stream.resample import Resample
from tests.integration.netkit import EnergyCaptioner, SpeakerAwareCaptioner, sine

pytestmark = pytest.mark.timeout(60)


def test_framer_cuts_on_sample_boundaries_whatever_the_reads():
    x = sine(0.1, 16000)
    data = encode_audio(x, "s16")
    f = PcmFramer("s16", 320)
    blocks = []
    rng = np.random.default_rng(0)
    pos = 0
    while pos < len(data):
        n = int(rng.integers(1, 700))
        blocks += f.push(data[pos : pos + n])
        pos += n
    blocks += f.flush()
    y = np.concatenate(blocks)
    assert [len(b) for b in blocks[:-1]] == [320] * (len(blocks) - 1)
    np.testing.assert_allclose(y, x, atol=1 / 32768)


async def _send(port: int, data: bytes, pieces: int = 7) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    step = len(data) // pieces + 1
    try:
        for i in range(0, len(data), step):
            writer.write(data[i : i + step])
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.close()
        await writer.wait_closed()
    except ConnectionError:  # the receiver hung up on bad audio
        writer.close()


async def test_single_stream_source_over_a_real_socket():
    src = TcpPcmSource(0, sample_rate_hz=48000, sample_format="f32", stream_id="pipe")
    out = Collect(keep_audio=False)
    graph = Graph(sources=[src], nodes=[Resample(), EnergyCaptioner(), out])
    await graph.start()
    await _send(src.bound_port, encode_audio(sine(2.25, 48000, 0.5), "f32"))
    await graph.run(timeout_s=20)
    finals = [e for e in out.events if isinstance(e, FinalTranscript)]
    assert [f.text for f in finals] == ["seg0 rms35", "seg1 rms35", "seg2 rms35"]
    assert finals[-1].end_sample == 36000
    assert isinstance(out.events[-1], EndOfStream) and out.events[-1].sample == 36000


async def test_single_stream_source_bad_float_is_a_fatal_error_event():
    src = TcpPcmSource(0, sample_rate_hz=16000, sample_format="f32", stream_id="pipe")
    out = Collect(keep_audio=False)
    graph = Graph(sources=[src], nodes=[Resample(), EnergyCaptioner(), out])
    await graph.start()
    bad = encode_audio(sine(0.5, 16000), "f32") + np.full(400, np.nan, dtype="<f4").tobytes()
    await _send(src.bound_port, bad)
    await graph.run(timeout_s=20)
    errors = [e for e in out.events if isinstance(e, ErrorEvent)]
    assert errors and errors[0].code == "bad_audio" and errors[0].fatal
    assert isinstance(out.events[-1], EndOfStream)


async def test_bind_failure_is_a_config_error():
    first = TcpPcmSource(0)
    await first.start()
    try:
        second = TcpPcmSource(first.bound_port)
        with pytest.raises(ConfigError, match="cannot listen"):
            await second.start()
    finally:
        await first.stop()
    with pytest.raises(ConfigError):
        TcpPcmSource(0, sample_format="u8")  # type: ignore[arg-type]


async def test_server_each_connection_is_its_own_stream():
    out = Collect(keep_audio=False)
    graph = Graph(nodes=[Resample(), EnergyCaptioner(), out])
    await graph.start()
    async with TcpPcmServer(graph, 0, sample_rate_hz=16000, sample_format="s16") as srv:
        odd = encode_audio(sine(1.0, 16000, 0.3), "s16")
        await asyncio.gather(
            _send(srv.bound_port, encode_audio(sine(1.0, 16000, 0.1), "s16")),
            _send(srv.bound_port, encode_audio(sine(1.0, 16000, 0.2), "s16")),
            _send(srv.bound_port, odd + b"\x01"),  # a trailing half sample is dropped, not an error
        )
        await asyncio.wait_for(graph.wait_streams(), 10)
        assert not srv.live
    await graph.stop()
    by_stream: dict[str, list[str]] = {}
    for e in out.events:
        if isinstance(e, FinalTranscript):
            by_stream.setdefault(e.stream_id, []).append(e.text.split()[1])
    assert sorted(v[0] for v in by_stream.values()) == ["rms14", "rms21", "rms7"]
    assert sorted(by_stream) == ["tcp-1", "tcp-2", "tcp-3"]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
async def test_ffmpeg_pipes_into_the_source(tmp_path):
    wav = tmp_path / "in.wav"
    sf.write(wav, sine(1.5, 44100, 0.5), 44100, subtype="PCM_16")
    src = TcpPcmSource(0, sample_rate_hz=16000, sample_format="s16", stream_id="ffmpeg")
    out = Collect(keep_audio=False)
    graph = Graph(sources=[src], nodes=[Resample(), EnergyCaptioner(), out])
    await graph.start()
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-i",
        str(wav),
        "-f",
        "s16le",
        "-ac",
        "1",
        "-ar",
        "16000",
        f"tcp://127.0.0.1:{src.bound_port}",
    ]
    proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    await graph.run(timeout_s=20)
    finals = [e for e in out.events if isinstance(e, FinalTranscript)]
    assert [f.text for f in finals] == ["seg0 rms35", "seg1 rms35"]
    assert abs(finals[-1].end_sample - 24000) <= 32  # ffmpeg's resampler may pad a few samples


async def test_server_bad_stream_gets_an_error_event_and_others_go_on():
    out = Collect(keep_audio=False)
    graph = Graph(nodes=[Resample(), EnergyCaptioner(), out])
    await graph.start()
    async with TcpPcmServer(graph, 0, sample_rate_hz=16000, sample_format="f32") as srv:
        await _send(srv.bound_port, np.full(1600, np.inf, dtype="<f4").tobytes())
        await _send(srv.bound_port, encode_audio(sine(1.0, 16000, 0.5), "f32"))
        await asyncio.wait_for(graph.wait_streams(), 10)
    await graph.stop()
    errors = [e for e in out.events if isinstance(e, ErrorEvent)]
    assert [(e.stream_id, e.code, e.fatal) for e in errors] == [("tcp-1", "bad_audio", True)]
    assert [(e.stream_id, e.text) for e in out.events if isinstance(e, FinalTranscript)] == [("tcp-2", "seg0 rms35")]
    assert srv.errors == [("tcp-1", "bad_frame")]


@pytest.mark.parametrize("takes_speakers", [True, False])
async def test_server_start_line_speaker_settings(takes_speakers):
    """A start line's num_speakers/names reach the node that takes them (the diarizer); without one
    they are a second, non-fatal error line after ``ready``, and the stream runs on."""
    import json

    cap = SpeakerAwareCaptioner() if takes_speakers else EnergyCaptioner()
    out = Collect(keep_audio=False)
    graph = Graph(nodes=[Resample(), cap, out])
    await graph.start()
    try:
        async with TcpPcmServer(graph, 0, sample_rate_hz=16000) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port)
            start = {"type": "start", "sample_rate_hz": 16000, "stream_id": "den", "num_speakers": 2, "names": ["Al"]}
            writer.write((json.dumps(start) + "\n").encode() + encode_audio(sine(1.0, 16000), "s16"))
            writer.write_eof()
            answer = [json.loads(line) for line in (await asyncio.wait_for(reader.read(), 10)).decode().splitlines()]
            writer.close()
            await asyncio.wait_for(graph.wait_streams(), 10)
    finally:
        await graph.stop()
    assert [e.stream_id for e in out.events if isinstance(e, FinalTranscript)] == ["den"]  # it ran either way
    if takes_speakers:
        assert [a["type"] for a in answer] == ["ready"] and cap.speaker_settings == {"den": [(2, ("Al",))]}
    else:
        assert [(a["type"], a.get("code"), a.get("fatal")) for a in answer] == [
            ("ready", None, None),
            ("error", "speakers_unsupported", False),
        ]
        assert srv.errors == [("den", "speakers_unsupported")]
