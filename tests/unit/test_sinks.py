"""Console, JSONL and RTTM sinks, and failure isolation (real /dev/full, real broken pipe)."""

from __future__ import annotations

import io
import json
import os

import jsonschema
import numpy as np
import pytest

from sinks import ConsoleSink, JsonlSink, JsonlStdoutSink, RttmSink, SrtSink, open_jsonl
from sinks.console import ERASE_LINE, format_clock
from stream.events import (
    SCHEMA_PATH,
    AudioChunk,
    EndOfStream,
    ErrorEvent,
    FinalTranscript,
    PartialTranscript,
    SpeakerTurn,
    SpeechEnded,
    SpeechStarted,
    Word,
    event_from_json,
)

RATE = 16_000


def partial(seg, rev, text, stream="s0"):
    return PartialTranscript(stream, 16000, segment_id=seg, revision=rev, text=text, end_sample=32000)


def final(seg, text, speaker=None, stream="s0", start=16000, end=48000):
    return FinalTranscript(stream, start, segment_id=seg, revision=9, text=text, end_sample=end, speaker=speaker)


# ----------------------------------------------------------------------------- console


def test_format_clock():
    assert format_clock(0, RATE) == "00:00:00.00"
    assert format_clock(RATE * 3725 + 8000, RATE) == "01:02:05.50"


async def test_console_tty_rewrites_partial_and_commits_final():
    out = io.StringIO()
    sink = ConsoleSink(out, tty=True, width=40)
    await sink.consume(partial("a", 1, "the quick"))
    await sink.consume(partial("a", 2, "the quick brown"))
    await sink.consume(final("a", "the quick brown fox", speaker="S1"))
    await sink.consume(partial("b", 1, "x" * 100))  # longer than the terminal: cut, never wraps
    await sink.close()
    text = out.getvalue()
    assert text.startswith(ERASE_LINE + "... the quick" + ERASE_LINE + "... the quick brown")
    assert ERASE_LINE + "[00:00:01.00 -> 00:00:03.00] S1: the quick brown fox\n" in text
    last = text.rsplit(ERASE_LINE, 1)[1]
    assert len(last.rstrip("\n")) <= 39 and last.endswith("\n")  # last partial left visible at close


async def test_console_plain_mode_prints_finals_only():
    out, err = io.StringIO(), io.StringIO()
    sink = ConsoleSink(out, tty=False, err=err)
    await sink.consume(partial("a", 1, "hel"))
    await sink.consume(final("a", "hello"))
    await sink.consume(final("b", "  "))
    await sink.consume(SpeechEnded("s0", 32000, start_sample=16000))
    await sink.consume(ErrorEvent("s0", 5, code="decode", message="bad frame"))
    await sink.consume(ErrorEvent("s0", 9, code="non_finite_samples", message="3 NaN/inf", fatal=False))
    await sink.close()
    # stdout (a pipe) carries finals only; errors and warnings go to stderr
    assert out.getvalue() == "[00:00:01.00 -> 00:00:03.00] hello\n"
    assert err.getvalue() == "error [decode]: bad frame\nerror [non_finite_samples]: 3 NaN/inf\n"
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


async def test_console_can_leave_fatal_errors_to_the_caller():
    for show_fatal, expected in (
        (True, "error [x]: gone (stream stopped)\nerror [w]: hm\n"),
        (False, "error [w]: hm\n"),
    ):
        err = io.StringIO()
        sink = ConsoleSink(io.StringIO(), tty=False, err=err, show_fatal=show_fatal)
        await sink.consume(ErrorEvent("s0", 5, code="x", message="gone", fatal=True))
        await sink.consume(ErrorEvent("s0", 9, code="w", message="hm", fatal=False))
        await sink.close()
        assert err.getvalue() == expected


async def test_console_vad_lines_and_stream_prefix():
    out = io.StringIO()
    sink = ConsoleSink(out, tty=False, show_vad=True)
    await sink.consume(SpeechEnded("mic", 32000, start_sample=16000))
    await sink.consume(final("a", "hi", stream="file"))
    assert out.getvalue().splitlines() == [
        "[00:00:01.00 -> 00:00:02.00] (speech)",
        "file [00:00:01.00 -> 00:00:03.00] hi",
    ]


def test_console_detects_tty_from_stream():
    assert ConsoleSink(io.StringIO()).tty is False


# ----------------------------------------------------------------------------- JSONL


def all_events():
    chunk = AudioChunk("s0", 0, samples=np.zeros(160, np.float32))
    return [
        chunk,
        SpeechStarted("s0", 3200),
        partial("seg-0", 1, "hel"),
        FinalTranscript(
            "s0",
            16000,
            segment_id="seg-0",
            revision=2,
            text="hello",
            end_sample=24000,
            words=(Word("hello", 16000, 24000, 0.9),),
        ),
        SpeechEnded("s0", 32000, start_sample=3200),
        SpeakerTurn("s0", 3200, turn_id="t0", speaker="S1", end_sample=32000),
        ErrorEvent("s0", 32000, code="x", message="y"),
        EndOfStream("s0", 32000),
    ]


async def test_jsonl_file_round_trips_and_validates(tmp_path):
    schema = json.loads(SCHEMA_PATH.read_text())
    path = tmp_path / "ev.jsonl"
    sink = JsonlSink(path)
    events = all_events()
    for i, ev in enumerate(events):
        await sink.consume(ev)
        assert len(path.read_text().splitlines()) == max(i, 0)  # on disk per line, before close; chunk skipped
    await sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == len(events) - 1
    for line, ev in zip(lines, events[1:]):
        jsonschema.validate(json.loads(line), schema)
        assert event_from_json(line) == ev


