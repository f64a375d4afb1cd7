"""A multilingual (MMS-layout) checkpoint end to end: ``--language`` on the CLI, the
``language`` TOML setting, and per-stream languages through ``serve``'s WebSocket server on
loopback: two streams in two languages at once on one loaded model, each getting transformers'
transcript for its language (``load_adapter(lang)`` + ``set_target_lang(lang)`` + ``batch_decode``)."""

from __future__ import annotations

import asyncio
import json

import pytest
import soundfile as sf
import torch

from tests import hf_tiny
from tests.integration.netkit import assert_stream_well_formed, stream_audio
from tests.streamkit import gated_tones

pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(120)
LANGS = tuple(hf_tiny.MMS_VOCABS)


@pytest.fixture(scope="module")
def mms(tmp_path_factory):
    # do_normalize=False: a stream's running normalisation is then the offline one, so one window
    # covering the clip is exactly transformers' forward
    return hf_tiny.build_tiny_mms(tmp_path_factory.mktemp("mms") / "m", do_normalize=False)


@pytest.fixture(scope="module")
def clips(mms):
    """Two clips and, per clip and language, transformers' greedy transcript."""
    ref, tok = hf_tiny.reference_mms(mms, "bbb")
    out = []
    for seed in (1, 2):
        x = gated_tones(seed, 1.6)
        want = {}
        for lang in ("bbb", "aaa"):
            ref.load_adapter(lang)
            tok.set_target_lang(lang)
            with torch.no_grad():
                want[lang] = tok.batch_decode(ref(torch.from_numpy(x)[None]).logits.argmax(-1))[0]
            assert want[lang].strip()
        assert want["aaa"] != want["bbb"]
        out.append((x, want))
    return out


def _finals(stdout: str) -> list[str]:
    return [json.loads(l)["text"] for l in stdout.splitlines() if '"final_transcript"' in l]


def test_cli_language_offline_streamed_and_toml(mms, clips, tmp_path):
    x, want = clips[0]
    wav = tmp_path / "a.wav"
    sf.write(wav, x, 16000)
    # Typer's CliRunner: the CLI in process (the installed entry point is tested elsewhere)
    from typer.testing import CliRunner

    from speechstream.cli import app

    # offline, with --language
    r = CliRunner().invoke(
        app,
        [
            "transcribe",
            str(wav),
            "--model",
            str(mms),
            "--language",
            "bbb",
            "--mode",
            "offline",
            "--vad",
            "none",
            "--jsonl",
            "-",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert _finals(r.stdout) == [want["bbb"]]
    # streamed (window mode, one window over the clip), the language from a TOML file
    toml = tmp_path / "s.toml"
    toml.write_text('[transcribe]\nlanguage = "aaa"\nmode = "window"\nchunk_ms = 4000\nvad = "none"\n')
    r = CliRunner().invoke(app, ["transcribe", str(wav), "--model", str(mms), "--config", str(toml), "--jsonl", "-"])
    assert r.exit_code == 0, r.output
    assert _finals(r.stdout) == [want["aaa"]]
    # an unknown code: one line listing the available ones, exit 2
    r = CliRunner().invoke(app, ["transcribe", str(wav), "--model", str(mms), "--language", "zzz", "--vad", "none"])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speechstream: error: unknown language 'zzz'"), r.stderr
    assert "available: aaa, bbb" in lines[0] and "Traceback" not in r.output


async def _refused(url: str, start: dict) -> tuple[list[dict], int | None]:
    import websockets
    from websockets.asyncio.client import connect

    events = []
    async with connect(url) as ws:
        await ws.send(json.dumps(start))
        try:
            async for m in ws:
                events.append(json.loads(m))
        except websockets.ConnectionClosedError:  # a close code other than 1000/1001
            pass
        return events, ws.close_code


async def test_serve_two_languages_at_once_on_one_model(mms, clips):
    from speechstream.net.serve import ServeOptions, build_nodes
    from speechstream.net.ws import CaptionServer, ServerConfig

    nodes, _ = build_nodes(
        ServeOptions.from_flat(model=str(mms), vad="none", mode="window", chunk_ms=4000, language="aaa")
    )
    rec = nodes[-1]
    async with CaptionServer(nodes, ServerConfig(port=0)) as srv:
        model = rec.model
        jobs = [
            stream_audio(srv.url, clips[0][0], 16000, chunk_ms=100, start_extra={"language": "bbb"}),
            stream_audio(srv.url, clips[1][0], 16000, chunk_ms=100),  # the server's default: aaa
            _refused(srv.url, {"type": "start", "sample_rate_hz": 16000, "language": "zzz"}),
            stream_audio(srv.url, clips[0][0], 16000, chunk_ms=100, start_extra={"language": "aaa"}),
        ]
        bbb0, aaa1, (bad, bad_code), aaa0 = await asyncio.gather(*jobs)
        assert rec.model is model  # one loaded model: each language is a view on its weights
        assert model.for_language("bbb").module.wav2vec2.feature_extractor is model.module.wav2vec2.feature_extractor
    for s, text in ((bbb0, clips[0][1]["bbb"]), (aaa1, clips[1][1]["aaa"]), (aaa0, clips[0][1]["aaa"])):
        assert s.close_code == 1000 and not s.of("error")
        assert_stream_well_formed(s)
        assert [f["text"] for f in s.finals] == [text]
    # the unknown language: an error event and a close for that stream only (the others ran on)
    assert bad_code == 1008 and [e["type"] for e in bad] == ["error"]
    assert bad[0]["code"] == "unknown_language" and bad[0]["fatal"] and "available: aaa, bbb" in bad[0]["message"]


async def test_serve_with_an_unknown_default_language_fails_at_start(mms):
    from speechstream.net.serve import ServeOptions, build_nodes
    from speechstream.net.ws import CaptionServer
    from stream.errors import ConfigError

    nodes, _ = build_nodes(ServeOptions.from_flat(model=str(mms), vad="none", language="zzz"))
    server = CaptionServer(nodes)
    with pytest.raises(ConfigError, match=r"unknown language 'zzz' .*available: aaa, bbb"):
        await server.graph.start()
    await server.graph.stop()


async def test_serve_unreadable_adapter_fails_its_stream_only(mms, clips, tmp_path):
    import shutil

    from speechstream.net.serve import ServeOptions, build_nodes
    from speechstream.net.ws import CaptionServer, ServerConfig

    broken = tmp_path / "broken"
    shutil.copytree(mms, broken)
    (broken / "adapter.bbb.safetensors").write_bytes(b"not a safetensors file")
    nodes, _ = build_nodes(ServeOptions.from_flat(model=str(broken), vad="none", mode="window", chunk_ms=4000))
    async with CaptionServer(nodes, ServerConfig(port=0)) as srv:
        bad, good = await asyncio.gather(
            stream_audio(srv.url, clips[0][0], 16000, chunk_ms=100, start_extra={"language": "bbb"}),
            stream_audio(srv.url, clips[0][0], 16000, chunk_ms=100, start_extra={"language": "aaa"}),
        )
    (err,) = bad.of("error")
    assert err["code"] == "language_unavailable" and err["fatal"] and "adapter.bbb.safetensors" in err["message"]
    assert not bad.finals and bad.events[-1]["type"] == "end_of_stream"
    assert [f["text"] for f in good.finals] == [clips[0][1]["aaa"]] and not good.of("error")
