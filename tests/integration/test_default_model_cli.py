"""The README's main job: ``speechstream transcribe examples/hello.wav`` with no ``--model`` runs the
bundled default model and its LM, and the captions read like the reference transcript.

The thresholds sit a few points above what the shipped model (Session 15, stage h) scores here: with the LM,
CER 7.7 % and WER 25.0 % (it still joins a few words: "LASINDOG", "RETINTEDISCAS"); greedy, 11.8 % and 47.2 %
(stage g: 6.7 % and 27.8 % with the LM; stage f: 9.7 % and 41.7 %).
So a broken frontend, tokenizer, LM or a model swapped for noise fails, while a retrained model that is
at least as good passes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jiwer

from speechstream.eval import normalize_text
from tests.integration.test_cli_entrypoint import entry_point

REPO = Path(__file__).resolve().parents[2]


def _finals(*extra: str) -> list[dict]:
    proc = subprocess.run(
        [entry_point(), "transcribe", str(REPO / "examples" / "hello.wav"), "--jsonl", "-", "--no-progress", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Loading the LM" not in proc.stderr and "****" not in proc.stderr, proc.stderr  # KenLM chatter filtered
    return [e for e in map(json.loads, proc.stdout.splitlines()) if e["type"] == "final_transcript"]


def test_default_transcribe_reads_like_the_reference():
    ref = normalize_text((REPO / "examples" / "hello.txt").read_text().replace("\n", " "))
    with_lm = _finals()
    greedy = _finals("--lm", "none")
    assert len(with_lm) == len(greedy) == 4  # one final per sentence
    hyp_lm = normalize_text(" ".join(f["text"] for f in with_lm))
    hyp_greedy = normalize_text(" ".join(f["text"] for f in greedy))
    assert jiwer.cer(ref, hyp_lm) <= 0.10, hyp_lm
    assert jiwer.wer(ref, hyp_lm) <= 0.35, hyp_lm
    assert jiwer.wer(ref, hyp_lm) < jiwer.wer(ref, hyp_greedy), (hyp_lm, hyp_greedy)  # the bundled LM helps here
    for f in with_lm:  # word timestamps inside the final's span
        assert f["words"] and all(
            f["sample"] <= w["start_sample"] <= w["end_sample"] <= f["end_sample"] for w in f["words"]
        )
