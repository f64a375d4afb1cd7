"""VAD: segmenter timing rules (exact samples), webrtc/silero/none on synthetic signals, the node."""

import numpy as np
import pytest

from stream.errors import ConfigError
from stream.events import AudioChunk, EndOfStream, SpeechEnded, SpeechStarted
from stream.graph import Graph
from stream.node import Collect
from stream.resample import Resample
from stream.sources.array import ArraySource
from stream.vad import (
    Audio,
    End,
    Pause,
    Segmenter,
    SileroClassifier,
    Start,
    VadConfig,
    WebRtcClassifier,
    make_segmenter,
)
from stream.vad_node import VadNode
from tests.support.tts import espeak_ng, have_espeak, speech_with_pauses

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed (apt install espeak-ng)")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you get this message.",
    "It is going to rain tomorrow afternoon.",
]


class Scripted:
    """A classifier that replays fixed labels, one per 10 ms frame."""

    frame_samples = 160

    def __init__(self, labels):
        self.labels = np.asarray(labels, bool)

    def init_state(self):
        return 0

    def classify(self, frames, i):
        k = frames.shape[0]
        out = self.labels[i : i + k]
        return np.concatenate([out, np.zeros(k - out.shape[0], bool)]), i + k


def run_segmenter(seg, x, sizes=(1000,)):
    st = seg.init_state()
    out, pos, i = [], 0, 0
    while pos < x.shape[0]:
        k = sizes[i % len(sizes)]
        o, st = seg.step(x[pos : pos + k], st)
        out += o
        pos += k
        i += 1
    o, st = seg.flush(st)
    return out + o


def marks(out):
    return [o for o in out if not isinstance(o, Audio)]


def check_timeline(out, n):
    """Audio is contiguous from 0 to n, labelled speech exactly between Start and End."""
    pos, inside = 0, False
    for o in out:
        if isinstance(o, Audio):
            assert o.sample == pos and o.samples.shape[0] > 0
            assert o.speech == inside
            pos += o.samples.shape[0]
        elif isinstance(o, Start):
            assert not inside and o.sample == pos
            inside = True
        elif isinstance(o, Pause):  # a hint inside a segment, at the audio released so far
            assert inside and o.sample == pos
        else:
            assert inside and o.sample == pos
            inside = False
    assert pos == n and not inside


def test_timing_rules_exact():
    F = 160
    # 50 silent, 4 speech (too short), 20 silent, 30 speech, 10 silent (pause < min_silence),
    # 20 speech, 60 silent, then 5 speech at the very end.
    labels = [0] * 50 + [1] * 4 + [0] * 20 + [1] * 30 + [0] * 10 + [1] * 20 + [0] * 60 + [1] * 15
    cfg = VadConfig(pre_speech_pad_ms=100, hangover_ms=150, min_speech_ms=50, min_silence_ms=300)
    seg = Segmenter(Scripted(labels), cfg)
    x = np.zeros(len(labels) * F + 77, np.float32)  # a partial frame at the end
    for sizes in [(1000,), (1, 159, 161, 7, 3000), (x.shape[0],)]:
        out = run_segmenter(seg, x, sizes)
        check_timeline(out, x.shape[0])
        first_run = 74 * F  # first frame of the 30-frame run
        last_speech_end = (74 + 30 + 10 + 20) * F
        final_run = (134 + 60) * F
        assert marks(out) == [
            Start(first_run - 1600),
            End(last_speech_end + 2400, first_run - 1600),
            Start(final_run - 1600),
            End(x.shape[0], final_run - 1600),  # open at EOS, last frame speech: ends at the end
        ]


def test_pad_never_reaches_into_previous_segment():
    labels = [1] * 10 + [0] * 5 + [1] * 10
    seg = Segmenter(
        Scripted(labels), VadConfig(pre_speech_pad_ms=200, hangover_ms=0, min_speech_ms=10, min_silence_ms=50)
    )
    out = run_segmenter(seg, np.zeros(len(labels) * 160, np.float32))
    check_timeline(out, len(labels) * 160)
    assert marks(out) == [Start(0), End(1600, 0), Start(1600), End(4000, 1600)]  # pad clamped at 1600


