"""Caption timing helpers and the SRT / WebVTT sinks, checked with real parsers (srt, webvtt-py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import srt
import webvtt

from sinks import CaptionLimits, SrtSink, VttSink, cues_for_final
from sinks.captions import format_timestamp, samples_to_ms, wrap_words
from stream.events import FinalTranscript, PartialTranscript, SpeechStarted, Word

RATE = 16_000
REPO = Path(__file__).resolve().parents[2]


def words_from(text: str, start_s: float, per_word_s: float = 0.4, speaker: str | None = None):
    out, t = [], int(start_s * RATE)
    for w in text.split():
        out.append(Word(w, t, t + int(per_word_s * RATE * 0.8), speaker=speaker))
        t += int(per_word_s * RATE)
    return tuple(out)


def final(seg: int, text: str, start_s: float, *, speaker=None, with_words=True, stream="s0", per_word_s=0.4):
    words = words_from(text, start_s, per_word_s) if with_words else ()
    end = words[-1].end_sample if words else int((start_s + per_word_s * len(text.split())) * RATE)
    return FinalTranscript(
        stream,
        int(start_s * RATE),
        segment_id=f"seg-{seg}",
        revision=1,
        text=text,
        end_sample=end,
        words=words,
        speaker=speaker,
    )


def parse_srt(path: Path) -> list[srt.Subtitle]:
    return list(srt.parse(path.read_text(encoding="utf-8")))


# ----------------------------------------------------------------------------- helpers


def test_timestamps_format_and_round():
    assert format_timestamp(0, ",") == "00:00:00,000"
    assert format_timestamp(3_723_004, ".") == "01:02:03.004"
    assert format_timestamp(100 * 3600 * 1000, ",") == "100:00:00,000"
    assert samples_to_ms(8, RATE) == 1  # 0.5 ms rounds half up
    assert samples_to_ms(7, RATE) == 0
    # 10 hours of samples stay exact: integer arithmetic, no float drift
    assert samples_to_ms(10 * 3600 * RATE + 16, RATE) == 10 * 3600 * 1000 + 1
    with pytest.raises(ValueError):
        format_timestamp(-1, ",")


def test_wrap_words_greedy_and_long_word():
    assert wrap_words("aa bb cc".split(), 5) == ["aa bb", "cc"]
    assert wrap_words(["abcdefghij", "x"], 4) == ["abcdefghij", "x"]
    assert wrap_words([], 10) == []


def test_long_final_splits_within_limits_and_keeps_word_times():
    text = " ".join(f"word{i}" for i in range(40))
    f = final(1, text, 2.0, per_word_s=0.5)
    limits = CaptionLimits(max_chars_per_line=20, max_lines=2, max_duration_ms=4000)
    cues = cues_for_final(f, limits)
    assert len(cues) > 1
    assert " ".join(" ".join(c.lines) for c in cues) == text
    for c in cues:
        assert len(c.lines) <= 2 and all(len(line) <= 20 for line in c.lines)
        assert (c.end_sample - c.start_sample) * 1000 // RATE <= 4000
    assert cues[0].start_sample == f.words[0].start_sample
    assert cues[-1].end_sample == f.words[-1].end_sample
    assert all(a.end_sample <= b.start_sample for a, b in zip(cues, cues[1:]))
    assert [c.ident for c in cues] == [f"seg-1.{k}" for k in range(len(cues))]


def test_final_without_words_shares_span_by_length():
    f = final(2, "one two three four five six seven eight nine ten " * 3, 1.0, with_words=False)
    cues = cues_for_final(f, CaptionLimits(max_chars_per_line=30, max_lines=1))
    assert len(cues) > 1
    assert cues[0].start_sample == f.sample and cues[-1].end_sample == f.end_sample
    assert all(a.end_sample == b.start_sample for a, b in zip(cues, cues[1:]))


def test_speaker_change_inside_a_final_starts_a_new_cue():
    words = words_from("hello there", 0.0, speaker="A") + words_from("general kenobi", 1.0, speaker="B")
    f = FinalTranscript(
        "s", 0, segment_id="x", text="hello there general kenobi", end_sample=words[-1].end_sample, words=words
    )
    cues = cues_for_final(f)
    assert [(c.speaker, c.lines) for c in cues] == [("A", ("hello there",)), ("B", ("general kenobi",))]


def test_empty_final_has_no_cue():
    assert cues_for_final(FinalTranscript("s", 0, text="   ", end_sample=100)) == []


def test_words_outside_the_segment_are_clamped():
    w = (Word("early", 0, 50), Word("late", 900, 5000))
    f = FinalTranscript("s", 100, text="early late", end_sample=1000, words=w)
    cues = cues_for_final(f)
    assert cues[0].start_sample == 100 and cues[-1].end_sample == 1000


def test_bad_limits_raise():
    with pytest.raises(ValueError):
        CaptionLimits(max_chars_per_line=0)


# ----------------------------------------------------------------------------- SRT / VTT sinks


async def test_srt_is_valid_after_every_final_before_close(tmp_path):
    path = tmp_path / "out.srt"
    sink = SrtSink(path)
    assert parse_srt(path) == []
    texts = ["the quick brown fox", "jumps over", "the lazy dog"]
    for i, text in enumerate(texts):
        await sink.consume(PartialTranscript("s0", int(i * 2 * RATE), segment_id=f"seg-{i}", text=text[:3]))
        await sink.consume(final(i, text, i * 2.0, speaker="S1" if i == 1 else None))
        subs = parse_srt(path)  # read while the sink is still open
        assert [s.content for s in subs][-1] == ("S1: " if i == 1 else "") + text
        assert len(subs) == i + 1
    await sink.close()
    subs = parse_srt(path)
    assert [s.index for s in subs] == [1, 2, 3]
    assert subs[0].start == timedelta(0) and subs[2].start == timedelta(seconds=4)
    assert all(s.end > s.start for s in subs)


async def test_vtt_is_valid_after_every_final_before_close(tmp_path):
    path = tmp_path / "out.vtt"
    sink = VttSink(path)
    assert len(webvtt.read(str(path)).captions) == 0  # the header alone is a valid file
    await sink.consume(SpeechStarted("s0", 0))
    await sink.consume(final(0, "a < b & c > d", 0.0, speaker="Ann Lee"))
    caps = webvtt.read(str(path)).captions
    assert len(caps) == 1
    assert caps[0].voice == "Ann Lee"
    assert caps[0].raw_text == "<v Ann Lee>a &lt; b &amp; c &gt; d"
    assert caps[0].identifier == "seg-0.0"
    await sink.consume(final(1, "no speaker here", 3.0))
    caps = webvtt.read(str(path)).captions
    assert [c.text for c in caps][-1] == "no speaker here" and caps[-1].voice is None
    await sink.close()
    await sink.close()  # idempotent
    assert caps[1].start == "00:00:03.000"


async def test_sinks_filter_by_stream_id(tmp_path):
    sink = SrtSink(tmp_path / "a.srt", stream_id="a")
    await sink.consume(final(0, "from a", 0.0, stream="a"))
    await sink.consume(final(1, "from b", 1.0, stream="b"))
    await sink.close()
    assert [s.content for s in parse_srt(tmp_path / "a.srt")] == ["from a"]


def test_unwritable_caption_path_raises_at_start(tmp_path):
    with pytest.raises(OSError):
        SrtSink(tmp_path / "missing-dir" / "x.srt")


KILL_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from sinks import SrtSink, VttSink, RttmSink, JsonlSink
    from stream.events import FinalTranscript, SpeakerTurn, Word
    out = sys.argv[1]
    async def main():
        sinks = [SrtSink(out + "/k.srt"), VttSink(out + "/k.vtt"), RttmSink(out + "/k.rttm"),
                 RttmSink(out + "/k_append.rttm", mode="append"), JsonlSink(out + "/k.jsonl")]
        for i in range(1000):
            start = i * 32000
            words = tuple(Word(f"w{i}_{k}", start + k * 4000, start + k * 4000 + 3000) for k in range(30))
            ev = FinalTranscript("s0", start, segment_id=f"seg-{i}", revision=1,
                                 text=" ".join(w.text for w in words), end_sample=words[-1].end_sample, words=words)
            turn = SpeakerTurn("s0", start, turn_id=f"t{i}", speaker=f"S{i % 2}", end_sample=start + 30000)
            for s in sinks:
                await s.consume(ev)
                await s.consume(turn)
            if i == 2:
                print("ready", flush=True)
                time.sleep(60)  # killed here, sinks never closed
    asyncio.run(main())
    """
)


def test_files_are_valid_after_sigkill_mid_stream(tmp_path):
    from pyannote.database.util import load_rttm

    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    subs = parse_srt(tmp_path / "k.srt")
    caps = webvtt.read(str(tmp_path / "k.vtt")).captions
    # 3 finals of 30 words each, split into caption-sized cues; every word made it to disk
    assert len(subs) == len(caps) > 3
    assert " ".join(s.content for s in subs).split() == [f"w{i}_{k}" for i in range(3) for k in range(30)]
    assert [c.text for c in caps] == [s.content for s in subs]
    for name in ("k.rttm", "k_append.rttm"):
        ann = load_rttm(str(tmp_path / name))["k" if name == "k.rttm" else "k_append"]
        assert len(list(ann.itertracks())) == 3
    assert len((tmp_path / "k.jsonl").read_text().splitlines()) == 6
    assert not os.path.exists(tmp_path / "k.rttm.tmp")
