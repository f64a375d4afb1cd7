"""Sentence-sized finals: the default VAD and the recogniser cut at sentence pauses, fast.

Constructed audio (espeak-ng phrases, trimmed to their speech, joined with exact pauses) goes
through the real graph (Resample -> VadNode at its defaults -> Recognizer). The acoustic model is a
stand-in whose CTC logits spell, at the frames of each phrase, the words the test put there
(constructed logits), with the real engine's chunking (frames only when a chunk is complete,
``flush`` emits the rest); so what is tested is where segments close, and when.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engines.api import StepOutput
from engines.ctc import EndpointConfig, StreamingCTCDecoder
from engines.tokenizer import CTCTokenizer
from stream.events import AudioChunk, FinalTranscript
from stream.graph import Graph
from stream.node import Collect
from stream.recognizer import Recognizer, RecognizerConfig
from stream.resample import Resample
from stream.sources.array import ArraySource
from stream.vad_node import VadNode
from tests.support.tts import espeak_ng, have_espeak, trim_extent

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed (apt install espeak-ng)")

LABELS = ("<pad>", "<s>", "</s>", "<unk>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
TOK = CTCTokenizer(labels=LABELS)
ID = {c: i for i, c in enumerate(LABELS)}
SPF = 320  # samples per CTC frame


@dataclass(frozen=True)
class _State:
    chunk: int  # samples per chunk
    samples: int = 0
    frames_out: int = 0


class TrackModel:
    """A CTC "model" whose frame ``f`` has the logits of ``track[f]`` (blank past its end)."""

    head = "ctc"
    samples_per_frame = SPF
    model_dir = vocab_dir = "track"

    def __init__(self, track: np.ndarray):
        self.track = track
        self.config = SimpleNamespace(vocab_size=len(LABELS))

    def init_state(
        self, mode: str, chunk_ms: int, left_context_ms: int, lookahead_ms: int, language: str | None = None
    ) -> _State:
        return _State(chunk=chunk_ms * 16)

    def _frames(self, a: int, b: int) -> torch.Tensor:
        ids = np.zeros(max(0, b - a), int)
        inside = np.arange(a, b) < len(self.track)
        ids[inside] = self.track[np.arange(a, b)[inside]]
        x = np.full((len(ids), len(LABELS)), -4.0, np.float32)
        x[np.arange(len(ids)), ids] = 6.0
        return torch.from_numpy(x)

    def step(self, x: torch.Tensor, st: _State) -> tuple[StepOutput, _State]:
        samples = st.samples + int(x.shape[0])
        ready = samples // st.chunk * st.chunk // SPF  # frames of complete chunks only
        out = StepOutput(self._frames(st.frames_out, ready), st.frames_out)
        return out, dataclasses.replace(st, samples=samples, frames_out=max(ready, st.frames_out))

    def step_batch(self, xs, states):
        outs = [self.step(x, s) for x, s in zip(xs, states)]
        return [o for o, _ in outs], [s for _, s in outs]

    def flush(self, st: _State) -> StepOutput:
        return StepOutput(self._frames(st.frames_out, -(-st.samples // SPF)), st.frames_out)


def build(
    pieces: list[tuple[str, float]], lead_s: float = 0.6, tail_s: float = 1.5, gap_noise: float = 0.0
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Phrases spoken by espeak-ng, each trimmed to its speech and followed by its pause (s).

    Returns the audio, the CTC track (the phrase's letters spread over its speech frames, a word
    delimiter after each word) and the end sample of each phrase's speech."""
    audio = [np.zeros(int(lead_s * 16000), np.float32)]
    track: list[int] = [0] * (len(audio[0]) // SPF)
    ends = []
    pos = len(audio[0])
    for text, pause_s in pieces:
        x = espeak_ng(text.lower())
        a, b = trim_extent(x)
        x = x[a:b]
        n = (len(x) // SPF) * SPF
        x = x[:n]
        tokens = [t for w in text.split() for t in [*(ID[c] for c in w), ID["|"]]]
        frames = n // SPF
        seg = [0] * frames
        for k, t in enumerate(tokens):  # spread over the phrase, last token on its last frames
            seg[min(frames - 1, int((k + 0.5) * frames / len(tokens)))] = t
        track += seg
        audio.append(x)
        pos += n
        ends.append(pos)
        gap = int(round(pause_s * 16000 / SPF)) * SPF
        audio.append((gap_noise * np.random.default_rng(pos).standard_normal(gap)).astype(np.float32))
        track += [0] * (gap // SPF)
        pos += gap
    audio.append(np.zeros(int(tail_s * 16000), np.float32))
    return np.concatenate(audio), np.array(track), ends


async def transcribe(
    x: np.ndarray,
    track: np.ndarray,
    model: TrackModel | None = None,
    into: list | None = None,
    block: int = 1600,
    **rcfg,
) -> list:
    """Every event out of the graph, audio kept for timing (and internal hints, which must not
    come out); ``into`` gets the recogniser node."""
    cfg = RecognizerConfig(chunk_ms=640, **rcfg)
    dec = StreamingCTCDecoder(
        TOK,
        SPF,
        EndpointConfig(cfg.rule1_min_trailing_silence_ms, cfg.rule2_min_trailing_silence_ms, cfg.max_utterance_ms),
    )
    collect = Collect(keep_audio=True, keep_internal=True)
    rec = Recognizer(model or TrackModel(track), cfg, decoder=dec)
    graph = Graph(
        [ArraySource(x, 16000, stream_id="s", block=block)],
        [Resample(), VadNode.create("webrtc"), rec, collect],
        bug_policy="raise",
    )
    await graph.run(timeout_s=120)
    if into is not None:
        into.append(rec)
    return collect.events


def finals_of(events) -> list[FinalTranscript]:
    return [e for e in events if isinstance(e, FinalTranscript) and e.text]


async def test_a_300_ms_pause_between_sentences_gives_two_finals_a_150_ms_pause_inside_one_gives_one() -> None:
    x, track, _ = build(
        [
            ("THE WEATHER WILL BE COLD", 0.15),
            ("AND WINDY TOMORROW", 0.30),
            ("OUR TRAIN LEAVES AT SEVEN", 0.15),
            ("FROM THE NORTH STATION", 1.0),
        ]
    )
    texts = [f.text for f in finals_of(await transcribe(x, track))]
    assert texts == ["THE WEATHER WILL BE COLD AND WINDY TOMORROW", "OUR TRAIN LEAVES AT SEVEN FROM THE NORTH STATION"]


async def test_a_pause_the_vad_calls_speech_still_ends_the_segment_on_the_ctc_blank_run() -> None:
    """Loud noise in a 0.8 s pause: webrtc calls it speech, but the CTC frames are blank there, and
    500 ms of trailing blanks after a word end the segment (rule 2; it was 1.2 s)."""
    pieces = [("PLEASE SPEAK SLOWLY AND CLEARLY", 0.8), ("INTO THE MICROPHONE", 1.0)]
    x, track, _ = build(pieces, gap_noise=0.05, tail_s=0.1)
    events = await transcribe(x, track)
    assert [f.text for f in finals_of(events)] == [p for p, _ in pieces]
    from stream.events import Endpoint

    assert [e.reason for e in events if isinstance(e, Endpoint)][0] == "silence"


async def test_the_final_comes_soon_after_the_end_of_speech_not_when_the_chunk_fills() -> None:
    """In stream time: no more than ~0.4 s of audio passes the recogniser between a sentence's end
    and its final (150 ms of silence to decide, a 30 ms VAD frame, a 100 ms source block), whatever
    the 640 ms chunk's phase; waiting for the chunk would take up to 640 ms more."""
    pieces = [
        ("PLEASE SPEAK SLOWLY", 0.5),
        ("AND CLEARLY INTO THE MICROPHONE", 0.5),
        ("TURN LEFT AT THE SECOND LIGHT", 0.5),
        ("THE LIBRARY CLOSES EARLY", 1.0),
    ]
    x, track, ends = build(pieces)
    events = await transcribe(x, track)
    finals = finals_of(events)
    assert [f.text for f in finals] == [p for p, _ in pieces]
    for end, final in zip(ends, finals):
        i = events.index(final)
        heard = max(e.end_sample for e in events[:i] if isinstance(e, AudioChunk))
        assert heard - end <= 0.4 * 16000, (heard - end) / 16000


async def test_decoding_ahead_at_the_pause_hint_gives_the_same_finals_and_is_used_at_each_vad_end() -> None:
    """The VAD's internal SpeechPausing (a pause began, the segment's audio is all out) starts the
    VAD end's work; at the SpeechEnded it is used (same state, same end sample), so the events are
    the very ones computed at the end. The 150 ms pause gets a hint too (20 ms blocks, as a
    microphone sends them), but speech resumes: that work is dropped. The hint never leaves the
    recogniser."""
    from stream.events import Endpoint, SpeechPausing

    pieces = [("THE WEATHER WILL BE COLD", 0.15), ("AND WINDY TOMORROW", 0.30), ("OUR TRAIN LEAVES AT SEVEN", 1.0)]
    x, track, _ = build(pieces)
    out: dict[bool, tuple[list, Recognizer]] = {}
    for ahead in (True, False):
        recs: list = []
        events = await transcribe(x, track, into=recs, block=320, decode_ahead=ahead)
        out[ahead] = ([e for e in events if not isinstance(e, AudioChunk)], recs[0])
    (with_ahead, rec), (without, rec0) = out[True], out[False]
    assert with_ahead == without  # finals (text, words, times), endpoints, VAD events: all equal
    assert [f.text for f in finals_of(with_ahead)] == [
        "THE WEATHER WILL BE COLD AND WINDY TOMORROW",
        "OUR TRAIN LEAVES AT SEVEN",
    ]
    vad_ends = [e for e in with_ahead if isinstance(e, Endpoint) and e.reason == "vad"]
    assert rec.stats.ahead_used == len(vad_ends) == 2
    assert rec.stats.ahead > rec.stats.ahead_used  # the 150 ms pause's hint: speech went on
    assert rec0.stats.ahead == 0
    assert not any(isinstance(e, SpeechPausing) for e in with_ahead)


async def test_offline_decoding_ahead_gives_the_same_finals() -> None:
    """Offline mode: the whole segment is decoded at the pause hint; the same finals as at the end."""
    rng = np.random.default_rng(1)
    tone = (0.3 * np.sin(2 * np.pi * 180 * np.arange(16000) / 16000)).astype(np.float32)
    x = np.concatenate(
        [np.zeros(8000, np.float32), tone + 0.01 * rng.standard_normal(16000).astype(np.float32)]
        + [np.zeros(12000, np.float32), tone, np.zeros(24000, np.float32)]
    )
    out = {}
    for ahead in (True, False):
        collect = Collect(keep_audio=False, keep_internal=True)
        rec = Recognizer(
            LoudModel(np.zeros(0, int)),
            RecognizerConfig(mode="offline", decode_ahead=ahead),
            decoder=StreamingCTCDecoder(TOK, SPF),
        )
        graph = Graph(
            [ArraySource(x, 16000, stream_id="s", block=1600)],
            [Resample(), VadNode.create("webrtc"), rec, collect],
            bug_policy="raise",
        )
        await graph.run(timeout_s=60)
        out[ahead] = (collect.events, rec.stats)
    from stream.events import Endpoint

    assert out[True][0] == out[False][0]
    vad_ends = [e for e in out[True][0] if isinstance(e, Endpoint) and e.reason == "vad"]
    assert len(vad_ends) >= 2 and len(finals_of(out[True][0])) >= 2
    assert out[True][1].ahead_used == len(vad_ends) and out[False][1].ahead == 0


async def test_max_length_cuts_a_run_on_reading_at_a_pause_between_words() -> None:
    """No pause long enough for the VAD: the maximum length, reached 0.3 s after the 0.2 s pause,
    cuts in that pause (the longest in its last quarter), not before the word then open."""
    pieces = [
        ("ONE LONG SENTENCE WITH MANY WORDS", 0.05),
        ("THAT GOES ON AND ON", 0.2),
        ("WITHOUT ANY PAUSE AT ALL", 0.05),
        ("UNTIL THE VERY END", 1.0),
    ]
    x, track, ends = build(pieces)
    max_ms = (ends[1] + int(0.5 * 16000)) // 16
    finals = finals_of(await transcribe(x, track, max_utterance_ms=max_ms))
    words = " ".join(p for p, _ in pieces)
    assert " ".join(f.text for f in finals) == words  # every word whole, in order
    assert len(finals) >= 2 and finals[0].text.endswith("ON AND ON")


class LoudModel(TrackModel):
    """Offline: frame ``f`` of a segment spells "A" while the audio is loud, blank while quiet,
    and a word delimiter at the first quiet frame: each burst is one word."""

    def forward(self, x: torch.Tensor, language: str | None = None) -> SimpleNamespace:
        n = x.shape[0] // SPF
        rms = x[: n * SPF].reshape(n, SPF).pow(2).mean(1).sqrt().numpy()
        ids = np.where(rms > 0.01, ID["A"], 0)
        ids[1:][(rms[1:] <= 0.01) & (rms[:-1] > 0.01)] = ID["|"]
        ids[1:][(ids[1:] == ID["A"]) & (ids[:-1] == ID["A"])] = 0  # one "A" per burst
        return SimpleNamespace(frames=self._logits(ids)[None])

    def _logits(self, ids: np.ndarray) -> torch.Tensor:
        x = np.full((len(ids), len(LABELS)), -4.0, np.float32)
        x[np.arange(len(ids)), ids] = 6.0
        return torch.from_numpy(x)


async def test_offline_max_length_cuts_in_the_quietest_stretch_not_inside_a_word() -> None:
    """Offline mode buffers audio: at the maximum length it cuts at the quietest 100 ms of the last
    quarter (the 0.25 s gap between two bursts, not a 50 ms dip inside one), not at the sample
    where the length ran out."""
    rng = np.random.default_rng(0)

    def burst(s: float) -> np.ndarray:
        return (
            0.3 * np.sin(2 * np.pi * 180 * np.arange(int(s * 16000)) / 16000)
            + 0.01 * rng.standard_normal(int(s * 16000))
        ).astype(np.float32)

    gap = np.zeros(4000, np.float32)  # 0.25 s
    short = np.zeros(800, np.float32)  # 0.05 s: inside a "word"
    x = np.concatenate([burst(1.0), short, burst(1.0), short, burst(1.0), gap, burst(0.6), short, burst(1.0)])
    collect = Collect(keep_audio=False)
    rec = Recognizer(
        LoudModel(np.zeros(0, int)),
        RecognizerConfig(mode="offline", max_utterance_ms=4000),
        decoder=StreamingCTCDecoder(TOK, SPF),
    )
    graph = Graph([ArraySource(x, 16000, stream_id="s", block=1600)], [rec, collect], bug_policy="raise")
    await graph.run(timeout_s=60)
    from stream.events import Endpoint

    cuts = [e.sample for e in collect.events if isinstance(e, Endpoint) and e.reason == "max_length"]
    gap_at = 3 * 16000 + 1600  # the 0.25 s gap: in the last quarter of the 4 s maximum
    assert cuts and gap_at <= cuts[0] <= gap_at + 4000, cuts
