"""Per-stream languages over MQTT (a real mosquitto) and TCP (loopback), and `eval --language`: the
``start`` message's ``language`` picks each stream's adapter and vocabulary on one loaded MMS-layout model,
as over the WebSocket (tests/integration/test_mms_languages.py, whose model and transformers transcripts
these tests reuse); an unknown code refuses that stream alone with an ``unknown_language`` error event."""

from __future__ import annotations

import asyncio
import json
import os

import numpy as np
import pytest

from speechstream.mqtt import MqttPublisher, MqttSettings, MqttWorker, topic
from speechstream.net.languages import set_stream_language, start_stream
from speechstream.net.protocol import ProtocolError, encode_audio
from speechstream.net.serve import ServeOptions, build_nodes
from speechstream.net.tcp import TcpPcmServer
from stream.events import EndOfStream, ErrorEvent, FinalTranscript
from stream.graph import Graph
from stream.node import Collect
from stream.sources.push import PushSource
from tests.integration.mqtt_broker import MOSQUITTO, Broker
from tests.integration.test_mms_languages import clips, mms  # noqa: F401  (module fixtures)
from tests.integration.test_mqtt import Consumer

pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(120)


def _nodes(mms):
    # one window over each 1.6 s clip: the stream's logits are transformers' forward (see the WS test)
    return build_nodes(
        ServeOptions.from_flat(model=str(mms), vad="none", mode="window", chunk_ms=4000, language="aaa")
    )[0]


# ----------------------------------------------------------------------------- the shared helper


async def test_helper_refuses_an_unknown_language_and_leaves_no_trace(mms):
    nodes = _nodes(mms)
    rec = nodes[-1]
    graph = Graph(nodes=nodes)
    await graph.start()
    try:
        with pytest.raises(ProtocolError) as info:
            await start_stream(graph, PushSource("s1", 16000), "zzz")
        assert info.value.code == "unknown_language" and info.value.fatal
        assert "unknown language 'zzz'" in info.value.message and "available: aaa, bbb" in info.value.message
        assert "s1" not in rec._stream_languages
        # a graph with no recogniser cannot honour a language: refused too, not silently ignored
        with pytest.raises(ProtocolError, match="runs no recogniser"):
            set_stream_language(nodes[:-1], "s2", "aaa")
        # a stream id the graph is already running: 'unavailable', and its language is forgotten
        live = PushSource("s3", 16000)
        await start_stream(graph, live, "bbb")
        assert rec._stream_languages["s3"] == "bbb"
        with pytest.raises(ProtocolError) as info:
            await start_stream(graph, PushSource("s3", 16000), "aaa")
        assert info.value.code == "unavailable"
        live.end()
        await asyncio.wait_for(graph.wait_streams(), 30)
    finally:
        await graph.stop()


# ----------------------------------------------------------------------------- MQTT


@pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs Debian mosquitto")
async def test_mqtt_two_languages_at_once_and_an_unknown_one_refused_alone(mms, clips, tmp_path):
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        settings = MqttSettings(port=broker.port, reconnect_min_s=0.05)
        worker = MqttWorker(_nodes(mms), settings, default_rate_hz=16000)
        # stream -> (clip, language in its start message, expected final)
        plan = {
            "s-bbb": (clips[0][0], "bbb", clips[0][1]["bbb"]),
            "s-default": (clips[1][0], None, clips[1][1]["aaa"]),  # the worker's default language
            "s-zzz": (clips[0][0], "zzz", None),
            "s-aaa": (clips[0][0], "aaa", clips[0][1]["aaa"]),
        }
        async with Consumer(broker.port, "speechstream/#", client_id="lang-consumer") as consumer, worker:
            pub = MqttPublisher(settings, name="clients")
            await pub.start()
            await pub.wait_connected()
            for sid, (_, lang, _) in plan.items():
                start = {"type": "start", "sample_rate_hz": 16000, "format": "s16"} | (
                    {"language": lang} if lang else {}
                )
                pub.publish(topic("speechstream", sid, "control"), json.dumps(start), qos=1)
            step = 320  # 20 ms frames, interleaved: the four streams are live at once
            for pos in range(0, len(clips[0][0]), step):
                for sid, (x, _, _) in plan.items():
                    if pos < len(x):
                        pub.publish(topic("speechstream", sid, "audio"), encode_audio(x[pos : pos + step]), qos=1)
            for sid in plan:
                pub.publish(topic("speechstream", sid, "control"), json.dumps({"type": "end"}), qos=1)
            assert await pub.drain(20)
            await pub.close()
            ends = {f"speechstream/{sid}/transcript" for sid, (_, _, want) in plan.items() if want is not None}
            await consumer.wait_for(
                lambda: (
                    ends <= {t for t, d in consumer.raw if d["type"] == "end_of_stream"}
                    and any(t == "speechstream/s-zzz/error" for t, _ in consumer.raw)
                ),
                60,
            )
            await asyncio.sleep(0.3)  # anything the refused stream's audio could still have caused
            late = worker.ingest.stats["late_frames"]
    finally:
        broker.stop()
    for sid, (_, _, want) in plan.items():
        mine = [d for t, d in consumer.raw if t.startswith(f"speechstream/{sid}/")]
        if want is None:
            continue
        assert [d["text"] for d in mine if d["type"] == "final_transcript"] == [want], sid
        assert not [d for d in mine if d["type"] == "error"], sid
    refused = [d for t, d in consumer.raw if t.startswith("speechstream/s-zzz/")]
    assert [d["type"] for d in refused] == ["error"]  # no transcript, no default-language stream
    assert refused[0]["code"] == "unknown_language" and refused[0]["fatal"]
    assert "available: aaa, bbb" in refused[0]["message"]
    assert late >= len(clips[0][0]) // 320  # its audio was dropped, never opened as a new stream


# ----------------------------------------------------------------------------- TCP


