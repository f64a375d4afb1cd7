"""The installed ``speechstream`` script against a careless or hostile user (issue 21): outputs that
would destroy the input or an existing file, a killed run, no capture devices, a headerless eval
manifest, MP3 input and its decoder noise."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import webvtt

from tests.integration.test_cli_entrypoint import EXAMPLE, entry_point

OUTPUTS = ("--srt", "--vtt", "--jsonl", "--rttm")


def _run(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([entry_point(), *args], capture_output=True, text=True, timeout=timeout, **kw)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speechstream: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- outputs vs the input


@pytest.mark.parametrize("option", OUTPUTS)
def test_an_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path, option):
    talk = tmp_path / "talk.wav"
    shutil.copy(EXAMPLE, talk)
    before = _digest(talk)
    _one_error_line(
        _run("transcribe", str(talk), "--model", "none", "--no-progress", option, str(talk)), option, "the input FILE"
    )
    assert _digest(talk) == before
    # The same file under another name: a symlink, and a relative path with '..'.
    link = tmp_path / "link.wav"
    link.symlink_to(talk)
    _one_error_line(_run("transcribe", str(talk), "--model", "none", option, str(link)), "the input FILE")
    (tmp_path / "sub").mkdir()
    _one_error_line(
        _run("transcribe", "talk.wav", "--model", "none", option, "sub/../talk.wav", cwd=tmp_path), "the input FILE"
    )
    assert _digest(talk) == before and sorted(p.name for p in tmp_path.iterdir()) == ["link.wav", "sub", "talk.wav"]


def test_a_hard_link_to_the_input_and_an_enrollment_clip_are_refused(tmp_path):
    talk = tmp_path / "talk.wav"
    shutil.copy(EXAMPLE, talk)
    os.link(talk, tmp_path / "same.srt")
    before = _digest(talk)
    _one_error_line(
        _run("transcribe", str(talk), "--model", "none", "--srt", str(tmp_path / "same.srt")), "the input FILE"
    )
    clip = tmp_path / "ann.wav"
    shutil.copy(EXAMPLE, clip)
    _one_error_line(
        _run("transcribe", str(talk), "--model", "none", "--speaker", f"ann={clip}", "--rttm", str(clip)),
        "--rttm",
        "--speaker ann=",
    )
    assert _digest(talk) == before and _digest(clip) == _digest(EXAMPLE)


def test_an_output_that_is_the_config_file_is_refused(tmp_path):
    cfg = tmp_path / "ss.toml"
    cfg.write_text(f'[transcribe]\nmodel = "none"\njsonl = "{cfg}"\n')
    before = cfg.read_text()
    _one_error_line(_run("transcribe", str(EXAMPLE), "--config", str(cfg)), "--jsonl", "is --config")
    assert cfg.read_text() == before


def test_two_outputs_on_one_path_are_refused(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("notes\n")
    _one_error_line(
        _run("transcribe", str(EXAMPLE), "--model", "none", "--srt", str(out), "--vtt", str(out)),
        "--vtt",
        "--srt",
        "same file",
    )
    assert out.read_text() == "notes\n"
    # Devices are not files: /dev/null may take several outputs.
    proc = _run(
        "transcribe", str(EXAMPLE), "--model", "none", "--no-progress", "--srt", "/dev/null", "--jsonl", "/dev/null"
    )
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------- existing outputs


def _old_outputs(tmp_path: Path) -> dict[str, Path]:
    outs = {opt: tmp_path / f"old{opt.replace('-', '.')}" for opt in OUTPUTS}
    for opt, path in outs.items():
        path.write_text(f"precious {opt} from an earlier run\n")
        path.chmod(0o640)
    return outs


def test_existing_outputs_survive_a_run_that_fails_at_start(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio\n")
    outs = _old_outputs(tmp_path)
    args = [a for opt, path in outs.items() for a in (opt, str(path))]
    _one_error_line(
        _run("transcribe", str(bad), "--model", "none", "--no-progress", "--no-diarize", *args),
        "cannot read audio file",
    )
    for opt, path in outs.items():
        assert path.read_text() == f"precious {opt} from an earlier run\n", opt
    assert not list(tmp_path.glob(".*.part")), list(tmp_path.glob(".*"))  # no temporary file left behind


def test_existing_outputs_are_replaced_whole_by_a_complete_run(tmp_path):
    outs = _old_outputs(tmp_path)
    args = [a for opt, path in outs.items() for a in (opt, str(path))]
    proc = _run(
        "transcribe", str(EXAMPLE), "--model", "none", "--no-progress", "--no-diarize", *args
    )  # diarization is slow
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in outs["--jsonl"].read_text().splitlines()]
    assert [e["type"] for e in events].count("speech_ended") == 4
    assert outs["--srt"].read_text() == ""  # VAD only: no captions, a valid empty SRT
    assert webvtt.read(str(outs["--vtt"])).captions == []
    assert outs["--rttm"].read_text() == ""  # --no-diarize: no turns, a valid empty RTTM
    for path in outs.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the old file's permissions are kept
    assert not list(tmp_path.glob(".*.part"))


def test_sigkill_leaves_each_output_either_old_or_valid(tmp_path):
    """SIGKILL after the first events: the JSONL (it has records) is the new, valid log; the WebVTT (no
    final yet) is still the old file, not a truncated one."""
    jsonl, vtt = tmp_path / "e.jsonl", tmp_path / "c.vtt"
    jsonl.write_text("old log\n")
    vtt.write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nold caption\n\n")
    old_vtt = vtt.read_text()
    proc = subprocess.Popen(
        [
            entry_point(),
            "transcribe",
            str(EXAMPLE),
            "--model",
            "none",
            "--realtime",
            "--jsonl",
            str(jsonl),
            "--vtt",
            str(vtt),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "speech_ended" not in jsonl.read_text():
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    lines = jsonl.read_text().splitlines()
    assert lines and all(json.loads(line)["type"] for line in lines)  # whole JSON lines only
    assert vtt.read_text() == old_vtt and webvtt.read(str(vtt)).captions[0].text == "old caption"


# ----------------------------------------------------------------------------- smaller ones


def test_devices_with_no_capture_device_says_so_and_exits_0(tmp_path):
    conf = tmp_path / "asound.conf"
    conf.write_text('pcm.!default { type asym; playback.pcm "null" }\n')  # a default with no capture side
    env = dict(os.environ, ALSA_CONFIG_PATH=f"/usr/share/alsa/alsa.conf:{conf}")
    proc = _run("devices", timeout=60, env=env)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "no audio capture devices found", "")


def _manifest(tmp_path: Path, *lines: str) -> Path:
    shutil.copy(EXAMPLE, tmp_path / "a.wav")
    manifest = tmp_path / "m.tsv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_eval_names_the_right_line_of_a_headerless_manifest(tmp_path):
    manifest = _manifest(tmp_path, "a.wav\tHELLO", "a.wav")  # line 2 lacks its text column
    _one_error_line(_run("eval", str(manifest), "--model", "none"), "m.tsv line 2:")


def test_manifest_line_numbers_with_a_header_and_blank_lines(tmp_path):
    from speechstream.eval import read_manifest
    from stream.errors import ConfigError

    with pytest.raises(ConfigError, match="m.tsv line 3:"):
        read_manifest(_manifest(tmp_path, "audio\ttext", "a.wav\tHELLO", "a.wav"))
    with pytest.raises(ConfigError, match="m.tsv line 3:"):  # a blank line is skipped, and still counted
        read_manifest(_manifest(tmp_path, "a.wav\tHELLO", "", "a.wav"))
    assert read_manifest(_manifest(tmp_path, "audio\ttext", "a.wav\tHELLO", "")) == [(tmp_path / "a.wav", "HELLO")]


def _make_mp3(dst: Path) -> None:
    if shutil.which("ffmpeg"):
        cmd = [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(EXAMPLE),
            "-codec:a",
            "libmp3lame",
            "-b:a",
            "64k",
            str(dst),
        ]
    elif shutil.which("lame"):
        cmd = ["lame", "--quiet", "-b", "64", str(EXAMPLE), str(dst)]
    else:
        pytest.skip("needs ffmpeg or lame to make an MP3")
    subprocess.run(cmd, check=True, timeout=60)


def test_mp3_input_decodes_with_a_clean_stderr(tmp_path):
    mp3 = tmp_path / "hello.mp3"
    _make_mp3(mp3)
    proc = _run("transcribe", str(mp3), "--model", "none", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(speech)") == 4  # the same four segments as the WAV
    assert proc.stderr.splitlines() == ["speechstream: no model (see --model): VAD only, printing speech segments"]


def test_quiet_decoder_gives_back_what_is_not_decoder_noise():
    code = (
        "import os, sys\n"
        "from stream.sources.file import quiet_decoder\n"
        "with quiet_decoder():\n"
        "    os.write(2, b'[src/libmpg123/layer3.c:INT123_do_layer3():1774] error: part2_3_length (2720) too large\\n')\n"
        "    print('a line of ours', file=sys.stderr)\n"
        "    os.write(2, b'another C line\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "a line of ours\nanother C line\nafter\n", proc.stderr


def test_an_unknown_format_names_the_formats_read(tmp_path):
    if not shutil.which("ffmpeg"):
        pytest.skip("needs ffmpeg")
    m4a = tmp_path / "x.m4a"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(EXAMPLE), "-t", "1", str(m4a)],
        check=True,
        timeout=60,
    )
    _one_error_line(_run("transcribe", str(m4a), "--model", "none"), "formats read: wav, flac", "mp3")
