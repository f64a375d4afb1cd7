"""The CLI through Typer's CliRunner: options -> config, outputs, and one-line user errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import srt
import webvtt
from typer.testing import CliRunner

from speechstream.cli import app
from stream.config import TranscribeConfig, VadSettings, default_model_dir, load_toml
from stream.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hello.wav"
OPTIONS = [
    "--mic",
    "--device",
    "--model",
    "--lm",
    "--unigrams",
    "--lm-alpha",
    "--lm-beta",
    "--beam-width",
    "--hotword",
    "--vad",
    "--mode",
    "--diarize",
    "--speaker",
    "--max-speakers",
    "--speaker-model",
    "--chunk-ms",
    "--left-context-ms",
    "--lookahead-ms",
    "--language",
    "--compute-device",
    "--vad-pre-speech-pad-ms",
    "--vad-hangover-ms",
    "--vad-min-speech-ms",
    "--vad-min-silence-ms",
    "--vad-backdate-max-ms",
    "--vad-threshold",
    "--vad-aggressiveness",
    "--max-utterance-ms",
    "--realtime",
    "--progress",
    "--console",
    "--jsonl",
    "--srt",
    "--vtt",
    "--rttm",
    "--config",
]
SERVE_OPTIONS = [
    "--host",
    "--port",
    "--token",
    "--model",
    "--vad",
    "--mode",
    "--chunk-ms",
    "--lookahead-ms",
    "--max-connections",
    "--max-frame-bytes",
    "--web",
    "--diarize",
    "--max-speakers",
    "--max-batch",
    "--language",
    "--compute-device",
    "--idle-timeout",
    "--workers",
    "--drain-timeout",
    "--allow-origin",
    "--vad-pre-speech-pad-ms",
    "--vad-hangover-ms",
    "--vad-min-speech-ms",
    "--vad-min-silence-ms",
    "--vad-backdate-max-ms",
    "--vad-threshold",
    "--vad-aggressiveness",
    "--max-utterance-ms",
]
EVAL_OPTIONS = [
    "--model",
    "--lm",
    "--unigrams",
    "--lm-alpha",
    "--lm-beta",
    "--beam-width",
    "--vad",
    "--mode",
    "--chunk-ms",
    "--left-context-ms",
    "--lookahead-ms",
    "--language",
    "--compute-device",
    "--limit",
    "--concurrency",
    "--realtime",
    "--pad-silence-ms",
    "--block-ms",
    "--vad-pre-speech-pad-ms",
    "--vad-hangover-ms",
    "--vad-min-speech-ms",
    "--vad-min-silence-ms",
    "--vad-backdate-max-ms",
    "--vad-threshold",
    "--vad-aggressiveness",
    "--max-utterance-ms",
]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("speechstream: error: ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


# ----------------------------------------------------------------------------- help


def test_help_lists_commands():
    result = run("--help")
    assert result.exit_code == 0
    assert "transcribe" in result.stdout and "devices" in result.stdout


def test_transcribe_help_shows_every_option_with_a_default():
    out = run("transcribe", "--help").stdout
    flat = " ".join(out.split())
    for opt in OPTIONS:
        assert opt in flat, opt
    # every option carries a default in its help entry (-h/--help aside)
    options = out.split("Options:", 1)[1]
    entries = [" ".join(e.split()) for e in options.split("\n  -") if e.strip()]
    for entry in entries:
        if entry.startswith(("-help", "h, --help")):
            continue
        assert "[default:" in entry, f"-{entry.split()[0]} shows no default"
    assert len(entries) == len(OPTIONS) + 1


@pytest.mark.parametrize("command, options", [("serve", SERVE_OPTIONS), ("eval", EVAL_OPTIONS)])
def test_serve_and_eval_help_list_every_option_with_a_default(command, options):
    out = run(command, "--help").stdout
    entries = [" ".join(e.split()) for e in out.split("Options:", 1)[1].split("\n  -") if e.strip()]
    listed = [e.split()[0].lstrip("-").split("/")[0] for e in entries if not e.startswith(("-help", "h, --help"))]
    assert ["--" + o.lstrip("-") for o in listed] == options  # this list stays in sync with the CLI
    for entry in entries:
        assert entry.startswith(("-help", "h, --help")) or "default:" in entry, f"-{entry.split()[0]} shows no default"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["serve", "--lookahead-ms", "30"], "multiple of the 20 ms frame stride"),
        (["serve", "--lookahead-ms", "10020"], "at most 10000"),
        (["serve", "--language", "en us"], "--language must be a language code"),
        (["serve", "--vad-threshold", "0.5"], "vad_threshold is silero's"),  # webrtc has no threshold
        (["serve", "--vad", "silero", "--vad-threshold", "1.0"], "between 0 and 1"),
        (["serve", "--vad", "silero", "--vad-aggressiveness", "2"], "vad_aggressiveness is webrtc's"),
        (["serve", "--vad-min-silence-ms", "-5"], "--vad-min-silence-ms"),
        (["serve", "--max-utterance-ms", "10"], "--max-utterance-ms"),
        (["eval", "never-read.tsv", "--language", " "], "--language must be a language code"),
    ],
)
def test_serve_and_eval_refuse_bad_values_before_loading(args, needle, monkeypatch):
    import speechstream.net.serve

    monkeypatch.setattr(speechstream.net.serve, "serve_main", lambda opts: pytest.fail("serve started"))
    assert_user_error(run(*args), needle)


def test_serve_lookahead_and_language_reach_the_recognizer(monkeypatch, tmp_path):
    import speechstream.net.serve
    from speechstream.net.serve import build_nodes
    from stream.recognizer import Recognizer

    seen = []
    monkeypatch.setattr(speechstream.net.serve, "serve_main", seen.append)  # what serve would run, not run
    result = run("serve", "--model", str(tmp_path), "--mode", "cached", "--lookahead-ms", "320", "--language", "fra")
    assert result.exit_code == 0, result.output
    (opts,) = seen
    assert (opts.recognizer.lookahead_ms, opts.recognizer.language, opts.recognizer.mode) == (320, "fra", "cached")
    (rec,) = [n for n in build_nodes(opts)[0] if isinstance(n, Recognizer)]
    assert (rec.config.lookahead_ms, rec.config.language) == (320, "fra")
    run("serve", "--model", str(tmp_path))
    assert (seen[-1].recognizer.lookahead_ms, seen[-1].recognizer.language) == (0, None)


def test_serve_vad_options_reach_the_vad_and_the_recognizer(monkeypatch, tmp_path):
    import speechstream.net.serve
    from speechstream.net.serve import build_nodes
    from stream.recognizer import Recognizer
    from stream.vad import DEFAULT_VAD_CONFIGS, VadConfig
    from stream.vad_node import VadNode

    seen = []
    monkeypatch.setattr(speechstream.net.serve, "serve_main", seen.append)  # what serve would run, not run
    result = run(
        "serve",
        "--model",
        str(tmp_path),
        "--vad",
        "silero",
        "--vad-pre-speech-pad-ms",
        "0",
        "--vad-hangover-ms",
        "40",
        "--vad-min-speech-ms",
        "80",
        "--vad-min-silence-ms",
        "300",
        "--vad-threshold",
        "0.6",
        "--max-utterance-ms",
        "9000",
    )
    assert result.exit_code == 0, result.output
    nodes = build_nodes(seen[-1])[0]
    (vad,) = [n for n in nodes if isinstance(n, VadNode)]
    assert vad.segmenter.config == VadConfig(0, 40, 80, 300, backdate_max_ms=0)  # silero: no backdating
    assert vad.segmenter.clf.threshold == 0.6
    (rec,) = [n for n in nodes if isinstance(n, Recognizer)]
    assert rec.config.max_utterance_ms == 9000
    assert run("serve", "--model", "none", "--vad-aggressiveness", "1").exit_code == 0
    (vad,) = [n for n in build_nodes(seen[-1])[0] if isinstance(n, VadNode)]
    assert vad.segmenter.config == DEFAULT_VAD_CONFIGS["webrtc"] and vad.segmenter.clf.aggressiveness == 1
    assert run("serve", "--model", "none").exit_code == 0  # no option given: the tuned defaults
    (vad,) = [n for n in build_nodes(seen[-1])[0] if isinstance(n, VadNode)]
    assert vad.segmenter.config == DEFAULT_VAD_CONFIGS["webrtc"] and vad.segmenter.clf.aggressiveness == 3


def test_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from speechstream.cli import main\n"
        "try:\n    main(['transcribe', '--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "light = {'engines', 'engines.errors', 'engines.online', 'engines.online.config'}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'soundfile', 'sounddevice',"
        " 'engines', 'sinks') and m not in light)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("HEAVY []"), out


# ----------------------------------------------------------------------------- user mistakes


def test_missing_file(tmp_path):
    assert_user_error(run("transcribe", str(tmp_path / "nope.wav")), "not found", "nope.wav")


def test_unreadable_format(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio\n")
    assert_user_error(run("transcribe", "--model", "none", "--no-progress", str(bad)), "notes.wav")


def test_directory_as_input(tmp_path):
    assert_user_error(run("transcribe", str(tmp_path)), "directory")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--vad", "loud"], "--vad"),
        (["--mode", "sideways"], "--mode"),
        (["--chunk-ms", "5"], "--chunk-ms"),
        (["--chunk-ms", "abc"], "--chunk-ms"),
        (["--lookahead-ms", "-1"], "--lookahead-ms"),
        (["--no-such-option"], "--no-such-option"),
    ],
)
def test_bad_option_values(args, needle):
    assert_user_error(run("transcribe", *args, str(EXAMPLE)), needle)


def test_model_path_that_does_not_exist(tmp_path):
    assert_user_error(run("transcribe", "--model", str(tmp_path / "no-model"), str(EXAMPLE)), "no-model")


def test_model_dir_that_is_not_a_model(tmp_path):
    (tmp_path / "empty-model").mkdir()
    result = run("transcribe", "--no-progress", "--model", str(tmp_path / "empty-model"), str(EXAMPLE))
    assert_user_error(result, "empty-model")


def test_file_and_mic_together_and_neither():
    assert_user_error(run("transcribe", "--mic", str(EXAMPLE)), "--mic")
    assert_user_error(run("transcribe"), "FILE")
    assert_user_error(run("transcribe", "--device", "3", str(EXAMPLE)), "--device")


def test_output_in_missing_directory(tmp_path):
    assert_user_error(run("transcribe", "--srt", str(tmp_path / "no" / "x.srt"), str(EXAMPLE)), "x.srt")


@pytest.mark.skipif(importlib.util.find_spec("stream.sources.mic") is None, reason="microphone source not built yet")
def test_unknown_device(monkeypatch, tmp_path):
    # An ALSA configuration with no capture device at all: any name is unknown.
    conf = tmp_path / "asound.conf"
    conf.write_text("pcm.!default { type null }\n")
    monkeypatch.setenv("ALSA_CONFIG_PATH", f"/usr/share/alsa/alsa.conf:{conf}")
    code = (
        "from speechstream.cli import main\n"
        "main(['transcribe', '--mic', '--model', 'none', '--device', 'no-such-device-xyz'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-device-xyz" in lines[0] and "Traceback" not in proc.stderr


def test_bad_toml(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("vad = [\n")
    assert_user_error(run("transcribe", "--config", str(cfg), str(EXAMPLE)), "TOML")
    cfg.write_text("colour = 'blue'\n")
    assert_user_error(run("transcribe", "--config", str(cfg), str(EXAMPLE)), "colour")
    assert_user_error(run("transcribe", "--config", str(tmp_path / "none.toml"), str(EXAMPLE)), "none.toml")


# ----------------------------------------------------------------------------- running


def test_vad_only_run_writes_every_output(tmp_path):
    out = tmp_path
    result = run(
        "transcribe",
        str(EXAMPLE),
        "--model",
        "none",
        "--no-progress",
        "--jsonl",
        str(out / "e.jsonl"),
        "--srt",
        str(out / "c.srt"),
        "--vtt",
        str(out / "c.vtt"),
        "--rttm",
        str(out / "s.rttm"),
    )
    assert result.exit_code == 0, result.output
    assert "VAD only" in result.stderr
    events = [json.loads(line) for line in (out / "e.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["type"] == "speech_started"]
    assert len(starts) == 4  # the example has four sentences
    assert events[-1]["type"] == "end_of_stream" and events[-1]["stream_id"] == "hello"
    assert result.stdout.count("(speech)") == 4
    # caption files exist and parse (no recogniser: no cues)
    assert list(srt.parse((out / "c.srt").read_text())) == []
    assert webvtt.read(str(out / "c.vtt")).captions == []
    rttm_lines = (out / "s.rttm").read_text().splitlines()  # --rttm turns diarization on, even VAD only
    assert rttm_lines and all(line.startswith("SPEAKER hello 1 ") for line in rttm_lines)


def test_vad_none_is_one_segment_and_jsonl_stdout(tmp_path):
    result = run("transcribe", str(EXAMPLE), "--model", "none", "--vad", "none", "--no-progress", "--jsonl", "-")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    ended = [e for e in events if e["type"] == "speech_ended"]
    assert len(ended) == 1 and ended[0]["start_sample"] == 0
    assert ended[0]["sample"] == sf.info(str(EXAMPLE)).frames  # 16 kHz file: whole input


def test_toml_config_and_cli_precedence(tmp_path):
    cfg = tmp_path / "ss.toml"
    cfg.write_text(f'[transcribe]\nvad = "none"\nmodel = "none"\nprogress = false\njsonl = "{tmp_path / "a.jsonl"}"\n')
    assert run("transcribe", "--config", str(cfg), str(EXAMPLE)).exit_code == 0
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert sum('"speech_ended"' in line for line in lines) == 1  # vad = none from the file
    assert run("transcribe", "--config", str(cfg), "--vad", "webrtc", str(EXAMPLE)).exit_code == 0
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert sum('"speech_ended"' in line for line in lines) == 4  # the command line wins


def test_recognizer_run_with_tiny_model_writes_captions(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from hf_tiny import build_tiny

    model = build_tiny("wav2vec2", "ctc", tmp_path / "tiny")
    audio, rate = sf.read(str(EXAMPLE), dtype="int16")
    clip = tmp_path / "first.flac"  # the first sentence, as FLAC: keeps the test short
    sf.write(str(clip), audio[: int(4.5 * rate)], rate)
    result = run(
        "transcribe",
        str(clip),
        "--model",
        str(model),
        "--no-progress",
        "--chunk-ms",
        "320",
        "--left-context-ms",
        "1280",
        "--srt",
        str(tmp_path / "c.srt"),
        "--vtt",
        str(tmp_path / "c.vtt"),
        "--jsonl",
        str(tmp_path / "e.jsonl"),
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    finals = [e for e in events if e["type"] == "final_transcript" and e["text"].strip()]
    assert finals, "a random model still emits characters"
    subs = list(srt.parse((tmp_path / "c.srt").read_text()))
    caps = webvtt.read(str(tmp_path / "c.vtt")).captions
    assert len(subs) == len(caps) >= len(finals)


# ----------------------------------------------------------------------------- config object


def test_config_from_mapping_types():
    cfg = TranscribeConfig.from_mapping({"input_path": "a.wav", "chunk_ms": 320, "device": 3})
    assert cfg.input_path == Path("a.wav") and cfg.recognizer.chunk_ms == 320 and cfg.device == "3"
    assert cfg.resolved_stream_id == "a"
    with pytest.raises(ConfigError, match="chunk_ms"):
        TranscribeConfig.from_mapping({"chunk_ms": "fast"})
    with pytest.raises(ConfigError, match="realtime"):
        TranscribeConfig.from_mapping({"realtime": "yes"})
    with pytest.raises(ConfigError, match="bogus"):
        TranscribeConfig.from_mapping({"bogus": 1})


def test_config_defaults_and_model_resolution(tmp_path):
    cfg = TranscribeConfig(mic=True)
    assert cfg.resolved_stream_id == "mic" and cfg.console_enabled
    assert not TranscribeConfig(jsonl="-").console_enabled
    assert TranscribeConfig(model="none").resolved_model() is None
    assert TranscribeConfig(model=str(tmp_path)).resolved_model() == str(tmp_path)
    bundled = default_model_dir()
    assert TranscribeConfig().resolved_model() == (str(bundled) if bundled else None)


def test_load_toml_top_level_or_table(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("chunk_ms = 320\n")
    assert load_toml(p) == {"chunk_ms": 320}
    p.write_text("[transcribe]\nchunk_ms = 160\n")
    assert load_toml(p) == {"chunk_ms": 160}


def test_rttm_turns_on_diarization(tmp_path):
    from pyannote.database.util import load_rttm

    audio, rate = sf.read(str(EXAMPLE), dtype="int16")
    clip = tmp_path / "two.wav"  # the first two sentences, two different voices
    sf.write(str(clip), audio[: int(9.4 * rate)], rate)
    result = run("transcribe", str(clip), "--model", "none", "--no-progress", "--rttm", str(tmp_path / "s.rttm"))
    assert result.exit_code == 0, result.output
    ann = load_rttm(str(tmp_path / "s.rttm"))["two"]
    assert len(ann.labels()) >= 2
    assert all(0 <= seg.start < seg.end <= 9.4 for seg in ann.itersegments())
    no = run(
        "transcribe", str(clip), "--model", "none", "--no-progress", "--no-diarize", "--rttm", str(tmp_path / "n.rttm")
    )
    assert no.exit_code == 0 and (tmp_path / "n.rttm").read_text() == "" and "diarization is off" in no.stderr


# ----------------------------------------------------------------------------- LM options


def test_lm_options_reach_the_recognizer(tmp_path):
    from examples.lm.lm_build import build_arpa, write_arpa
    from speechstream.builder import build_recognizer

    arpa = tmp_path / "lm.arpa"
    write_arpa(*build_arpa([["THE", "HEAT"], ["NO", "TEA"]], order=2), arpa)
    toml = tmp_path / "c.toml"
    toml.write_text(f'lm = "{arpa}"\nlm_alpha = 0.9\nhotwords = ["TEA"]\n')
    given = {"lm_beta": 2.5, "beam_width": 7}
    cfg = TranscribeConfig.from_mapping({**load_toml(toml), **given, "input_path": str(EXAMPLE)}).validate()
    rc = build_recognizer(cfg, "some-model").config
    assert (rc.lm_path, rc.lm_alpha, rc.lm_beta, rc.beam_width, rc.hotwords) == (str(arpa), 0.9, 2.5, 7, ("TEA",))
    assert build_recognizer(TranscribeConfig(input_path=EXAMPLE), "m").config.lm_path is None


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lm", "no-such.arpa"], "no-such.arpa"),
        (["--lm-alpha", "nan"], "lm_alpha"),
        (["--beam-width", "0"], "--beam-width"),
        (["--hotword", " "], "--hotword"),
    ],
)
def test_bad_lm_options(args, needle):
    assert_user_error(run("transcribe", *args, str(EXAMPLE)), needle)


def test_unigrams_without_lm(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("THE\n")
    assert_user_error(run("transcribe", "--unigrams", str(words), str(EXAMPLE)), "--unigrams needs --lm")


def test_lm_that_is_not_an_lm_fails_at_start(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from hf_tiny import build_tiny

    model = build_tiny("wav2vec2", "ctc", tmp_path / "tiny")
    bogus = tmp_path / "lm.arpa"
    bogus.write_text("this is not an ARPA file\n")
    result = run("transcribe", str(EXAMPLE), "--model", str(model), "--no-progress", "--lm", str(bogus))
    assert_user_error(result, "lm.arpa")


def test_lm_options_change_the_finals(tmp_path):
    """Finals go through the LM beam search: a huge word penalty (--lm-beta) leaves fewer words than greedy."""
    sys.path.insert(0, str(REPO / "tests"))
    from hf_tiny import build_tiny

    from examples.lm.lm_build import build_arpa, write_arpa

    model = build_tiny("wav2vec2", "ctc", tmp_path / "tiny")
    audio, rate = sf.read(str(EXAMPLE), dtype="int16")
    clip = tmp_path / "first.flac"
    sf.write(str(clip), audio[: int(4.5 * rate)], rate)
    arpa = tmp_path / "lm.arpa"
    write_arpa(*build_arpa([["THE", "HEAT"], ["NO", "TEA"], ["AT", "NINE"]], order=2), arpa)

    def finals(*extra: str) -> list[str]:
        out = tmp_path / f"e{len(extra)}.jsonl"
        result = run(
            "transcribe",
            str(clip),
            "--model",
            str(model),
            "--no-progress",
            "--no-console",
            "--chunk-ms",
            "320",
            "--left-context-ms",
            "1280",
            "--jsonl",
            str(out),
            *extra,
        )
        assert result.exit_code == 0, result.output
        events = [json.loads(line) for line in out.read_text().splitlines()]
        return [e["text"] for e in events if e["type"] == "final_transcript"]

    greedy = finals()
    penalised = finals("--lm", str(arpa), "--lm-alpha", "0.5", "--lm-beta", "-100")
    assert len(penalised) == len(greedy) >= 1
    n_greedy, n_penalised = (sum(len(t.split()) for t in x) for x in (greedy, penalised))
    assert n_greedy >= 2 and n_penalised < n_greedy, (greedy, penalised)


def test_vad_timing_options_reach_the_vad_from_toml_and_cli(tmp_path):
    from speechstream.builder import build_recognizer, build_vad
    from stream.vad import DEFAULT_VAD_CONFIGS, VadConfig

    toml = tmp_path / "c.toml"
    toml.write_text('vad = "silero"\nvad_min_silence_ms = 300\nvad_threshold = 0.6\nvad_hangover_ms = 40\n')
    cfg = TranscribeConfig.from_mapping(
        {**load_toml(toml), "vad_pre_speech_pad_ms": 0, "input_path": str(EXAMPLE), "max_utterance_ms": 9000}
    ).validate()
    seg = build_vad(cfg).segmenter
    assert seg.config == VadConfig(0, 40, DEFAULT_VAD_CONFIGS["silero"].min_speech_ms, 300, backdate_max_ms=0)
    assert seg.clf.threshold == 0.6
    assert build_recognizer(cfg, "m").config.max_utterance_ms == 9000
    webrtc = build_vad(TranscribeConfig(input_path=EXAMPLE, vad=VadSettings(aggressiveness=1))).segmenter
    assert webrtc.config == DEFAULT_VAD_CONFIGS["webrtc"] and webrtc.clf.aggressiveness == 1
    # on the command line: a 2 s minimum silence merges the example's 4 segments into fewer
    out = tmp_path / "e.jsonl"
    assert run("transcribe", "--model", "none", "--no-progress", "--jsonl", str(out), str(EXAMPLE)).exit_code == 0
    n_default = out.read_text().count('"speech_ended"')
    assert (
        run(
            "transcribe",
            "--model",
            "none",
            "--no-progress",
            "--jsonl",
            str(out),
            "--vad-min-silence-ms",
            "2000",
            str(EXAMPLE),
        ).exit_code
        == 0
    )
    assert 0 < out.read_text().count('"speech_ended"') < n_default


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--vad-min-silence-ms", "-5"], "--vad-min-silence-ms"),
        (["--vad-threshold", "1.5"], "--vad-threshold"),
        (["--vad-threshold", "0.5"], "vad_threshold"),  # webrtc has no threshold
        (["--vad", "silero", "--vad-aggressiveness", "2"], "vad_aggressiveness"),
        (["--max-utterance-ms", "10"], "--max-utterance-ms"),
    ],
)
def test_bad_vad_options(args, needle):
    assert_user_error(run("transcribe", *args, str(EXAMPLE)), needle)


def test_vad_option_defaults_shown_in_help_are_the_vads_own():
    """The CLI shows the VAD defaults without importing the VAD (``--help`` stays light); they must
    be the values stream.vad really uses."""
    from speechstream.cli import options as cli
    from stream.vad import DEFAULT_SILERO_THRESHOLD, DEFAULT_VAD_CONFIGS, DEFAULT_WEBRTC_AGGRESSIVENESS

    web, sil = DEFAULT_VAD_CONFIGS["webrtc"], DEFAULT_VAD_CONFIGS["silero"]
    assert web.pre_speech_pad_ms == sil.pre_speech_pad_ms and web.hangover_ms == sil.hangover_ms
    assert cli.VAD_PRE_SPEECH_PAD_MS.show_default == str(web.pre_speech_pad_ms)
    assert cli.VAD_HANGOVER_MS.show_default == str(web.hangover_ms)
    assert cli.VAD_MIN_SPEECH_MS.show_default == str(web.min_speech_ms) == str(sil.min_speech_ms)
    assert cli.VAD_MIN_SILENCE_MS.show_default == f"webrtc {web.min_silence_ms}, silero {sil.min_silence_ms}"
    assert cli.VAD_BACKDATE_MAX_MS.show_default == f"webrtc {web.backdate_max_ms}, silero {sil.backdate_max_ms}"
    assert cli.VAD_THRESHOLD.show_default == str(DEFAULT_SILERO_THRESHOLD)
    assert cli.VAD_AGGRESSIVENESS.show_default == str(DEFAULT_WEBRTC_AGGRESSIVENESS)
