"""Golden SRT / WebVTT for a fixed event sequence; both files also pass real parsers.

Regenerate the golden files after an intended format change with:
    SPEECHSTREAM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/golden/test_golden_captions.py
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import srt
import webvtt

from sinks import CaptionLimits, SrtSink, VttSink
from stream.events import EndOfStream, FinalTranscript, PartialTranscript, SpeechEnded, SpeechStarted, Word

HERE = Path(__file__).parent
RATE = 16_000


def _words(text: str, start: int, step: int) -> tuple[Word, ...]:
    return tuple(Word(w, start + i * step, start + i * step + step * 3 // 4) for i, w in enumerate(text.split()))


def event_sequence():
    long_text = (
        "streaming speech recognition turns audio into text while you talk and every final "
        "caption is written to disk as soon as it is ready"
    )
    w0 = _words("hello and welcome to the stream", 9_600, 4_000)
    w1 = _words(long_text, 120_000, 5_600)
    return [
        SpeechStarted("s0", 9_600),
        PartialTranscript("s0", 9_600, segment_id="seg-0", revision=1, text="hello and", end_sample=20_000),
        FinalTranscript(
            "s0",
            9_600,
            segment_id="seg-0",
            revision=2,
            text="hello and welcome to the stream",
            end_sample=w0[-1].end_sample,
            words=w0,
        ),
        SpeechEnded("s0", 40_000, start_sample=9_600),
        SpeechStarted("s0", 120_000),
        FinalTranscript(
            "s0",
            120_000,
            segment_id="seg-1",
            revision=5,
            text=long_text,
            end_sample=w1[-1].end_sample,
            words=w1,
            speaker="Alice",
        ),
        # no word timestamps, reserved characters, a speaker name with spaces
        FinalTranscript(
            "s0",
            400_000,
            segment_id="seg-2",
            revision=1,
            text="x < y & y > z -- right?",
            end_sample=440_000,
            speaker="Bob & Co",
        ),
        # past one hour: stream time in samples, no drift
        FinalTranscript(
            "s0", 3_725 * RATE + 8, segment_id="seg-3", revision=1, text="still here", end_sample=3_726 * RATE + 12_345
        ),
        EndOfStream("s0", 3_727 * RATE),
    ]


async def _write(tmp_path: Path) -> tuple[Path, Path]:
    limits = CaptionLimits(max_chars_per_line=32, max_lines=2, max_duration_ms=5000)
    srt_path, vtt_path = tmp_path / "golden.srt", tmp_path / "golden.vtt"
    sinks = [SrtSink(srt_path, limits=limits), VttSink(vtt_path, limits=limits)]
    for ev in event_sequence():
        for s in sinks:
            await s.consume(ev)
    for s in sinks:
        await s.close()
    return srt_path, vtt_path


async def test_golden_srt_and_vtt(tmp_path):
    srt_path, vtt_path = await _write(tmp_path)
    got_srt, got_vtt = srt_path.read_text(encoding="utf-8"), vtt_path.read_text(encoding="utf-8")
    if os.environ.get("SPEECHSTREAM_UPDATE_GOLDEN") == "1":
        (HERE / "captions.srt").write_text(got_srt, encoding="utf-8")
        (HERE / "captions.vtt").write_text(got_vtt, encoding="utf-8")
    assert got_srt == (HERE / "captions.srt").read_text(encoding="utf-8")
    assert got_vtt == (HERE / "captions.vtt").read_text(encoding="utf-8")


def test_golden_files_parse():
    subs = list(srt.parse((HERE / "captions.srt").read_text(encoding="utf-8")))
    caps = webvtt.read(str(HERE / "captions.vtt")).captions
    assert len(subs) == len(caps) >= 5
    assert [srt.timedelta_to_srt_timestamp(s.start).replace(",", ".") for s in subs] == [c.start for c in caps]
    assert subs[-1].content == "still here" and caps[-1].start == "01:02:05.001"
    assert {c.voice for c in caps} == {None, "Alice", "Bob &amp; Co"}
    assert all(s.end > s.start for s in subs)