async def test_jsonl_stdout_flushes_each_line(tmp_path):
    class CountingIO(io.StringIO):
        flushes = 0

        def flush(self):
            self.flushes += 1
            super().flush()

    out = CountingIO()
    sink = JsonlStdoutSink(out, include_audio=True)
    for ev in all_events():
        await sink.consume(ev)
    assert out.flushes == len(all_events())
    assert json.loads(out.getvalue().splitlines()[0])["type"] == "audio_chunk"
    await sink.close()
    assert isinstance(open_jsonl("-", fsync=True), JsonlStdoutSink)
    file_sink = open_jsonl(tmp_path / "x.jsonl")
    assert isinstance(file_sink, JsonlSink)
    await file_sink.close()


async def test_fsync_option_writes(tmp_path):
    sink = JsonlSink(tmp_path / "f.jsonl", fsync=True)
    await sink.consume(SpeechStarted("s0", 1))
    await sink.close()
    assert (tmp_path / "f.jsonl").read_text().count("\n") == 1


# ----------------------------------------------------------------------------- RTTM


def turn(tid, speaker, start_s, end_s, rev=0, stream="s0"):
    return SpeakerTurn(
        stream, int(start_s * RATE), turn_id=tid, speaker=speaker, end_sample=int(end_s * RATE), revision=rev
    )


@pytest.mark.parametrize("mode", ["rewrite", "append"])
async def test_rttm_parsed_by_pyannote_with_revisions(tmp_path, mode):
    from pyannote.database.util import load_rttm

    path = tmp_path / "meeting.rttm"
    sink = RttmSink(path, mode=mode)
    assert load_rttm(str(path)) == {}
    await sink.consume(turn("t1", "S1", 0.5, 2.0))
    await sink.consume(turn("t2", "speaker two", 2.5, 4.0))
    await sink.consume(turn("t3", "S1", 4.0, 4.0))  # empty turn: skipped
    await sink.consume(turn("t1", "S2", 0.5, 2.0, rev=1))  # relabelled
    await sink.consume(turn("t1", "S9", 0.5, 2.0, rev=0))  # stale revision: ignored
    before_close = {(s.start, s.end, lbl) for s, _, lbl in load_rttm(str(path))["meeting"].itertracks(yield_label=True)}
    first = "S2" if mode == "rewrite" else "S1"
    assert before_close == {(0.5, 2.0, first), (2.5, 4.0, "speaker_two")}
    await sink.close()
    ann = load_rttm(str(path))["meeting"]
    assert {(s.start, s.end, lbl) for s, _, lbl in ann.itertracks(yield_label=True)} == {
        (0.5, 2.0, "S2"),
        (2.5, 4.0, "speaker_two"),
    }
    assert path.read_text().splitlines()[0] == "SPEAKER meeting 1 0.500 1.500 <NA> <NA> S2 <NA> <NA>"


def test_rttm_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="rewrite"):
        RttmSink(tmp_path / "never-written.rttm", mode="sideways")
    assert not (tmp_path / "never-written.rttm").exists()


# ----------------------------------------------------------------------------- failure isolation


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_disk_full_disables_only_that_sink(tmp_path, caplog):
    failed = []
    full = JsonlSink("/dev/full", on_error=lambda s, e: failed.append((s, e)))
    good = SrtSink(tmp_path / "ok.srt")
    for ev in (final("a", "first"), final("b", "second", stream="s1")):
        for sink in (full, good):
            await sink.consume(ev)  # never raises
    await full.close()
    await good.close()
    assert len(failed) == 1 and failed[0][0] is full
    assert isinstance(full.failed, OSError) and full.failed.errno == 28  # ENOSPC
    assert good.failed is None
    assert (tmp_path / "ok.srt").read_text().count("-->") == 2


async def test_broken_pipe_is_logged_once_and_sink_disabled(caplog):
    r, w = os.pipe()
    os.close(r)
    out = os.fdopen(w, "w")
    sink = ConsoleSink(out, tty=False)
    with caplog.at_level("ERROR", logger="speechstream.sinks"):
        await sink.consume(final("a", "one"))
        await sink.consume(final("a", "two"))
        await sink.close()
    assert isinstance(sink.failed, BrokenPipeError)
    assert len(caplog.records) == 1 and "console sink failed" in caplog.records[0].getMessage()
    try:
        out.close()
    except BrokenPipeError:
        pass  # the unflushed line cannot go anywhere


async def test_bug_in_a_sink_is_not_swallowed():
    class Buggy(ConsoleSink):
        def handle(self, event):
            raise KeyError("bug")

    with pytest.raises(KeyError):
        await Buggy(io.StringIO()).consume(final("a", "x"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_failing_sink_in_a_graph_leaves_other_sinks_and_streams_running(tmp_path):
    from sinks.node import SinkNode
    from stream.graph import Graph
    from stream.node import FanOut
    from stream.sources.array import ArraySource

    failed = []
    full = JsonlSink("/dev/full", on_error=lambda s, e: failed.append(e))
    good = JsonlSink(tmp_path / "good.jsonl", include_audio=True)
    sources = [ArraySource(np.zeros(16000, np.float32), 16000, stream_id=sid, block=1600) for sid in ("a", "b")]
    graph = Graph(sources=sources, nodes=[FanOut([SinkNode(full), SinkNode(good)])])
    await graph.run(timeout_s=30)
    assert len(failed) == 1 and full.closed and good.closed
    events = [json.loads(line) for line in (tmp_path / "good.jsonl").read_text().splitlines()]
    for sid in ("a", "b"):
        mine = [e for e in events if e["stream_id"] == sid]
        assert sum(e["num_samples"] for e in mine if e["type"] == "audio_chunk") == 16000
        assert mine[-1]["type"] == "end_of_stream"
