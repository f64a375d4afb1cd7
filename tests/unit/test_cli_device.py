"""--compute-device on transcribe, eval and serve (and TOML compute_device): checked at parse time,
carried in RecognizerConfig.compute_device to the model load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from speechstream.cli import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hello.wav"
NO_GPU = not torch.cuda.is_available()


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speechstream: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["transcribe", "--model", "none", str(EXAMPLE)],
        ["eval", "never-read.tsv"],
        ["serve"],
    ],
)
def test_bad_spelling_is_one_line_before_anything_loads(args, monkeypatch):
    import speechstream.net.serve

    monkeypatch.setattr(speechstream.net.serve, "serve_main", lambda opts: pytest.fail("serve started"))
    assert_user_error(run(*args, "--compute-device", "gpu"), "--compute-device", "'gpu'")


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize(
    "args", [["transcribe", "--model", "none", str(EXAMPLE)], ["eval", "never-read.tsv"], ["serve"]]
)
def test_cuda_without_a_gpu_is_one_line_exit_2(args, monkeypatch):
    import speechstream.net.serve

    monkeypatch.setattr(speechstream.net.serve, "serve_main", lambda opts: pytest.fail("serve started"))
    assert_user_error(run(*args, "--compute-device", "cuda"), "no CUDA GPU")


def test_toml_compute_device_is_checked(tmp_path):
    cfg = tmp_path / "ss.toml"
    cfg.write_text('[transcribe]\ncompute_device = "tpu"\nmodel = "none"\n')
    assert_user_error(run("transcribe", "--config", str(cfg), str(EXAMPLE)), "--compute-device", "'tpu'")


def test_device_reaches_the_recognizer_config(monkeypatch, tmp_path):
    import speechstream.net.serve
    from speechstream.builder import build_recognizer
    from speechstream.net.serve import build_nodes
    from stream.config import TranscribeConfig
    from stream.recognizer import Recognizer

    seen = []
    monkeypatch.setattr(speechstream.net.serve, "serve_main", seen.append)
    assert run("serve", "--model", str(tmp_path), "--compute-device", "cpu").exit_code == 0
    (rec,) = [n for n in build_nodes(seen[-1])[0] if isinstance(n, Recognizer)]
    assert rec.config.compute_device == "cpu"
    cfg = TranscribeConfig.from_mapping({"input_path": str(EXAMPLE), "compute_device": "cpu"}).validate()
    assert build_recognizer(cfg, "m").config.compute_device == "cpu"
    assert build_recognizer(TranscribeConfig(input_path=EXAMPLE), "m").config.compute_device == "auto"
