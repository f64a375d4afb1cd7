"""One declaration of each setting (issue 18): transcribe, eval and serve nest the one RecognizerConfig and
the one VadSettings, share their option declarations (speechstream.cli.options), and refuse a bad value at
parse time, before anything heavy loads, with one line."""

from __future__ import annotations

import dataclasses
import inspect
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from engines.online.config import DEFAULT_CHUNK_MS, RecognizerConfig
from speechstream.cli import app, options
from stream.config import VAD_KEYS, TranscribeConfig, VadSettings
from stream.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hello.wav"
COMMANDS = ("transcribe", "eval", "serve")


def _callback(name: str):
    (cmd,) = [c for c in app.registered_commands if (c.name or c.callback.__name__) == name]
    return cmd.callback


def _click_options(name: str) -> dict[str, object]:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[name].params}  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- shared declarations

# option objects that every command listed takes by identity from speechstream.cli.options
SHARED = {
    "chunk_ms": (options.CHUNK_MS, COMMANDS),
    "compute_device": (options.COMPUTE_DEVICE, COMMANDS),
    "vad_pre_speech_pad_ms": (options.VAD_PRE_SPEECH_PAD_MS, COMMANDS),
    "vad_hangover_ms": (options.VAD_HANGOVER_MS, COMMANDS),
    "vad_min_speech_ms": (options.VAD_MIN_SPEECH_MS, COMMANDS),
    "vad_min_silence_ms": (options.VAD_MIN_SILENCE_MS, COMMANDS),
    "vad_threshold": (options.VAD_THRESHOLD, COMMANDS),
    "vad_aggressiveness": (options.VAD_AGGRESSIVENESS, COMMANDS),
    "max_utterance_ms": (options.MAX_UTTERANCE_MS, COMMANDS),
    "lookahead_ms": (options.LOOKAHEAD_MS, ("transcribe", "serve")),
    "lm_beta": (options.LM_BETA, ("transcribe", "eval")),
    "beam_width": (options.BEAM_WIDTH, ("transcribe", "eval")),
}


@pytest.mark.parametrize("param", sorted(SHARED))
def test_the_commands_share_one_option_object(param):
    obj, commands = SHARED[param]
    for command in commands:
        default = inspect.signature(_callback(command)).parameters[param].default
        assert default is obj, (command, param)


def test_shared_options_have_one_name_default_and_range_in_every_command():
    """Every recognition / VAD option the commands have in common: the same flag, default and range, and
    that default is the configuration's own (RecognizerConfig, VadSettings)."""
    opts = {c: _click_options(c) for c in COMMANDS}
    rec, vad = RecognizerConfig(), VadSettings()
    fields = {**{k: getattr(rec, f) for k, f in options.CLI_RECOGNIZER_KEYS.items()}}
    fields.update({k: getattr(vad, f) for k, f in VAD_KEYS.items()})
    checked = 0
    for param, want in fields.items():
        present = [opts[c][param] for c in COMMANDS if param in opts[c]]
        if not present:
            continue
        for o in present:
            default = o.default.value if hasattr(o.default, "value") else o.default
            if param == "hotword":
                default, want = tuple(default or ()), tuple(want)
            assert default == want, (param, default, want)
            assert o.opts == present[0].opts, param
            ranges = [(getattr(p, "min", None), getattr(p, "max", None)) for p in (o, present[0])]
            assert ranges[0] == ranges[1], param
        checked += 1
    assert checked >= 20, checked  # mode, chunk, lookahead, language, device, LM, the six VAD options, ...
    assert opts["serve"]["chunk_ms"].default == DEFAULT_CHUNK_MS == 640


def test_the_640_ms_default_is_the_engines_one():
    from engines.model import LoadedModel

    assert RecognizerConfig().chunk_ms == DEFAULT_CHUNK_MS
    for method in (LoadedModel.init_state, LoadedModel.stream):
        assert inspect.signature(method).parameters["chunk_ms"].default == DEFAULT_CHUNK_MS
    assert TranscribeConfig().recognizer.chunk_ms == DEFAULT_CHUNK_MS


# ----------------------------------------------------------------------------- nested configs


