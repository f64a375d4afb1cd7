"""--lookahead-ms: validated at parse time (CLI, TOML, RecognizerConfig), and real in cached mode.

What cached mode computes with a lookahead is tested in tests/streaming/test_cached_lookahead.py;
here: a value that cannot work is one clear line before anything loads, and a value that can reaches
the engine (the CLI's finals are the greedy text of the engine streamed with that lookahead).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from engines.online.config import MAX_LOOKAHEAD_MS
from speechstream.cli import app
from stream.config import TranscribeConfig
from stream.errors import ConfigError
from stream.recognizer import RecognizerConfig

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hello.wav"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speechstream: error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "value,needle",
    [
        ("30", "multiple of the 20 ms frame stride"),
        ("-20", "--lookahead-ms"),
        (str(MAX_LOOKAHEAD_MS + 20), f"at most {MAX_LOOKAHEAD_MS}"),
    ],
)
@pytest.mark.parametrize("mode", ["cached", "window"])
def test_transcribe_refuses_bad_lookahead_in_one_line(value, needle, mode):
    assert_user_error(
        run("transcribe", "--mode", mode, "--lookahead-ms", value, "--model", "none", str(EXAMPLE)), needle
    )


def test_toml_lookahead_is_validated_at_parse_time(tmp_path):
    cfg = tmp_path / "ss.toml"
    cfg.write_text('[transcribe]\nlookahead_ms = 50\nmodel = "none"\n')
    assert_user_error(run("transcribe", "--config", str(cfg), str(EXAMPLE)), "--lookahead-ms", "50")


def test_eval_refuses_bad_lookahead_before_loading(tmp_path):
    assert_user_error(run("eval", str(tmp_path / "never-read.tsv"), "--lookahead-ms", "10"), "multiple of the 20 ms")


def test_config_objects_validate_on_their_own():
    with pytest.raises(ConfigError, match="multiple of the 20 ms"):
        RecognizerConfig(lookahead_ms=70)
    with pytest.raises(ConfigError, match="at most"):
        TranscribeConfig.from_flat(mic=True, lookahead_ms=MAX_LOOKAHEAD_MS + 20).validate()
    assert RecognizerConfig(lookahead_ms=320).lookahead_ms == 320
    TranscribeConfig(mic=True, recognizer=RecognizerConfig(lookahead_ms=MAX_LOOKAHEAD_MS)).validate()


def test_cached_lookahead_runs_through_the_cli(tmp_path):
    """cached mode with --lookahead-ms: the finals carry exactly the engine's greedy stream text."""
    sys.path.insert(0, str(REPO / "tests"))
    from hf_tiny import build_tiny

    from engines.api import load_model
    from engines.tokenizer import CTCTokenizer
    from tests.streamkit import gated_tones

    torch.set_num_threads(1)
    model_dir = build_tiny("wav2vec2", "ctc", tmp_path / "tiny", perturb=0.1, feat_extract_norm="layer")
    x = gated_tones(3, 2.5)
    clip = tmp_path / "tones.wav"
    sf.write(str(clip), x, 16000, subtype="FLOAT")
    out = tmp_path / "e.jsonl"
    result = run(
        "transcribe",
        str(clip),
        "--model",
        str(model_dir),
        "--no-progress",
        "--vad",
        "none",
        "--chunk-ms",
        "320",
        "--left-context-ms",
        "1280",
        "--lookahead-ms",
        "200",
        "--jsonl",
        str(out),
    )
    assert result.exit_code == 0, result.output
    finals = [e for e in map(json.loads, out.read_text().splitlines()) if e["type"] == "final_transcript"]
    model = load_model(model_dir)
    tok = CTCTokenizer.from_dir(model_dir)
    audio = torch.from_numpy(np.asarray(x, dtype=np.float32))
    with_la = model.stream(audio, "cached", chunk_ms=320, left_context_ms=1280, lookahead_ms=200)
    without = model.stream(audio, "cached", chunk_ms=320, left_context_ms=1280, lookahead_ms=0)
    assert (with_la - without).abs().max().item() > 1e-3  # the lookahead changes the frames
    want = tok.decode(with_la.argmax(-1).tolist())
    assert want != tok.decode(without.argmax(-1).tolist())  # so a recogniser ignoring it would fail
    assert "".join(f["text"] for f in finals).replace(" ", "") == want.replace(" ", "")