def test_holdback_is_bounded():
    seg = Segmenter(Scripted([0] * 1000), VadConfig())
    st = seg.init_state()
    for _ in range(100):
        _, st = seg.step(np.zeros(1600, np.float32), st)
        assert st.held.shape[0] <= seg.lookahead_samples


@pytest.fixture(scope="module")
def speech():
    if not have_espeak():
        pytest.skip("espeak-ng not installed (apt install espeak-ng)")
    return speech_with_pauses([espeak_ng(s) for s in SENTENCES], [1.0, 1.5])


def assert_matches_reference(out, regions, slack):
    segs = [(o.start_sample, o.sample) for o in out if isinstance(o, End)]
    assert len(segs) == len(regions), segs
    for (s, e), (rs, re) in zip(segs, regions):
        assert rs - slack <= s <= rs + 1600, (s, rs)  # may start up to pad early, 100 ms late
        assert re - 1600 <= e <= re + slack, (e, re)


@needs_espeak
@pytest.mark.parametrize("kind", ["webrtc", "silero"])
def test_finds_sentences(speech, kind):
    x, regions = speech
    seg = make_segmenter(kind)
    # silero: few large chunks (torch dispatch per call is slow on a loaded 2-core box)
    out = run_segmenter(seg, x, (1234, 321) if kind == "webrtc" else (16000,))
    check_timeline(out, x.shape[0])
    assert_matches_reference(out, regions, slack=seg.pad + seg.hang + 1600)


@needs_espeak
def test_webrtc_chunking_invariant(speech):
    x, _ = speech
    seg = make_segmenter("webrtc")
    a = run_segmenter(seg, x, (x.shape[0],))
    b = run_segmenter(seg, x, (1, 480, 7000, 33))
    assert marks(a) == marks(b)
    np.testing.assert_array_equal(np.concatenate([o.samples for o in b if isinstance(o, Audio)]), x)


@needs_espeak
def test_silero_batched_equals_model_forward(speech):
    x, _ = speech
    clf = SileroClassifier()
    n = x.shape[0] // 512
    frames = x[: n * 512].reshape(n, 512)
    ref, _ = clf.reference_probabilities(frames[:60], clf.init_state())
    p1, st = clf.probabilities(frames[:25], clf.init_state())
    p2, _ = clf.probabilities(frames[25:60], st)
    # numpy STFT/conv/LSTM vs TorchScript: float32 summation order differs (observed max 1e-4)
    np.testing.assert_allclose(np.concatenate([p1, p2]), ref, atol=5e-4)


def _signals():
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3 // 2) / 16000
    return {
        "silence": np.zeros(t.shape, np.float32),
        "noise": (rng.standard_normal(t.shape) * 0.1).astype(np.float32),
        "tone": (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32),
        "chord": (0.1 * sum(np.sin(2 * np.pi * f * t) for f in (440, 554, 659))).astype(np.float32),
    }


@pytest.mark.parametrize("name", ["silence", "noise", "tone", "chord"])
def test_silero_rejects_non_speech(name):
    out = run_segmenter(make_segmenter("silero"), _signals()[name], (8000,))
    assert marks(out) == []


def test_webrtc_silence_is_not_speech():
    # webrtcvad flags stationary noise and tones as speech (bench/bench_vad.py measures it);
    # digital silence it must not.
    out = run_segmenter(make_segmenter("webrtc"), _signals()["silence"])
    assert marks(out) == []


def test_none_is_one_segment():
    x = np.zeros(12345, np.float32)
    out = run_segmenter(make_segmenter("none"), x, (999,))
    check_timeline(out, x.shape[0])
    assert marks(out) == [Start(0), End(12345, 0)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: WebRtcClassifier(aggressiveness=4),
        lambda: WebRtcClassifier(frame_ms=25),
        lambda: VadConfig(min_silence_ms=-1),
        lambda: make_segmenter("energy"),
        lambda: SileroClassifier(threshold=1.5),
    ],
)
def test_config_errors(make):
    with pytest.raises(ConfigError):
        make()