async def _tcp_client(port: int, start: dict | None, x, fmt: str = "s16") -> list[dict]:
    """Send a start line (if any) and the clip, close the sending side; the server's JSON lines."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if start is not None:
            writer.write((json.dumps(start) + "\n").encode())
        data = encode_audio(x, fmt)  # type: ignore[arg-type]
        for i in range(0, len(data), 4096):
            writer.write(data[i : i + 4096])
            await writer.drain()
            await asyncio.sleep(0)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 30)
    except ConnectionError:
        answer = b""
    finally:
        writer.close()
    return [json.loads(line) for line in answer.decode().splitlines()]


async def test_tcp_two_languages_at_once_and_an_unknown_one_refused_alone(mms, clips):
    out = Collect(keep_audio=False)
    refused: list[ErrorEvent] = []
    graph = Graph(nodes=[*_nodes(mms), out])
    await graph.start()
    try:
        async with TcpPcmServer(graph, 0, sample_rate_hz=16000, on_error=refused.append) as srv:
            s16 = {"type": "start", "sample_rate_hz": 16000}
            answers = await asyncio.gather(
                _tcp_client(srv.bound_port, {**s16, "stream_id": "t-bbb", "language": "bbb"}, clips[0][0]),
                _tcp_client(
                    srv.bound_port,
                    {**s16, "stream_id": "t-aaa", "format": "f32", "language": "aaa"},
                    clips[1][0],
                    "f32",
                ),
                _tcp_client(srv.bound_port, None, clips[1][0]),  # raw PCM, as before: the default language
                _tcp_client(srv.bound_port, {**s16, "stream_id": "t-zzz", "language": "zzz"}, clips[0][0]),
            )
            await asyncio.wait_for(graph.wait_streams(), 30)
    finally:
        await graph.stop()
    bbb, aaa, raw, zzz = answers
    assert [a["type"] for a in bbb] == ["ready"] and bbb[0]["stream_id"] == "t-bbb"
    assert [a["type"] for a in aaa] == ["ready"] and aaa[0]["format"] == "f32"
    assert raw == []  # a raw PCM client gets nothing back, as before
    assert [a["type"] for a in zzz] == ["error"] and zzz[0]["code"] == "unknown_language" and zzz[0]["fatal"]
    assert "available: aaa, bbb" in zzz[0]["message"] and zzz[0]["stream_id"] == "t-zzz"
    assert [(e.stream_id, e.code) for e in refused] == [("t-zzz", "unknown_language")]
    finals: dict[str, list[str]] = {}
    for e in out.events:
        if isinstance(e, FinalTranscript):
            finals.setdefault(e.stream_id, []).append(e.text)
    (raw_sid,) = set(finals) - {"t-bbb", "t-aaa"}
    assert finals == {"t-bbb": [clips[0][1]["bbb"]], "t-aaa": [clips[1][1]["aaa"]], raw_sid: [clips[1][1]["aaa"]]}
    assert not [e for e in out.events if isinstance(e, ErrorEvent)]
    assert "t-zzz" not in {e.stream_id for e in out.events if isinstance(e, EndOfStream)}  # never started
    assert srv.errors == [("t-zzz", "unknown_language")]


@pytest.mark.parametrize(
    "line,code",
    [
        (b'{"type": "start", "sample_rate_hz": 16000, "language": 7}\n', "bad_control"),
        (b'{"type": "start", "sample_rate_hz": 16000\n', "bad_json"),
        (b'{"type": "end"}\n', "no_start"),
        (b'{"type": "start", "sample_rate_hz": 16000, "offset_header": true}\n', "bad_control"),
        (b'{"type": "start", "sample_rate_hz": 16000, "stream_id": "' + b"x" * 5000 + b'"}\n', "oversize"),
    ],
)
async def test_tcp_bad_start_line_is_one_error_line(line, code):
    graph = Graph(nodes=[Collect(keep_audio=False)])
    await graph.start()
    try:
        async with TcpPcmServer(graph, 0) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port)
            writer.write(line + encode_audio(np.zeros(1600, np.float32), "s16"))
            writer.write_eof()
            answer = (await asyncio.wait_for(reader.read(), 10)).decode().splitlines()
            writer.close()
    finally:
        await graph.stop()
    assert len(answer) == 1, answer
    err = json.loads(answer[0])
    assert err["type"] == "error" and err["code"] == code and err["fatal"], err
    assert srv.errors == [(err["stream_id"], code)]


async def test_tcp_pcm_that_begins_with_a_brace_byte_is_still_pcm():
    """The s16 sample 123 is the bytes 7b 00 ("{" NUL): raw audio, not a start line."""
    out = Collect(keep_audio=False)
    graph = Graph(nodes=[out])
    await graph.start()
    try:
        async with TcpPcmServer(graph, 0, sample_rate_hz=16000) as srv:
            x = np.full(1600, 123 / 32768, np.float32)
            assert encode_audio(x, "s16")[:2] == b"{\x00"
            assert await _tcp_client(srv.bound_port, None, x) == []
            await asyncio.wait_for(graph.wait_streams(), 10)
    finally:
        await graph.stop()
    (eos,) = [e for e in out.events if isinstance(e, EndOfStream)]
    assert eos.sample == 1600 and not srv.errors


# ----------------------------------------------------------------------------- eval --language


def test_eval_language_streams_and_scores_in_that_language(mms, clips, tmp_path):
    import soundfile as sf
    from typer.testing import CliRunner

    from speechstream.cli import app
    from speechstream.eval import EvalConfig, evaluate

    x, want = clips[0]
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"audio\ttext\na.wav\t{want['bbb']}\n")
    # no padding, no VAD, one window: the streamed and the offline pass are transformers' forward
    common = dict(model=str(mms), mode="window", chunk_ms=4000, vad="none", realtime=False, pad_silence_ms=0)
    for lang in ("bbb", "aaa"):
        (u,) = evaluate(EvalConfig.from_flat(manifest, language=lang, **common), log=lambda m: None).utterances
        assert (u.stream_hyp, u.offline_greedy) == (want[lang], want[lang]), lang
    args = [
        "eval",
        str(manifest),
        "--model",
        str(mms),
        "--mode",
        "window",
        "--chunk-ms",
        "4000",
        "--vad",
        "none",
        "--no-realtime",
        "--pad-silence-ms",
        "0",
    ]
    r = CliRunner().invoke(app, [*args, "--language", "bbb"])
    assert r.exit_code == 0, r.output
    (line,) = [l for l in r.stdout.splitlines() if "streaming WER" in l]
    assert "language bbb" in line and line.endswith("| 0.00% / 0.00% |"), line  # the reference is bbb's text
    r = CliRunner().invoke(app, [*args, "--language", "zzz"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speechstream: error: unknown language 'zzz'"), r.stderr
    assert "available: aaa, bbb" in lines[0]
