"""End to end: a short two-voice conversation through VAD -> Diarizer -> SpeakerLabeler.

Two clearly different flite voices (slt, female; rms, male) take four turns.  Checks: two
labels, at the right turns; enrolled names; the RTTM sink's file parses with pyannote and
scores a low DER against the reference.
"""

import asyncio
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf

from stream.diarize import Diarizer, SpeakerLabeler
from stream.events import FinalTranscript, SpeakerTurn, Word
from stream.graph import Graph
from stream.node import Collect
from stream.sources.array import ArraySource
from stream.vad_node import VadNode

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="needs Debian flite")

SR = 16_000
TEXTS = [
    ("slt", "The museum will be closed on Monday for repairs."),
    ("rms", "They decided to leave early to avoid the heavy traffic."),
    ("slt", "Fresh bread was sold in the market every morning."),
    ("rms", "Our team finished the project two days ahead of schedule."),
]


def say(path, voice, text):
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    a, sr = sf.read(path, dtype="float32")
    assert sr == SR
    nz = np.nonzero(np.abs(a) > 0.01)[0]
    return a[nz[0] : nz[-1] + 1]


@pytest.fixture(scope="module")
def conversation(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    pieces, ref = [np.zeros(SR // 2, np.float32)], []
    t = SR // 2
    for i, (voice, text) in enumerate(TEXTS):
        a = say(d / f"{i}.wav", voice, text) * (0.5 if voice == "rms" else 1.0)  # different loudness
        pieces += [a, np.zeros(int(0.6 * SR), np.float32)]
        ref.append((t, t + len(a), voice))
        t += len(a) + int(0.6 * SR)
    clips = {"sally": d / "sally.wav", "rob": d / "rob.wav"}
    sf.write(clips["sally"], say(d / "e1.wav", "slt", "Could you tell me where the nearest station is?"), SR)
    sf.write(clips["rob"], say(d / "e2.wav", "rms", "The old clock in the hall struck nine as we came in."), SR)
    return np.concatenate(pieces), ref, clips


class FakeRecognizer(Collect):
    """Emits one final per reference turn (two words at the reference times) after its speech."""

    def __init__(self, ref):
        super().__init__("fake-asr", keep_audio=False)
        self.pending = list(ref)

    async def _emit_due(self, now):
        while self.pending and now >= self.pending[0][1] + SR // 2:
            s, e, _ = self.pending.pop(0)
            mid = (s + e) // 2
            words = (Word("one", s, mid), Word("two", mid, e))
            await self.push(FinalTranscript("conv", s, segment_id=f"seg{s}", text="one two", end_sample=e, words=words))

    async def process(self, event):
        await self.push(event)
        await self._emit_due(event.sample)

    async def end_of_stream(self, eos):
        await self._emit_due(10**12)
        await self.push(eos)


async def diarize(audio, speakers=None, extra=()):
    collect = Collect(keep_audio=False)
    graph = Graph(
        sources=[ArraySource(audio, SR, stream_id="conv", block=1600)],
        nodes=[VadNode.webrtc(), Diarizer(speakers=speakers), *extra, SpeakerLabeler(), collect],
    )
    await graph.run(timeout_s=240)
    return collect.events


@pytest.fixture(scope="module")
def anonymous_run(conversation):
    """One run shared by the tests that read it (its own event loop)."""
    audio, ref, _ = conversation
    return asyncio.run(diarize(audio, extra=(FakeRecognizer(ref),)))


def latest_turns(events):
    latest = {}
    for e in events:
        if isinstance(e, SpeakerTurn) and (e.turn_id not in latest or e.revision > latest[e.turn_id].revision):
            latest[e.turn_id] = e
    return sorted(latest.values(), key=lambda t: t.sample)


def label_at(turns, sample):
    for t in turns:
        if t.sample <= sample < t.end_sample:
            return t.speaker
    return None


async def test_two_voices_get_two_labels_at_the_right_turns(conversation, anonymous_run):
    audio, ref, _ = conversation
    events = anonymous_run
    turns = latest_turns(events)
    assert {t.speaker for t in turns} == {"S1", "S2"}
    got = [label_at(turns, (s + e) // 2) for s, e, _ in ref]
    assert got == ["S1", "S2", "S1", "S2"]
    # every reference turn is covered by its label for most of its length
    for (s, e, _), label in zip(ref, got):
        covered = sum(max(0, min(e, t.end_sample) - max(s, t.sample)) for t in turns if t.speaker == label)
        assert covered > 0.8 * (e - s)
    # revisions of a turn are consecutive and keep their turn id
    by_id = {}
    for ev in events:
        if isinstance(ev, SpeakerTurn):
            by_id.setdefault(ev.turn_id, []).append(ev.revision)
    assert all(revs == list(range(len(revs))) for revs in by_id.values())


async def test_enrolled_speakers_are_named(conversation):
    audio, ref, clips = conversation
    turns = latest_turns(await diarize(audio, speakers=clips))
    assert [label_at(turns, (s + e) // 2) for s, e, _ in ref] == ["sally", "rob", "sally", "rob"]


async def test_without_a_vad_upstream(conversation):
    from engines.speakers.online import DiarizerConfig

    audio, ref, _ = conversation
    collect = Collect(keep_audio=False)
    graph = Graph(
        sources=[ArraySource(audio, SR, stream_id="conv", block=1600)],
        nodes=[Diarizer(DiarizerConfig(use_vad_events=False)), collect],
    )
    await graph.run(timeout_s=240)
    turns = latest_turns(collect.events)
    assert [label_at(turns, (s + e) // 2) for s, e, _ in ref] == ["S1", "S2", "S1", "S2"]


async def test_two_streams_in_one_graph_are_diarized_independently(conversation):
    audio, ref, _ = conversation
    collect = Collect(keep_audio=False)
    graph = Graph(
        sources=[
            ArraySource(audio, SR, stream_id="a", block=1600),
            ArraySource(audio[::-1].copy(), SR, stream_id="b", block=800),
        ],
        nodes=[VadNode.webrtc(), Diarizer(), collect],
    )
    await graph.run(timeout_s=240)
    for sid, order in (("a", ["S1", "S2", "S1", "S2"]), ("b", ["S2", "S1", "S2", "S1"])):
        turns = latest_turns([e for e in collect.events if e.stream_id == sid])
        n = len(audio)
        spans = ref if sid == "a" else [(n - e, n - s, v) for s, e, v in ref]
        assert [label_at(turns, (s + e) // 2) for s, e, _ in spans] == order


async def test_bad_enrollment_clip_fails_at_start_naming_it(tmp_path):
    from stream.errors import ConfigError

    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.zeros(SR, np.float32), SR)
    node = Diarizer(speakers={"zed": quiet})
    with pytest.raises(ConfigError, match=r"quiet\.wav.*'zed'.*silent"):
        await node.start()
    await node.stop()


async def test_words_of_a_final_get_the_speaker_of_their_turn(anonymous_run):
    finals = [e for e in anonymous_run if isinstance(e, FinalTranscript)]
    assert len(finals) == 4
    assert [f.speaker for f in finals] == ["S1", "S2", "S1", "S2"]
    assert all(w.speaker == f.speaker for f in finals for w in f.words)


async def test_captions_carry_the_speakers(anonymous_run, tmp_path):
    import srt
    import webvtt

    from sinks import SrtSink, VttSink

    vtt, srt_path = tmp_path / "c.vtt", tmp_path / "c.srt"
    sinks = [VttSink(vtt), SrtSink(srt_path)]
    for e in anonymous_run:
        for sink in sinks:
            await sink.consume(e)
    for sink in sinks:
        await sink.close()
    voices = [c.voice for c in webvtt.read(str(vtt)).captions]
    assert voices == ["S1", "S2", "S1", "S2"]
    assert [c.content.split(":")[0] for c in srt.parse(srt_path.read_text())] == ["S1", "S2", "S1", "S2"]


async def test_rttm_sink_output_parses_with_pyannote(conversation, anonymous_run, tmp_path):
    from sinks.rttm import RttmSink

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyannote.core import Annotation, Segment
        from pyannote.database.util import load_rttm
        from pyannote.metrics.diarization import DiarizationErrorRate

    audio, ref, _ = conversation
    path = tmp_path / "conv.rttm"
    sink = RttmSink(path, file_id="conv")
    for e in anonymous_run:
        await sink.consume(e)
    await sink.close()
    hyp = load_rttm(str(path))["conv"]
    assert set(hyp.labels()) == {"S1", "S2"}
    reference = Annotation(uri="conv")
    for k, (s, e, v) in enumerate(ref):
        reference[Segment(s / SR, e / SR), k] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # uem approximated from the extents
        der = DiarizationErrorRate(collar=0.5)(reference, hyp)
    assert der < 0.1
