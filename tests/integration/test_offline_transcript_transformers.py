"""Issue 3, point 4: in offline mode a CTC checkpoint's greedy transcript equals transformers'.

The checkpoint is a tiny random-init Wav2Vec2ForCTC saved in HF layout (tests/hf_tiny.py); the
reference is the standard transformers recipe (``Wav2Vec2Processor`` features, ``argmax`` of the
logits, ``processor.batch_decode``) on the same audio. Ours runs through the installed
``speechstream`` entry point with ``--mode offline --vad none`` (the whole file is one segment).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import torch

from tests.hf_tiny import build_tiny
from tests.integration.test_cli_entrypoint import entry_point

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hello.wav"


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_offline_greedy_transcript_equals_transformers(tmp_path: Path, family: str) -> None:
    transformers = pytest.importorskip("transformers")
    model_dir = build_tiny(family, "ctc", tmp_path / "model")

    audio, rate = sf.read(EXAMPLE, dtype="float32")
    processor = transformers.Wav2Vec2Processor.from_pretrained(model_dir)
    reference_model = transformers.AutoModelForCTC.from_pretrained(model_dir).eval()
    with torch.no_grad():
        inputs = processor(audio, sampling_rate=rate, return_tensors="pt")
        logits = reference_model(inputs.input_values).logits
    expected = processor.batch_decode(logits.argmax(-1))[0]
    assert expected.strip(), "the reference transcript is empty; the comparison would prove nothing"

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    run = subprocess.run(
        [
            entry_point(),
            "transcribe",
            str(EXAMPLE),
            "--model",
            str(model_dir),
            "--mode",
            "offline",
            "--vad",
            "none",
            "--jsonl",
            "-",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    finals = [json.loads(line) for line in run.stdout.splitlines() if '"final_transcript"' in line]
    assert len(finals) == 1, run.stdout[-2000:]
    # speechstream's finals are single-spaced and trimmed (a doubled delimiter is one space; issue 20)
    assert finals[0]["text"] == " ".join(expected.split())
