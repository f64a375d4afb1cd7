"""The WebSocket server on a real loopback socket: protocol, page, auth, limits, concurrency."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import jsonschema
import numpy as np
import pytest
import websockets
from websockets.asyncio.client import connect

from speechstream.net.protocol import Limits, encode_audio
from speechstream.net.ws import CaptionServer, ServerConfig
from stream.events import json_schema
from stream.resample import Resample
from tests.integration.netkit import (
    EnergyCaptioner,
    SpeakerAwareCaptioner,
    assert_stream_well_formed,
    read_until_closed,
    send_start,
    sine,
    stream_audio,
)

pytestmark = pytest.mark.timeout(60)


def _server(**cfg) -> CaptionServer:
    nodes = cfg.pop("nodes", None) or [Resample(), EnergyCaptioner()]
    return CaptionServer(nodes, ServerConfig(port=0, **cfg))


async def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    def fetch():
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    return await asyncio.to_thread(fetch)


@pytest.mark.parametrize("rate, fmt", [(48000, "s16"), (16000, "f32"), (44100, "s16")])
async def test_roundtrip_events_follow_schema(rate, fmt):
    async with _server() as srv:
        s = await stream_audio(srv.url, sine(2.5, rate, amp=0.5), rate, fmt=fmt)
    assert s.close_code == 1000
    assert s.ready["stream_id"].startswith("ws-") and s.ready["sample_rate_hz"] == rate
    assert_stream_well_formed(s)
    validator = jsonschema.Draft202012Validator(json_schema())
    for e in s.events:
        validator.validate(e)
    # 2.5 s of a 0.5-amplitude sine: three segments of RMS 0.354, times in 16 kHz samples.
    assert [f["text"] for f in s.finals] == ["seg0 rms35", "seg1 rms35", "seg2 rms35"]
    assert [(f["sample"], f["end_sample"]) for f in s.finals] == [(0, 16000), (16000, 32000), (32000, 40000)]
    assert s.events[-1]["sample"] == 40000
    assert s.of("partial_transcript")
    assert srv.active_streams == ()


async def test_page_and_static_files_are_served():
    async with _server() as srv:
        status, headers, body = await _get(srv.http_url)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b"app.js" in body and b"Download SRT" in body
        for name, ctype in [
            ("app.js", "text/javascript"),
            ("capture-worklet.js", "text/javascript"),
            ("resampler.js", "text/javascript"),
            ("style.css", "text/css"),
        ]:
            status, headers, _ = await _get(srv.http_url + name)
            assert status == 200 and headers["Content-Type"].startswith(ctype), name
        status, _, body = await _get(srv.http_url + "events.schema.json")
        assert status == 200 and json.loads(body)["title"] == "speechstream event"
        for bad in ["__init__.py", "..%2Fnet%2Fserve.py", "../net/serve.py", "nope.js", ".hidden.js"]:
            status, _, _ = await _get(srv.http_url + bad)
            assert status == 404, bad


async def test_binds_loopback_by_default():
    assert ServerConfig().host == "127.0.0.1"
    async with _server() as srv:
        assert srv._server.sockets[0].getsockname()[0] == "127.0.0.1"


async def test_token_auth():
    async with _server(token="s3cret") as srv:
        with pytest.raises(websockets.InvalidStatus) as err:
            async with connect(srv.url):
                pass
        assert err.value.response.status_code == 401
        with pytest.raises(websockets.InvalidStatus):
            async with connect(srv.url + "?token=wrong"):
                pass
        s = await stream_audio(srv.url + "?token=s3cret", sine(0.5, 16000), 16000)
        assert s.close_code == 1000 and s.finals
        s = await stream_audio(srv.url, sine(0.5, 16000), 16000, additional_headers={"Authorization": "Bearer s3cret"})
        assert s.close_code == 1000 and s.finals
        assert srv.stats["rejected"] == 2


async def test_max_connections():
    async with _server(max_connections=1) as srv:
        async with connect(srv.url) as ws1:
            await ws1.send(json.dumps({"type": "start", "sample_rate_hz": 16000}))
            assert json.loads(await ws1.recv())["type"] == "ready"
            with pytest.raises(websockets.InvalidStatus) as err:
                async with connect(srv.url):
                    pass
            assert err.value.response.status_code == 503


async def test_malformed_frames_are_skipped_with_error_events():
    async with _server(limits=Limits(max_frame_bytes=8192)) as srv:
        async with connect(srv.url, max_size=None) as ws:
            await send_start(ws, format="f32")
            good = encode_audio(sine(0.1, 16000, 0.5), "f32")  # 6400 bytes
            await ws.send(good)
            await ws.send(b"\x00\x01\x02")  # not a whole float32
            await ws.send(np.array([0.1, np.nan], dtype="<f4").tobytes())
            await ws.send((np.arange(100, dtype="<i2") * 300).tobytes())  # int16 bytes as float32
            await ws.send(b"\x00" * 8196)  # over max_frame_bytes
            await ws.send("{not json")
            await ws.send(json.dumps({"type": "dance"}))
            await ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000}))  # twice
            await ws.send(good)
            await ws.send(json.dumps({"type": "end"}))
            events = await read_until_closed(ws)
            assert ws.close_code == 1000
        errors = [e for e in events if e["type"] == "error"]
        assert [e["code"] for e in errors] == [
            "bad_frame",
            "bad_frame",
            "bad_frame",
            "oversize",
            "bad_json",
            "bad_control",
            "bad_control",
        ]
        assert not any(e["fatal"] for e in errors)
        finals = [e for e in events if e["type"] == "final_transcript"]
        assert finals[-1]["end_sample"] == 3200  # both good frames, nothing else, reached the pipeline
        assert srv.stats["protocol_errors"] == 7


async def test_frame_beyond_transport_limit_closes_cleanly():
    async with _server(limits=Limits(max_frame_bytes=1024)) as srv:
        async with connect(srv.url, max_size=None) as ws:
            await send_start(ws)
            await ws.send(b"\x00" * 20_000)  # above 4 x max_frame_bytes: the WebSocket layer refuses it
            with pytest.raises(websockets.ConnectionClosed):
                for _ in range(10):
                    await ws.recv()
            assert ws.close_code == 1009
        s = await stream_audio(srv.url, sine(0.5, 16000), 16000)  # the server still serves
        assert s.close_code == 1000 and s.finals


@pytest.mark.parametrize(
    "first, code",
    [
        (b"\x00\x00", "no_start"),
        ("{oops", "bad_json"),
        ('{"type": "end"}', "no_start"),
        ('{"type": "start", "sample_rate_hz": 5}', "bad_control"),
    ],
)
async def test_bad_first_message_is_fatal_for_that_connection_only(first, code):
    async with _server() as srv:
        async with connect(srv.url) as ws:
            await ws.send(first)
            events = await read_until_closed(ws)
            assert ws.close_code == 1008
        assert events[0]["type"] == "error" and events[0]["code"] == code and events[0]["fatal"]
        s = await stream_audio(srv.url, sine(0.5, 16000), 16000)
        assert s.close_code == 1000


async def test_start_timeout():
    async with _server(start_timeout_s=0.3) as srv:
        async with connect(srv.url) as ws:
            events = await read_until_closed(ws)
            assert ws.close_code == 1008 and events[0]["code"] == "no_start"


async def test_rate_limit_is_back_pressure_nothing_is_dropped():
    lim = Limits(max_realtime_factor=2.0, burst_audio_s=1.0)
    async with _server(limits=lim) as srv:
        s = await stream_audio(srv.url, sine(2.0, 16000), 16000)  # 2 s sent as fast as possible
        assert srv.stats["throttled_s"] > 0.3  # about (2 - 1) / 2 s of not reading
    assert s.close_code == 1000 and not s.of("error")
    assert s.events[-1]["sample"] == 2 * 16000  # EOS: the graph received all of it


async def test_client_stream_id_and_duplicate_refused():
    async with _server() as srv:
        async with connect(srv.url) as ws1:
            ready = await send_start(ws1, stream_id="kitchen")
            assert ready["stream_id"] == "kitchen"
            async with connect(srv.url) as ws2:
                await ws2.send(json.dumps({"type": "start", "sample_rate_hz": 16000, "stream_id": "kitchen"}))
                events = await read_until_closed(ws2)
                assert events[0]["code"] == "stream_id_in_use" and ws2.close_code == 1008


async def test_speaker_settings_reach_nodes():
    cap = SpeakerAwareCaptioner(speaker="spk_0")
    async with _server(nodes=[Resample(), cap]) as srv:
        s = await stream_audio(
            srv.url,
            sine(2.0, 16000),
            16000,
            start_extra={"num_speakers": 2, "names": ["Ann"]},
            controls={10: {"type": "set_speakers", "names": ["Alice"]}},
        )
    assert s.close_code == 1000 and not s.of("error")
    assert cap.speaker_settings[s.ready["stream_id"]] == [(2, ("Ann",)), (None, ("Alice",))]


async def test_speaker_settings_without_a_diarizer_are_a_non_fatal_error():
    async with _server() as srv:  # no node takes speaker settings (serve without --diarize)
        s = await stream_audio(
            srv.url,
            sine(2.0, 16000),
            16000,
            start_extra={"num_speakers": 2},
            controls={10: {"type": "set_speakers", "names": ["Alice"]}},
        )
    errors = s.of("error")
    assert [(e["code"], e["fatal"]) for e in errors] == [("speakers_unsupported", False)] * 2
    assert "--diarize" in errors[0]["message"]
    assert s.close_code == 1000 and len(s.finals) == 2 and s.events[-1]["type"] == "end_of_stream"


async def test_partials_can_be_turned_off():
    async with _server() as srv:
        s = await stream_audio(srv.url, sine(1.5, 16000), 16000, start_extra={"partials": False})
    assert s.finals and not s.of("partial_transcript")


async def test_concurrent_streams_are_isolated():
    amps = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    async with _server() as srv:
        sessions = await asyncio.gather(
            *(stream_audio(srv.url, sine(2.0, 16000, amp), 16000, chunk_ms=20, realtime=True) for amp in amps)
        )
        assert srv.active_streams == ()
    for amp, s in zip(amps, sessions):
        assert_stream_well_formed(s)
        expected = f"rms{round(amp / np.sqrt(2) * 100)}"
        assert [f["text"].split()[1] for f in s.finals] == [expected, expected], (amp, s.finals)
    assert len({s.ready["stream_id"] for s in sessions}) == len(amps)


async def test_server_stop_ends_live_streams_with_their_finals():
    srv = _server()
    await srv.start()
    async with connect(srv.url) as ws:
        await send_start(ws)
        await ws.send(encode_audio(sine(0.5, 16000)))
        await asyncio.sleep(0.2)
        await srv.stop()
        events = await read_until_closed(ws)
        assert ws.close_code == 1001
    assert events[-1]["type"] == "end_of_stream"
    assert any(e["type"] == "final_transcript" for e in events)


async def test_offset_header_drops_repeated_frames_and_fills_lost_ones():
    from speechstream.net.protocol import with_offset_header

    x = sine(1.0, 16000, 0.5)
    async with _server() as srv:
        async with connect(srv.url) as ws:
            await send_start(ws, offset_header=True)
            for k, pos in enumerate(range(0, 16000, 320)):
                frame = with_offset_header(pos, encode_audio(x[pos : pos + 320]))
                if k == 10:
                    continue  # lost: filled with 320 samples of silence
                await ws.send(frame)
                if k % 7 == 0:
                    await ws.send(frame)  # redelivered: dropped
            await ws.send(json.dumps({"type": "end"}))
            events = await read_until_closed(ws)
    finals = [e for e in events if e["type"] == "final_transcript"]
    assert [(f["sample"], f["end_sample"]) for f in finals] == [(0, 16000)]
    assert not [e for e in events if e["type"] == "error"]


async def test_offset_jump_is_reported_to_the_client_as_audio_lost_with_its_span():
    """Issue 21: a jump in the offset header reaches the client as one ``audio_lost`` event with the
    exact span of the hole, in order: after the audio before it, before the final that covers it."""
    from speechstream.net.protocol import with_offset_header

    x = sine(1.0, 16000, 0.5)
    lost = range(5 * 320, 8 * 320)  # frames 5, 6, 7 never sent
    async with _server() as srv:
        async with connect(srv.url) as ws:
            await send_start(ws, offset_header=True)
            for pos in range(0, 16000, 320):
                if pos not in lost:
                    await ws.send(with_offset_header(pos, encode_audio(x[pos : pos + 320])))
            await ws.send(json.dumps({"type": "end"}))
            events = await read_until_closed(ws)
        assert srv.stats["lost_samples"] == 960 and srv.stats["lost_spans"] == 1
    gaps = [e for e in events if e["type"] == "audio_lost"]
    assert [(e["sample"], e["end_sample"]) for e in gaps] == [(1600, 2560)], [e["type"] for e in events]
    assert gaps[0]["time_s"] == pytest.approx(0.1) and gaps[0]["end_s"] == pytest.approx(0.16)
    assert "offsets 1600 to 2560 at 16000 Hz" in gaps[0]["message"]
    types = [e["type"] for e in events]
    assert types.index("audio_lost") < types.index("final_transcript")
    assert [(f["sample"], f["end_sample"]) for f in events if f["type"] == "final_transcript"] == [(0, 16000)]
    assert not [e for e in events if e["type"] == "error"]


async def test_real_recognizer_behind_the_server(tmp_path):
    """The server with the project's Recognizer (tiny random-init wav2vec2 CTC model): two concurrent
    clients each get a well-formed, schema-valid event stream of their own."""
    from stream.recognizer import Recognizer, RecognizerConfig
    from stream.vad_node import VadNode
    from tests import hf_tiny

    model = hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path / "tiny")
    rec = Recognizer(str(model), RecognizerConfig(chunk_ms=320, left_context_ms=1280))
    validator = jsonschema.Draft202012Validator(json_schema())
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32)  # random model: any audio will do
    async with _server(nodes=[Resample(), VadNode.create("none"), rec]) as srv:
        sessions = await asyncio.gather(*(stream_audio(srv.url, noise, 16000) for _ in range(2)))
    for s in sessions:
        assert s.close_code == 1000
        assert_stream_well_formed(s)
        for e in s.events:
            validator.validate(e)
        assert s.finals and not s.of("error")
        assert s.events[-1]["sample"] == 32000


@pytest.mark.slow  # the online diarizer costs about 1 s of CPU per second of audio here
async def test_diarization_through_the_server():
    """``serve --diarize`` nodes (no model): two voices of examples/hello.wav give two speakers' turns."""
    import soundfile as sf

    from speechstream.net.serve import ServeOptions, build_nodes

    nodes, _ = build_nodes(ServeOptions(model="none", diarize=True))
    x, rate = sf.read("examples/hello.wav", dtype="float32", frames=16000 * 9)  # en-us, then en-us+f3
    async with _server(nodes=nodes) as srv:
        s = await stream_audio(srv.url, x, rate, chunk_ms=100)
    assert s.close_code == 1000 and not s.of("error")
    turns = s.of("speaker_turn")
    assert len({t["speaker"] for t in turns}) == 2
    first = {t["speaker"]: t["sample"] for t in reversed(turns)}
    assert sorted(first.values())[1] > 4 * 16000  # the second voice starts at 4.8 s


def test_serve_max_batch_reaches_the_recognizer(tmp_path):
    """``serve --max-batch N``: the recogniser's cross-stream batch limit (1 turns batching off)."""
    from speechstream.net.serve import ServeOptions, build_nodes
    from stream.recognizer import Recognizer
    from tests import hf_tiny

    model = hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path / "tiny")
    for n in (1, 3):
        nodes, _ = build_nodes(ServeOptions.from_flat(model=str(model), max_batch=n))
        (rec,) = [x for x in nodes if isinstance(x, Recognizer)]
        assert rec.config.max_batch == n
    nodes, _ = build_nodes(ServeOptions(model=str(model)))
    assert [x for x in nodes if isinstance(x, Recognizer)][0].config.max_batch == 8
