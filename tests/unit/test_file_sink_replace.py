"""File sinks never truncate an existing file up front: a temporary file beside it replaces it with
the first record (or at a clean close), and a failed or fatal run leaves it as it was (issue 21)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import webvtt

from sinks import JsonlSink, RttmSink, SrtSink, VttSink
from stream.events import ErrorEvent, FinalTranscript, SpeakerTurn, SpeechStarted

OLD = "precious old contents\n"


def _parts(d: Path) -> list[Path]:
    return sorted(d.glob(".*.part"))


def _final(i: int = 0) -> FinalTranscript:
    return FinalTranscript("s", i * 16000, segment_id=f"s-{i}", text="hello world", end_sample=i * 16000 + 8000)


@pytest.mark.parametrize("cls", [SrtSink, VttSink])
async def test_captions_replace_an_existing_file_with_their_first_final(tmp_path, cls):
    path = tmp_path / "c.txt"
    path.write_text(OLD)
    sink = cls(path)
    await sink.consume(SpeechStarted("s", 0))
    assert path.read_text() == OLD and len(_parts(tmp_path)) == 1  # nothing to show yet: the old file stands
    await sink.consume(_final())
    assert "hello world" in path.read_text() and _parts(tmp_path) == []
    await sink.consume(_final(1))
    await sink.close()
    assert path.read_text().count("hello world") == 2
    if cls is VttSink:
        assert len(webvtt.read(str(path)).captions) == 2


async def test_jsonl_replaces_with_its_first_line_and_a_failed_start_keeps_the_old_file(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(OLD)
    JsonlSink(path).release()  # what the CLI does when the graph cannot start
    assert path.read_text() == OLD and _parts(tmp_path) == []
    sink = JsonlSink(path)
    await sink.consume(SpeechStarted("s", 0))
    assert path.read_text().startswith('{"type":"speech_started"')
    await sink.close()


async def test_a_fatal_error_before_any_record_keeps_the_old_file(tmp_path):
    srt, rttm = tmp_path / "c.srt", tmp_path / "s.rttm"
    for p in (srt, rttm):
        p.write_text(OLD)
    sinks = [SrtSink(srt), RttmSink(rttm)]
    for s in sinks:
        await s.consume(ErrorEvent("s", 0, code="bad_audio", message="broken", fatal=True))
        await s.close()
    assert srt.read_text() == OLD and rttm.read_text() == OLD and _parts(tmp_path) == []


async def test_a_clean_run_without_records_leaves_a_valid_empty_file(tmp_path):
    paths = {cls: tmp_path / f"{cls.__name__}.out" for cls in (SrtSink, VttSink, JsonlSink, RttmSink)}
    for cls, p in paths.items():
        p.write_text(OLD)
        p.chmod(0o600)
        await cls(p).close()
    assert [paths[c].read_text() for c in (SrtSink, VttSink, JsonlSink, RttmSink)] == ["", "WEBVTT\n\n", "", ""]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in paths.values())  # permissions kept
    assert _parts(tmp_path) == []


async def test_rttm_rewrite_keeps_the_old_file_until_the_first_turn(tmp_path):
    path = tmp_path / "s.rttm"
    path.write_text(OLD)
    sink = RttmSink(path)
    assert path.read_text() == OLD
    await sink.consume(SpeakerTurn("s", 0, turn_id="t0", speaker="A", end_sample=16000))
    assert path.read_text().startswith("SPEAKER s 1 0.000 1.000")
    await sink.close()
    assert _parts(tmp_path) == [] and not (tmp_path / "s.rttm.tmp").exists()


async def test_a_symlinked_output_keeps_its_link(tmp_path):
    real = tmp_path / "real.srt"
    real.write_text(OLD)
    link = tmp_path / "link.srt"
    link.symlink_to(real)
    sink = SrtSink(link)
    await sink.consume(_final())
    await sink.close()
    assert link.is_symlink() and "hello world" in real.read_text()


@pytest.mark.parametrize("cls", [SrtSink, VttSink, JsonlSink, RttmSink])
async def test_a_fifo_output_is_written_in_place_never_renamed_over(tmp_path, cls):
    # A FIFO stands in for /dev/null or /dev/stdout (a test must not risk replacing the real /dev/null).
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so opening it for writing never blocks
    try:
        sink = cls(fifo)
        await sink.consume(_final())
        await sink.consume(SpeakerTurn("s", 0, turn_id="t0", speaker="A", end_sample=16000))
        await sink.close()
        got = os.read(reader, 65536).decode()
    finally:
        os.close(reader)
    assert sink.failed is None and stat.S_ISFIFO(fifo.stat().st_mode)  # still the FIFO
    assert ("SPEAKER" if cls is RttmSink else "hello world" if cls is not JsonlSink else "final_transcript") in got
    assert _parts(tmp_path) == []