@needs_espeak
async def test_vad_node_in_graph(speech):
    x, regions = speech
    sink = Collect()
    graph = Graph(
        [
            ArraySource(x, 16000, stream_id="a", block=1600),
            ArraySource(x[: 16000 * 4], 16000, stream_id="b", block=999),
        ],
        [Resample(), VadNode.create("webrtc"), sink],
        bug_policy="raise",
    )
    await graph.run()
    for sid, n in (("a", x.shape[0]), ("b", 16000 * 4)):
        events = sink.of(sid)
        assert isinstance(events[-1], EndOfStream) and events[-1].sample == n
        pos, inside, segs = 0, False, []
        for e in events:
            if isinstance(e, AudioChunk):
                assert e.sample == pos and e.speech is inside
                pos = e.end_sample
            elif isinstance(e, SpeechStarted):
                assert e.sample == pos and not inside
                inside = True
            elif isinstance(e, SpeechEnded):
                assert e.sample == pos and inside
                segs.append((e.start_sample, e.sample))
                inside = False
        assert pos == n and not inside
        if sid == "a":
            assert len(segs) == len(regions)


def _loud_then_quiet(labels, loud_frames, F=160):
    """Audio whose first ``loud_frames`` frames are loud (-10 dB), the rest quiet (-70 dB)."""
    x = np.full(len(labels) * F, 10 ** (-70 / 20), np.float32)
    x[: loud_frames * F] = 10 ** (-10 / 20)
    return x


def test_backdating_counts_the_silence_from_where_the_energy_fell():
    """The classifier says speech 8 frames past the energy fall (its own hangover): backdating
    counts the min silence from the fall, by at most ``backdate_max_ms``; off, from its first silence."""
    F = 160
    labels = [0] * 10 + [1] * 30 + [0] * 60  # speech frames 10-39; the energy falls at frame 32
    x = _loud_then_quiet(labels, 32)
    x[: 10 * F] = 0.0
    base = VadConfig(pre_speech_pad_ms=0, hangover_ms=300, min_speech_ms=30, min_silence_ms=150)
    ends = {}
    for max_ms in (0, 50, 90):
        cfg = VadConfig(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, "backdate_max_ms": max_ms})
        out = run_segmenter(Segmenter(Scripted(labels), cfg), x)
        check_timeline(out, x.shape[0])
        (end,) = [o for o in out if isinstance(o, End)]
        ends[max_ms] = end.sample
    assert ends[0] == (40 + 15) * F  # confirmed 150 ms after the classifier's first silent frame
    assert ends[50] == (40 - 5 + 15) * F  # moved back 50 ms, not as far as the fall
    assert ends[90] == (32 + 15) * F  # from the fall (8 frames back, within 90 ms)


def test_backdating_leaves_a_loud_tail_alone():
    """Energy still loud where the classifier stops calling speech: nothing to backdate."""
    F = 160
    labels = [0] * 10 + [1] * 30 + [0] * 60
    x = _loud_then_quiet(labels, 40)
    x[: 10 * F] = 0.0
    cfg = VadConfig(pre_speech_pad_ms=0, hangover_ms=300, min_speech_ms=30, min_silence_ms=150, backdate_max_ms=90)
    (end,) = [o for o in run_segmenter(Segmenter(Scripted(labels), cfg), x) if isinstance(o, End)]
    assert end.sample == (40 + 15) * F


