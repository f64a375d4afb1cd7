"""stream.recognizer through the whole async path with a tiny random-init HF CTC model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.api import load_model
from engines.tokenizer import CTCTokenizer
from stream.errors import ConfigError
from stream.events import (
    AudioChunk,
    EndOfStream,
    Endpoint,
    ErrorEvent,
    Event,
    FinalTranscript,
    PartialTranscript,
    SpeechEnded,
    json_schema,
)
from stream.graph import Graph
from stream.node import Collect, Node
from stream.recognizer import Recognizer, RecognizerConfig
from stream.sources.array import ArraySource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_tiny import build_tiny  # noqa: E402

from tests.streamkit import gated_tones as audio

jsonschema = pytest.importorskip("jsonschema")

CFG = RecognizerConfig(chunk_ms=320, left_context_ms=1280, max_utterance_ms=600)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_tiny("wav2vec2", "ctc", tmp_path_factory.mktemp("tiny_ctc"))


@pytest.fixture(scope="module")
def model(model_dir: Path):
    return load_model(model_dir)


class InjectSpeechEnd(Node):
    """After the chunk that crosses ``sample`` of ``stream``, push SpeechEnded(sample) (a stand-in VAD)."""

    def __init__(self, stream: str, sample: int):
        super().__init__("inject")
        self.stream, self.sample, self.done = stream, sample, False

    async def process(self, event: Event) -> None:
        await self.push(event)
        if (
            not self.done
            and isinstance(event, AudioChunk)
            and event.stream_id == self.stream
            and event.end_sample >= self.sample
        ):
            self.done = True
            await self.push(SpeechEnded(self.stream, self.sample, start_sample=0))


async def run_graph(model, streams: dict[str, np.ndarray], config=CFG, extra=(), block=(1000, 2300, 517)) -> Collect:
    collect = Collect(keep_audio=False)
    sources = [ArraySource(x, 16000, stream_id=sid, block=block) for sid, x in streams.items()]
    graph = Graph(sources=sources, nodes=[*extra, Recognizer(model, config), collect], bug_policy="raise")
    await graph.run(timeout_s=120)
    return collect


def check_stream(events: list[Event], sid: str) -> list[FinalTranscript]:
    """Schema, segment ids, revisions, no revised final, Endpoint after each final, all before EOS."""
    validator = jsonschema.Draft202012Validator(json_schema())
    for e in events:
        validator.validate(e.to_dict())
    assert not [e for e in events if isinstance(e, ErrorEvent)]
    assert isinstance(events[-1], EndOfStream)
    rev: dict[str, int] = {}
    closed: set[str] = set()
    finals: list[FinalTranscript] = []
    for i, e in enumerate(events):
        if isinstance(e, (PartialTranscript, FinalTranscript)):
            assert e.segment_id.startswith(f"{sid}-")
            assert e.segment_id not in closed, "a final was revised"
            assert e.revision == rev.get(e.segment_id, -1) + 1
            rev[e.segment_id] = e.revision
            assert e.sample <= e.end_sample
            if isinstance(e, FinalTranscript):
                closed.add(e.segment_id)
                finals.append(e)
                nxt = events[i + 1]
                assert isinstance(nxt, Endpoint) and nxt.segment_id == e.segment_id
    assert [f.segment_id for f in finals] == [f"{sid}-{n}" for n in range(len(finals))]
    assert closed == set(rev), "every segment got its final before EOS"
    return finals


def offline_stream_text(model, x: np.ndarray, tok: CTCTokenizer, block: tuple[int, ...]) -> str:
    """Greedy text of the engine's own streamed frames (sync), chunked like the source."""
    st = model.init_state(CFG.mode, CFG.chunk_ms, CFG.left_context_ms, CFG.lookahead_ms)
    frames, pos, k = [], 0, 0
    while pos < len(x):
        n = block[k % len(block)]
        out, st = model.step(torch.from_numpy(x[pos : pos + n]), st)
        frames.append(out.frames)
        pos, k = pos + n, k + 1
    frames.append(model.flush(st).frames)
    return tok.decode(torch.cat(frames).argmax(-1).tolist())


