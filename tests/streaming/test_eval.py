"""speechstream.eval: the manifest scorer runs the real streaming graph and reports its table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from engines.online.config import RecognizerConfig
from examples.lm.lm_build import build_arpa, write_arpa
from speechstream.eval import EvalConfig, evaluate, format_report, normalize_text, read_manifest, speech_extent
from stream.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_tiny import build_tiny  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_tiny("wav2vec2", "ctc", tmp_path_factory.mktemp("tiny_eval"))


def tone(seconds: float, lead_s: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    x = 0.002 * rng.standard_normal(n)
    a, b = int(lead_s * 16000), int((seconds - 0.2) * 16000)
    t = np.arange(b - a) / 16000
    x[a:b] += 0.4 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return x.astype(np.float32)


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    (tmp_path / "wav").mkdir()
    rows = ["audio\ttext\tspeaker"]
    for i, text in enumerate(["the tone", "another, tone!"]):
        sf.write(tmp_path / "wav" / f"{i}.wav", tone(1.0 + 0.3 * i, 0.2, i), 16000)
        rows.append(f"wav/{i}.wav\t{text}\tx")
    path = tmp_path / "m.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_helpers(manifest: Path, tmp_path: Path) -> None:
    assert normalize_text("Another, tone!  it's") == "ANOTHER TONE IT'S"
    items = read_manifest(manifest)
    assert [t for _, t in items] == ["the tone", "another, tone!"] and all(p.is_file() for p, _ in items)
    start, end = speech_extent(tone(1.0, 0.2, 0))
    assert abs(start - 3200) <= 320 and abs(end - 12800) <= 320
    bad = tmp_path / "bad.tsv"
    bad.write_text("audio\ttext\nnope.wav\thello\n")
    with pytest.raises(ConfigError, match="not found"):
        read_manifest(bad)


def test_eval_streams_the_manifest_and_scores_it(manifest: Path, model_dir: Path, tmp_path: Path) -> None:
    arpa = tmp_path / "lm.arpa"
    write_arpa(*build_arpa([["THE", "TONE"], ["ANOTHER", "TONE"], ["TEN", "TONES"]], order=2), arpa)
    cfg = EvalConfig(
        manifest,
        model=str(model_dir),
        recognizer=RecognizerConfig(chunk_ms=320, left_context_ms=1280, lm_path=str(arpa)),
        concurrency=2,
        realtime=True,
        pad_silence_ms=300,
        block_ms=100,
    )
    report = evaluate(cfg, log=lambda msg: None)
    assert len(report.utterances) == 2
    assert report.lm_path == str(arpa)  # the LM the finals used
    for u in report.utterances:
        assert u.stream_hyp  # random weights: garbage, but some text
        assert u.offline_greedy and u.offline_lm is not None
        assert u.first_partial_latency_s is not None and -0.5 < u.first_partial_latency_s < 10
        assert u.final_latency_s is not None and -0.5 < u.final_latency_s < 10
        assert u.endpoint_reasons
    assert report.rtf > 0 and report.audio_s == pytest.approx(2.3, abs=0.01)
    table = format_report(report)
    for needle in (
        "streaming WER / CER",
        "offline WER / CER (same model, greedy)",
        "beam 32 + LM",
        "first-partial latency P50 / P95",
        "finalisation latency P50 / P95",
        "RTF",
    ):
        assert needle in table


def test_cli_eval_runs_and_refuses_bad_input(manifest: Path, model_dir: Path) -> None:
    from typer.testing import CliRunner

    from speechstream.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(manifest), "--model", str(model_dir), "--no-realtime", "--chunk-ms", "320"])
    assert res.exit_code == 0, res.output
    assert "streaming WER / CER" in res.output and "RTF" in res.output
    res = runner.invoke(app, ["eval", str(manifest.parent / "missing.tsv"), "--model", str(model_dir)])
    assert res.exit_code == 2 and "manifest not found" in res.output
    res = runner.invoke(app, ["eval", str(manifest), "--model", str(model_dir), "--lm", str(manifest)])
    assert res.exit_code == 2 and "neither an ARPA" in res.output