def test_the_hangover_counts_from_where_the_silence_run_starts():
    """Backdated run (the energy fell 8 frames before the classifier's first silence): the segment
    ends ``hangover_ms`` after the fall, not after the classifier's last speech frame."""
    F = 160
    labels = [0] * 10 + [1] * 30 + [0] * 60  # speech frames 10-39; the energy falls at frame 32
    x = _loud_then_quiet(labels, 32)
    x[: 10 * F] = 0.0
    cfg = VadConfig(pre_speech_pad_ms=0, hangover_ms=50, min_speech_ms=30, min_silence_ms=150, backdate_max_ms=90)
    out = run_segmenter(Segmenter(Scripted(labels), cfg), x)
    check_timeline(out, x.shape[0])
    (end,) = [o for o in out if isinstance(o, End)]
    assert end.sample == (32 + 5) * F
    off = VadConfig(pre_speech_pad_ms=0, hangover_ms=50, min_speech_ms=30, min_silence_ms=150, backdate_max_ms=0)
    (end,) = [o for o in run_segmenter(Segmenter(Scripted(labels), off), x) if isinstance(o, End)]
    assert end.sample == (40 + 5) * F  # no backdating: from the classifier's first silent frame


class Scripted30(Scripted):
    """Fixed labels, one per 30 ms frame (webrtc's frame, three 10 ms energy sub-frames)."""

    frame_samples = 480


def _steps_until(seg, x, mark_type, step=160):
    """Feed ``x`` in ``step``-sample blocks: (samples fed when the first ``mark_type`` came, all outputs)."""
    st, out, fed = seg.init_state(), [], None
    for pos in range(0, x.shape[0], step):
        o, st = seg.step(x[pos : pos + step], st)
        out += o
        if fed is None and any(isinstance(m, mark_type) for m in o):
            fed = pos + step
    o, st = seg.flush(st)
    return fed, out + o


def test_backdating_and_the_end_fall_on_10_ms_energy_sub_frames_of_a_30_ms_frame():
    """The energy falls 10 ms into frame 20 (30 ms frames, the last speech label): the run counts from
    there, and the hint and the end come as soon as quiet audio up to their samples has arrived, before
    the frame that holds that sample is classified."""
    S = 160
    labels = [0] * 5 + [1] * 16 + [0] * 29  # frames 5-20 speech
    x = np.full(len(labels) * 3 * S, 10 ** (-70 / 20), np.float32)
    x[5 * 3 * S : (20 * 3 + 1) * S] = 10 ** (-10 / 20)  # loud up to sub-frame 61 (10 ms into frame 20)
    cfg = VadConfig(pre_speech_pad_ms=0, hangover_ms=100, min_speech_ms=30, min_silence_ms=180, backdate_max_ms=90)
    fall = 61 * S
    fed, out = _steps_until(Segmenter(Scripted30(labels), cfg), x, End)
    check_timeline(out, x.shape[0])
    assert [m for m in marks(out)] == [Start(15 * S), End(fall + 100 * 16, 15 * S)]
    assert fed == fall + 180 * 16  # sample 12640 is inside frame 26 (12480-12960), not yet classified
    fed_hint, out = _steps_until(Segmenter(Scripted30(labels), cfg, pause_hints=True), x, Pause)
    assert fed_hint == fall + 100 * 16 and Pause(fall + 100 * 16, 15 * S) in out  # inside frame 23


def test_speech_resuming_in_the_unclassified_tail_stops_the_early_end():
    """Loud audio where the min silence would be confirmed: the quiet-tail rule does not end the
    segment; the classifier's frames decide (here: speech again, one segment)."""
    S = 160
    labels = [0] * 5 + [1] * 18 + [0] * 3 + [1] * 10 + [0] * 20  # a 90 ms classifier pause, frames 23-25
    x = np.full(len(labels) * 3 * S, 10 ** (-70 / 20), np.float32)
    x[5 * 3 * S : 61 * S] = 10 ** (-10 / 20)
    x[(61 + 17) * S : 36 * 3 * S] = 10 ** (-10 / 20)  # speech again 170 ms after the fall (frame 26)
    cfg = VadConfig(pre_speech_pad_ms=0, hangover_ms=100, min_speech_ms=30, min_silence_ms=180, backdate_max_ms=90)
    out = run_segmenter(Segmenter(Scripted30(labels), cfg), x, (160,))
    check_timeline(out, x.shape[0])
    ends = [m for m in marks(out) if isinstance(m, End)]
    assert len(ends) == 1 and ends[0].sample > 36 * 3 * S  # one segment, ended after the second burst