async def test_two_interleaved_streams_keep_separate_state(model, model_dir: Path) -> None:
    a, b = audio(0, 1.7), audio(1, 2.3)
    both = await run_graph(model, {"a": a, "b": b})
    alone_a = await run_graph(model, {"a": a})
    alone_b = await run_graph(model, {"b": b})
    tok = CTCTokenizer.from_dir(model_dir)
    for sid, x, alone in (("a", a, alone_a), ("b", b, alone_b)):
        events = both.of(sid)
        finals = check_stream(events, sid)
        assert len(finals) >= 2  # max_utterance_ms=600 cuts these into several segments
        assert events == alone.of(sid)
        # the finals carry every token of the stream (segments may cut inside a word)
        joined = "".join(f.text for f in finals).replace(" ", "")
        assert joined == offline_stream_text(model, x, tok, (1000, 2300, 517)).replace(" ", "")
        # word times are inside the audio, in order, on the 320-sample frame grid
        words = [w for f in finals for w in f.words]
        assert words and all(w.start_sample % 320 == 0 and w.end_sample % 320 == 0 for w in words)
        assert all(0 <= w.start_sample < w.end_sample <= len(x) for w in words)
        assert [w.start_sample for w in words] == sorted(w.start_sample for w in words)
    assert any(isinstance(e, PartialTranscript) for e in both.events)


async def test_final_flushed_at_eos_and_vad_end_closes_segment(model) -> None:
    cfg = RecognizerConfig(
        chunk_ms=320,
        left_context_ms=1280,
        max_utterance_ms=20_000,
        rule1_min_trailing_silence_ms=None,
        rule2_min_trailing_silence_ms=None,
    )
    x = audio(2, 2.0)
    plain = (await run_graph(model, {"s": x}, cfg)).of("s")
    finals = check_stream(plain, "s")
    assert len(finals) == 1
    ep = [e for e in plain if isinstance(e, Endpoint)]
    assert [e.reason for e in ep] == ["eos"] and ep[0].sample == len(x)
    # a VAD speech end at 1.0 s closes the first segment there (frames up to sample 16000)
    cut = await run_graph(model, {"s": x}, cfg, extra=[InjectSpeechEnd("s", 16000)])
    events = cut.of("s")
    finals = check_stream(events, "s")
    ep = [e for e in events if isinstance(e, Endpoint)]
    assert [e.reason for e in ep] == ["vad", "eos"]
    assert ep[0].sample == 50 * 320  # first frame starting at or after the speech end
    assert finals[0].end_sample <= 16000 and finals[1].sample >= 16000
    assert any(isinstance(e, SpeechEnded) for e in events)  # passed on


async def test_dropped_audio_keeps_stream_time(model) -> None:
    """A chunk that jumps ahead in stream time is preceded by zeros: word times stay in stream samples."""
    x = audio(3, 1.5)

    class DropSecond(Node):
        async def process(self, event: Event) -> None:
            if isinstance(event, AudioChunk) and event.sample == 4000:
                return
            await self.push(event)

    events = (await run_graph(model, {"s": x}, extra=[DropSecond()], block=4000)).of("s")
    finals = check_stream(events, "s")
    assert max(w.end_sample for f in finals for w in f.words) <= len(x)


async def test_config_errors_raise_at_start(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="language model file not found"):
        await Recognizer(str(model_dir), RecognizerConfig(lm_path=str(tmp_path / "missing.arpa"))).start()
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in model_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "vocab.json").write_text('{"<pad>": 0, "|": 1, "A": 2}')
    with pytest.raises(ConfigError, match="3 tokens|outputs"):
        await Recognizer(str(bad), CFG).start()


async def test_offline_mode_recognises_whole_segments(model, model_dir: Path) -> None:
    cfg = RecognizerConfig(mode="offline", rule1_min_trailing_silence_ms=None, rule2_min_trailing_silence_ms=None)
    x = audio(4, 2.0)
    events = (await run_graph(model, {"s": x}, cfg, extra=[InjectSpeechEnd("s", 16000)])).of("s")
    finals = check_stream(events, "s")
    assert not [e for e in events if isinstance(e, PartialTranscript)]
    assert [e.reason for e in events if isinstance(e, Endpoint)] == ["vad", "eos"]
    tok = CTCTokenizer.from_dir(model_dir)
    # the first segment covers the chunks up to the one that crossed sample 16000 (blocks 1000, 2300, 517, ...)
    cut = next(e for e in events if isinstance(e, Endpoint)).sample
    assert 16000 <= cut < 16000 + 2300
    for f, seg in zip(finals, (x[:cut], x[cut:])):
        expected = tok.decode(model.forward(torch.from_numpy(seg)).frames[0].argmax(-1).tolist())
        assert f.text == expected and f.revision == 0
    assert finals[1].words[0].start_sample >= cut