def test_configs_nest_the_one_recognizer_and_vad_config():
    from speechstream.eval import EvalConfig
    from speechstream.net.serve import ServeOptions

    for cls in (TranscribeConfig, EvalConfig, ServeOptions):
        names = {f.name: f for f in dataclasses.fields(cls)}
        assert "recognizer" in names and "vad" in names, cls
        for copied in ("chunk_ms", "mode", "lookahead_ms", "language", "vad_threshold", "max_utterance_ms"):
            assert copied not in names, (cls, copied)
    cfg = TranscribeConfig.from_flat(chunk_ms=320, lm="x.arpa", vad="silero", vad_threshold=0.6, mic=True)
    assert cfg.recognizer == RecognizerConfig(chunk_ms=320, lm_path="x.arpa")
    assert cfg.vad == VadSettings(name="silero", threshold=0.6) and cfg.mic
    assert (
        TranscribeConfig.from_mapping(
            {"chunk_ms": 320, "lm": "x.arpa", "vad": "silero", "vad_threshold": 0.6, "mic": True}
        )
        == cfg
    )
    merged = cfg.merged(vad_min_silence_ms=300, beam_width=7)
    assert merged.vad == VadSettings(name="silero", threshold=0.6, min_silence_ms=300)
    assert merged.recognizer == RecognizerConfig(chunk_ms=320, lm_path="x.arpa", beam_width=7)
    serve = ServeOptions.from_flat(model="none", vad="none", mode="window", chunk_ms=4000, max_batch=2)
    assert serve.recognizer == RecognizerConfig(mode="window", chunk_ms=4000, max_batch=2)
    assert serve.transcribe_config().recognizer is serve.recognizer
    ev = EvalConfig.from_flat(Path("m.tsv"), lm_path="x.arpa", peek_at_vad_end=False, vad_hangover_ms=40)
    assert ev.recognizer == RecognizerConfig(lm_path="x.arpa", peek_at_vad_end=False)
    assert ev.vad == VadSettings(hangover_ms=40)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(name="loud"), "vad must be one of"),
        (dict(threshold=0.5), "vad_threshold is silero's"),
        (dict(name="silero", threshold=1.0), "between 0 and 1"),
        (dict(name="silero", aggressiveness=2), "vad_aggressiveness is webrtc's"),
        (dict(aggressiveness=4), "0, 1, 2 or 3"),
        (dict(min_silence_ms=-5), "vad_min_silence_ms must be between 0 and 10000"),
        (dict(hangover_ms=10_001), "vad_hangover_ms"),
    ],
)
def test_vad_settings_validate_once(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        VadSettings(**kwargs)


def test_max_speakers_has_one_validator():
    from engines.speakers.clustering import ClusterConfig
    from speechstream.net.serve import ServeOptions
    from stream.diarize import diarization_nodes

    makers = [
        lambda: ServeOptions(max_speakers=0),
        lambda: TranscribeConfig(mic=True, max_speakers=0).validate(),
        lambda: diarization_nodes(max_speakers=0),
        lambda: ClusterConfig(max_speakers=0),
    ]
    for make in makers:
        with pytest.raises(ConfigError, match=r"^--max-speakers must be >= 1, not 0$"):
            make()


# ----------------------------------------------------------------------------- parse-time errors

BAD = [
    (["--lookahead-ms", "30"], "multiple of the 20 ms frame stride"),
    (["--vad-threshold", "0.5"], "vad_threshold is silero's"),
    (["--vad", "silero", "--vad-aggressiveness", "2"], "vad_aggressiveness is webrtc's"),
    (["--language", "en us"], "--language must be a language code"),
    (["--compute-device", "tpu"], "--compute-device must be auto, cpu, cuda or cuda:N"),
]


def _argv(command: str, extra: list[str], tmp_path: Path) -> list[str]:
    if command == "transcribe":
        return ["transcribe", *extra, str(EXAMPLE)]
    if command == "eval":
        manifest = tmp_path / "m.tsv"  # a real manifest: before, eval loaded the model before the VAD check
        manifest.write_text(f"audio\ttext\n{EXAMPLE}\tHELLO\n")
        return ["eval", str(manifest), "--model", str(tmp_path), *extra]
    return ["serve", "--model", str(tmp_path), *extra]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("extra, needle", BAD)
def test_bad_value_is_one_line_at_parse_time(command, extra, needle, tmp_path, monkeypatch):
    import speechstream.cli.transcribe
    import speechstream.eval
    import speechstream.net.serve

    monkeypatch.setattr(speechstream.cli.transcribe, "_run", lambda cfg: pytest.fail("transcribe ran"))
    monkeypatch.setattr(speechstream.eval, "evaluate", lambda cfg, log=None: pytest.fail("eval ran"))
    monkeypatch.setattr(speechstream.net.serve, "serve_main", lambda opts: pytest.fail("serve started"))
    result = CliRunner().invoke(app, _argv(command, extra, tmp_path))
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speechstream: error: ") and needle in lines[0], result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_parse_time_refusal_loads_nothing_heavy(command, tmp_path):
    """In a fresh interpreter: a bad VAD combination exits 2 with one line, and torch was never imported."""
    argv = _argv(command, ["--vad-threshold", "0.5"], tmp_path)
    code = (
        "import sys\n"
        "from speechstream.cli import main\n"
        f"try:\n    main({argv!r})\n"
        "except SystemExit as e:\n    print('EXIT', e.code)\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert out.split()[-4:] == ["EXIT", "2", "TORCH", "False"], (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "vad_threshold is silero's" in lines[0], err


def test_pipeline_keywords_build_the_nested_configs():
    from speechstream import Pipeline

    pipe = Pipeline.from_file(EXAMPLE, model="none", chunk_ms=320, vad="silero", vad_min_silence_ms=300)
    cfg = pipe._config
    assert cfg is not None and cfg.recognizer.chunk_ms == 320
    assert cfg.vad == VadSettings(name="silero", min_silence_ms=300)
    base = RecognizerConfig(left_context_ms=1280)
    cfg = Pipeline.from_file(EXAMPLE, model="none", recognizer=base, chunk_ms=320)._config
    assert cfg is not None and cfg.recognizer == RecognizerConfig(left_context_ms=1280, chunk_ms=320)
    with pytest.raises(ConfigError, match="vad_threshold is silero's"):
        Pipeline.from_file(EXAMPLE, model="none", vad_threshold=0.5)