@pytest.mark.parametrize("sizes", [(1000,), (160,), (320, 1, 479)])
def test_pause_hints_come_once_per_silence_run_and_an_end_follows_at_their_sample_with_no_audio_between(sizes):
    """(A hint is checked at the end of each step: one step that holds the whole run has none.)"""
    F = 160
    # speech 20-59, a 12-frame pause (under min silence: speech resumes), speech 72-99, then silence
    labels = [0] * 20 + [1] * 40 + [0] * 12 + [1] * 28 + [0] * 40
    x = np.zeros(len(labels) * F, np.float32)
    cfg = VadConfig(pre_speech_pad_ms=0, hangover_ms=80, min_speech_ms=30, min_silence_ms=200, backdate_max_ms=0)
    out = run_segmenter(Segmenter(Scripted(labels), cfg, pause_hints=True), x, sizes)
    check_timeline(out, x.shape[0])
    marks = [o for o in out if not isinstance(o, Audio)]
    assert marks == [Start(20 * F), Pause(68 * F, 20 * F), Pause(108 * F, 20 * F), End(108 * F, 20 * F)]
    i = out.index(Pause(108 * F, 20 * F))
    assert out[i + 1] == End(108 * F, 20 * F)  # no audio between the hint and its end
    plain = run_segmenter(Segmenter(Scripted(labels), cfg), x, sizes)
    assert [o for o in plain if not isinstance(o, Audio)] == [Start(20 * F), End(108 * F, 20 * F)]
    assert Segmenter(Scripted(labels), cfg).with_pause_hints().pause_hints


def test_no_pause_hint_when_the_hangover_reaches_the_min_silence():
    """hangover >= min silence: the end is where the silence is confirmed, unknown before; no hint."""
    labels = [0] * 20 + [1] * 40 + [0] * 40
    x = np.zeros(len(labels) * 160, np.float32)
    cfg = VadConfig(pre_speech_pad_ms=0, hangover_ms=200, min_speech_ms=30, min_silence_ms=200, backdate_max_ms=0)
    out = run_segmenter(Segmenter(Scripted(labels), cfg, pause_hints=True), x)
    assert not [o for o in out if isinstance(o, Pause)] and [o for o in out if isinstance(o, End)]


@needs_espeak
async def test_the_vad_nodes_pause_hints_are_internal_sinks_never_write_them(speech, tmp_path):
    """VadNode sends SpeechPausing before (most) SpeechEnded at the same sample; a JSONL sink skips
    it, a Collect keeps it only when asked (keep_internal)."""
    import json

    from sinks.jsonl import JsonlSink
    from sinks.node import SinkNode
    from stream.events import SpeechPausing

    x, _ = speech
    seen, plain = Collect(keep_internal=True), Collect()
    path = tmp_path / "out.jsonl"
    graph = Graph(
        [ArraySource(x, 16000, stream_id="a", block=320)],
        [Resample(), VadNode.create("webrtc"), seen, plain, SinkNode(JsonlSink(path))],
        bug_policy="raise",
    )
    await graph.run()
    hints = [e for e in seen.events if isinstance(e, SpeechPausing)]
    ends = [e for e in seen.events if isinstance(e, SpeechEnded)]
    assert hints and {e.sample for e in ends} <= {e.sample for e in hints}
    assert not any(isinstance(e, SpeechPausing) for e in plain.events)
    types = {json.loads(line)["type"] for line in path.read_text().splitlines()}
    assert "speech_ended" in types and "speech_pausing" not in types
    off = Collect(keep_internal=True)
    graph = Graph(
        [ArraySource(x, 16000, stream_id="a", block=320)], [Resample(), VadNode(make_segmenter(), hints=False), off]
    )
    await graph.run()
    assert not any(isinstance(e, SpeechPausing) for e in off.events)
