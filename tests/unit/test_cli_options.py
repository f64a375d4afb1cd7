"""One declaration of each setting (issue 18): transcribe, eval and serve nest the one RecognizerConfig and
the one VadSettings, share their option declarations (speechstream.cli.options), and refuse a bad value at
parse time, before anything heavy loads, with one line."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
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


# ----------------------------------------------------------------------------- command-only defaults
# Options that are no recogniser or VAD setting: each default is written once (speechstream.defaults) and the
# typer option and the configuration it fills both read it; these tests keep the two from drifting apart.


def _field_defaults(cls: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _keyword_defaults(fn) -> dict[str, object]:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def _own_options(command: str) -> dict[str, object]:
    """The command's options (no argument) that are neither a RecognizerConfig nor a VadSettings setting."""
    shared = set(options.CLI_RECOGNIZER_KEYS) | set(VAD_KEYS)
    return {
        n: p
        for n, p in _click_options(command).items()
        if n not in shared and n != "help" and getattr(p, "param_type_name", "") == "option"
    }


def _config_defaults() -> dict[str, dict[str, object]]:
    """command -> {CLI parameter: the default of the configuration value it fills}."""
    from speechstream.eval import EvalConfig
    from speechstream.mqtt.settings import MqttSettings
    from speechstream.mqtt.worker import MqttWorker
    from speechstream.net.serve import ServeOptions
    from speechstream.ops_http import OpsServer

    ev = _field_defaults(EvalConfig)
    sv = _field_defaults(ServeOptions)
    renamed = {"idle_timeout": "idle_timeout_s", "drain_timeout": "drain_timeout_s", "allow_origin": "allow_origins"}
    mqtt, worker = _field_defaults(MqttSettings), _keyword_defaults(MqttWorker.__init__)
    return {
        "eval": {p: ev[p] for p in _own_options("eval")},  # every one is an EvalConfig field of its name
        "serve": {p: sv[renamed.get(p, p)] for p in _own_options("serve")},
        "mqtt-worker": {
            "host": mqtt["host"],
            "port": mqtt["port"],
            "prefix": mqtt["prefix"],
            "idle_timeout_s": worker["idle_timeout_s"],
            "max_streams": worker["max_streams"],
            "drain_timeout": _keyword_defaults(MqttWorker.drain)["timeout_s"],
            "ops_host": _keyword_defaults(OpsServer.start)["host"],
            "vad": VadSettings().name,
        },
    }


# mqtt-worker options that fill no configuration value (their defaults are the command's alone)
MQTT_WORKER_OWN = {"model", "group", "worker_id", "ops_port"}


def test_command_only_defaults_are_the_configurations_own():
    wanted = _config_defaults()
    assert set(_click_options("mqtt-worker")) - {"help"} == set(wanted["mqtt-worker"]) | MQTT_WORKER_OWN
    checked = 0
    for command, want in wanted.items():
        opts = _click_options(command)
        for param, config_default in want.items():
            default = opts[param].default  # type: ignore[attr-defined]
            if param == "allow_origin":  # None on the command line: no extra origin, ServeOptions' ()
                default = tuple(default or ())
            assert default == config_default and type(default) is type(config_default), (command, param, default)
            checked += 1
    assert checked >= 25, checked
    for command, param, value in [
        ("eval", "concurrency", 4),
        ("eval", "block_ms", 20),
        ("eval", "pad_silence_ms", 2000),
        ("eval", "realtime", True),
        ("serve", "host", "127.0.0.1"),
        ("serve", "port", 8765),
        ("serve", "max_frame_bytes", 256 * 1024),
        ("mqtt-worker", "port", 1883),
    ]:  # the values themselves did not change
        assert wanted[command][param] == value, (command, param)


def test_the_server_configs_share_serves_defaults():
    from speechstream.net.protocol import Limits
    from speechstream.net.serve import ServeOptions
    from speechstream.net.ws import ServerConfig

    serve, server, limits = ServeOptions(), ServerConfig(), Limits()
    assert (server.host, server.port, server.max_connections) == (serve.host, serve.port, serve.max_connections)
    assert (server.idle_timeout_s, server.serve_web, server.allow_origins) == (
        serve.idle_timeout_s,
        serve.web,
        serve.allow_origins,
    )
    assert (limits.max_frame_bytes, limits.max_realtime_factor) == (serve.max_frame_bytes, serve.max_realtime_factor)


@pytest.mark.parametrize("command", ["eval", "serve", "mqtt-worker"])
def test_help_shows_the_configurations_defaults(command):
    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    ctx = typer.Context(cmd, info_name=command)
    opts = _click_options(command)
    shown = 0
    for param, value in _config_defaults()[command].items():
        if value is None or isinstance(value, bool | tuple) or isinstance(opts[param].show_default, str):  # type: ignore[attr-defined]
            continue  # flags, "none" defaults and worded defaults show a word, not the value
        record = opts[param].get_help_record(ctx)  # type: ignore[attr-defined]
        assert record is not None and re.search(rf"\[default: {re.escape(str(value))}[;\]]", record[1]), (
            command,
            param,
            record,
        )
        shown += 1
    assert shown >= 3, shown


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


@pytest.mark.parametrize("value, expected", [(None, 90), (0, 0), (40, 40)])
def test_vad_backdate_reaches_the_segmenter(value, expected):
    """--vad-backdate-max-ms / TOML vad_backdate_max_ms: None keeps webrtc's tuned 90 ms, 0 turns it off."""
    from speechstream.builder import build_vad
    from stream.config import TranscribeConfig, VadSettings

    cfg = TranscribeConfig.from_flat(**({} if value is None else {"vad_backdate_max_ms": value}))
    node = build_vad(cfg)
    assert node.segmenter.config.backdate_max_ms == expected
    assert build_vad(VadSettings(name="silero")).segmenter.config.backdate_max_ms == 0


def test_vad_backdate_out_of_range_is_refused():
    from stream.config import VadSettings
    from stream.errors import ConfigError

    with pytest.raises(ConfigError, match="vad_backdate_max_ms"):
        VadSettings(backdate_max_ms=-1)


def test_vad_backdate_from_toml(tmp_path):
    from speechstream.builder import build_vad
    from stream.config import TranscribeConfig, load_toml

    toml = tmp_path / "c.toml"
    toml.write_text("vad_backdate_max_ms = 30\n")
    cfg = TranscribeConfig.from_mapping(load_toml(toml))
    assert build_vad(cfg).segmenter.config.backdate_max_ms == 30
