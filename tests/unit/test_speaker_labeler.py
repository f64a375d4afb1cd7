"""SpeakerLabeler: words and finals get the speaker of their turn; finals wait a bounded time."""

from stream.diarize import SpeakerLabeler, label_words
from stream.events import EndOfStream, FinalTranscript, PartialTranscript, SpeakerTurn, SpeechEnded, Word
from stream.node import RunContext

SR = 16000


def turn(tid, s, e, spk, rev=0):
    return SpeakerTurn("s", s, turn_id=tid, speaker=spk, end_sample=e, revision=rev)


def final(s, e, words):
    return FinalTranscript("s", s, segment_id=f"g{s}", text=" ".join(w.text for w in words), end_sample=e, words=words)


def test_label_words_by_overlap_nearest_and_majority():
    turns = [turn("t0", 0, 16000, "A"), turn("t1", 16000, 40000, "B")]
    words = (Word("x", 1000, 5000), Word("y", 14000, 20000), Word("z", 21000, 30000), Word("w", 50000, 52000))
    out, seg = label_words(words, turns)
    assert [w.speaker for w in out] == ["A", "B", "B", "B"]  # y overlaps B more; w is nearest to B
    assert seg == "B"
    assert label_words(words, []) == (words, None)


async def run_labeler(events, max_hold_ms=2000):
    """Feed events straight into the node; return what it pushed, in order."""
    lab = SpeakerLabeler(max_hold_ms=max_hold_ms)

    class Sink:
        def __init__(self):
            self.pushed = []

        async def put(self, item):
            self.pushed.append(item)

        def put_control(self, frame):
            pass

    sink = Sink()
    lab.bind(sink, RunContext(spawn=None))
    for e in events:
        await lab.receive(e)
    return sink.pushed


async def test_final_waits_for_its_turns_then_is_labelled():
    f = final(0, 16000, (Word("hi", 1000, 8000), Word("there", 9000, 15000)))
    pushed = await run_labeler([turn("t0", 0, 8000, "A"), f, turn("t0", 0, 16000, "A", 1)])
    kinds = [type(p).__name__ for p in pushed]
    assert kinds == ["SpeakerTurn", "SpeakerTurn", "FinalTranscript"]  # held until covered
    got = pushed[-1]
    assert got.speaker == "A" and [w.speaker for w in got.words] == ["A", "A"]


async def test_final_is_released_after_max_hold_without_turns():
    f = final(0, 16000, (Word("hi", 1000, 8000),))
    later = PartialTranscript("s", 40000, segment_id="g2", text="x", end_sample=48000)
    pushed = await run_labeler([turn("t0", 0, 8000, "A"), f, later], max_hold_ms=1000)
    assert [type(p).__name__ for p in pushed] == ["SpeakerTurn", "FinalTranscript", "PartialTranscript"]
    assert pushed[1].speaker == "A"


async def test_speech_end_releases_and_eos_flushes():
    f1 = final(0, 16000, (Word("a", 0, 8000),))
    pushed = await run_labeler([turn("t0", 0, 9000, "A"), f1, SpeechEnded("s", 16000, start_sample=0)])
    assert isinstance(pushed[1], FinalTranscript)
    f2 = final(20000, 30000, (Word("b", 20000, 30000),))
    pushed = await run_labeler([turn("t1", 20000, 25000, "B"), f2, EndOfStream("s", 30000)])
    assert [type(p).__name__ for p in pushed] == ["SpeakerTurn", "FinalTranscript", "EndOfStream"]
    assert pushed[1].speaker == "B"


async def test_relabelled_turn_wins():
    f = final(0, 8000, (Word("a", 0, 8000),))
    pushed = await run_labeler([turn("t0", 0, 4000, "S2"), turn("t0", 0, 8000, "S1", 1), f])
    assert pushed[-1].speaker == "S1"