def test_offline_mode_is_its_own_node_and_the_old_spelling_builds_it(model, tmp_path: Path) -> None:
    from speechstream.builder import build_recognizer
    from stream.config import TranscribeConfig
    from stream.offline_recognizer import OfflineRecognizer

    offline = RecognizerConfig(mode="offline")
    rec = Recognizer(model, offline, name="r")  # compatibility: the offline node, same arguments
    assert type(rec) is OfflineRecognizer and rec.config is offline and rec.name == "r"
    assert type(Recognizer(model, config=offline)) is OfflineRecognizer
    assert type(Recognizer(model, CFG)) is Recognizer and type(Recognizer(model)) is Recognizer
    with pytest.raises(ConfigError, match="mode='offline'"):
        OfflineRecognizer(model, CFG)

    class Streaming(Recognizer):
        pass

    with pytest.raises(ConfigError, match="mode='offline' is OfflineRecognizer's"):
        Streaming(model, offline)
    wav = tmp_path / "x.wav"
    assert (
        type(build_recognizer(TranscribeConfig(input_path=wav, recognizer=RecognizerConfig(mode="offline")), "m"))
        is OfflineRecognizer
    )
    assert (
        type(build_recognizer(TranscribeConfig(input_path=wav, recognizer=RecognizerConfig(mode="cached")), "m"))
        is Recognizer
    )


async def test_bad_audio_is_an_error_event_for_that_stream_only(model) -> None:
    good = audio(5, 1.0)
    collect = Collect(keep_audio=False)
    sources = [
        ArraySource(good, 16000, stream_id="good", block=1600),
        ArraySource(audio(6, 1.0), 44100, stream_id="bad", block=1600),  # no Resample in front
    ]
    await Graph(sources=sources, nodes=[Recognizer(model, CFG), collect]).run(timeout_s=120)
    bad = collect.of("bad")
    errors = [e for e in bad if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].code == "bad_audio" and errors[0].fatal and "16 kHz" in errors[0].message
    assert isinstance(bad[-1], EndOfStream)
    assert check_stream(collect.of("good"), "good")


def test_checkpoint_language_model_folder_is_used(model_dir: Path, tmp_path: Path) -> None:
    import json

    from examples.lm.lm_build import build_arpa, write_arpa
    from stream.recognizer import build_decoder

    d = tmp_path / "with_lm"
    d.mkdir()
    for f in model_dir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "language_model").mkdir()
    write_arpa(*build_arpa([["THE", "HEAT"], ["NO", "TEA"], ["AT", "NINE"]], order=2), d / "language_model" / "lm.arpa")
    (d / "language_model" / "attrs.json").write_text(json.dumps({"alpha": 0.7, "beta": 2.0, "unk_score_offset": -9.0}))
    m = load_model(d)
    dec = build_decoder(m, RecognizerConfig())
    assert dec.final_decoder is not None and dec.partial_decoder is None
    c = dec.final_decoder.config
    assert c.lm_path.endswith("lm.arpa") and (c.alpha, c.beta, c.unk_score_offset) == (0.7, 2.0, -9.0)
    assert build_decoder(m, RecognizerConfig(model_lm=False)).final_decoder is None
    assert build_decoder(m, RecognizerConfig(lm_path="none")).final_decoder is None  # --lm none
    given = build_decoder(m, RecognizerConfig(lm_alpha=0.2)).final_decoder.config  # a given value wins
    assert (given.alpha, given.beta) == (0.2, 2.0)
    (d / "language_model" / "lm.arpa").unlink()
    with pytest.raises(ConfigError, match="no \\*.bin or \\*.arpa"):
        build_decoder(m, RecognizerConfig())


@pytest.mark.parametrize("mode", ["cached", "window"])
def test_peeking_at_the_engine_leaves_its_stream_unchanged(model, mode: str) -> None:
    """The recogniser's VAD-end peek is ``flush`` on the current engine state: the stream goes on
    exactly as without it (same frames), and the peek's frames are where the engine would emit them."""
    x = torch.from_numpy(audio(3, 2.0))
    st = model.init_state(mode, 320, 1280, 0)
    a, st = model.step(x[:9000], st)
    peek = model.flush(st)
    assert peek.start_frame == a.start_frame + a.frames.shape[0] and peek.frames.shape[0] > 0
    b, st_b = model.step(x[9000:], st)
    ref = model.init_state(mode, 320, 1280, 0)
    a2, ref = model.step(x[:9000], ref)
    b2, ref = model.step(x[9000:], ref)
    assert b.start_frame == b2.start_frame and torch.equal(b.frames, b2.frames)
    assert torch.equal(model.flush(st_b).frames, model.flush(ref).frames)
