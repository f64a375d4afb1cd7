"""Issue 17: every file layout public CTC checkpoints have loads, and transcribes as transformers does.

Each case is a tiny random-init checkpoint written by ``transformers`` (tests/hf_zoo.py) in one
layout. Ours: ``speechstream transcribe CLIP --model DIR --mode offline --vad none --lm none``
(offline greedy over the whole clip as one segment). The reference: ``AutoProcessor`` features,
``argmax`` of ``AutoModelForCTC``'s fp32 logits, ``processor.batch_decode``. The transcripts must be
equal. Cases marked ``SCRIPT`` run the installed console script in a subprocess (at least one per
layout group); the others run the same CLI in-process with Typer's CliRunner.

Layouts that cannot work (a sampling rate or feature size the engines do not implement, a
vocabulary larger than the CTC head) give one error line naming the file and the field.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.hf_zoo import VARIANTS, Layout, build_zoo, reference_transcript
from tests.integration.test_cli_entrypoint import entry_point

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hello.wav"
CLIP_S = 3.0

SCRIPT, RUNNER = "script", "runner"
# non-default values of fields the engines must honour, each of which changes the transcript
# (test_honoured_fields_change_the_reference); num_conv_pos_embedding_groups changes weight shapes
HONOURED = dict(hidden_act="relu", layer_norm_eps=0.5, num_conv_pos_embedding_groups=2)

# case id -> (layout, how the CLI is run). Groups: defect (issue 17's headline), tok, vocab,
# weights, proc, fe, config.
CASES: dict[str, tuple[Layout, str]] = {
    # the defect: current transformers' tokenizer files, <s> </s> appended as ids 30, 31, CTC head 30
    **{
        f"defect-current-tokenizer-head30-{v}": (Layout(variant=v), SCRIPT if v == "w2v-bert" else RUNNER)
        for v in VARIANTS
    },
    # tokenizer files
    "tok-current-head32": (Layout(head="tokenizer"), RUNNER),
    "tok-legacy-960h": (  # facebook/wav2vec2-base-960h, file for file
        Layout(
            vocab="base960h",
            tokenizer="legacy-960h",
            processor="preprocessor",
            weights="bin",
            return_attention_mask=False,
        ),
        SCRIPT,
    ),
    "tok-legacy-added-tokens-json-head30": (
        Layout(variant="w2v2-layer", tokenizer="legacy-added", processor="preprocessor"),
        RUNNER,
    ),
    "tok-legacy-added-tokens-json-head32": (
        Layout(tokenizer="legacy-added", processor="preprocessor", head="tokenizer"),
        RUNNER,
    ),
    # vocabularies
    "vocab-bracket-lower-tutorial-head32": (Layout(vocab="bracket", head="tokenizer"), SCRIPT),
    "vocab-bracket-lower-head30": (Layout(variant="wavlm", vocab="bracket"), RUNNER),
    "vocab-upper-do_lower_case": (Layout(do_lower_case=True), RUNNER),
    "vocab-lower-do_lower_case": (Layout(vocab="bracket", do_lower_case=True), RUNNER),
    "vocab-base960h-current-tokenizer": (Layout(vocab="base960h"), RUNNER),
    # weights files
    "weights-safetensors-sharded": (Layout(weights="sharded"), SCRIPT),
    "weights-bin": (Layout(variant="w2v2-layer", weights="bin"), RUNNER),
    "weights-bin-sharded": (Layout(weights="bin-sharded"), RUNNER),
    "weights-fp16": (Layout(variant="wavlm", weights="fp16"), RUNNER),
    "weights-bf16": (Layout(variant="conformer-rot", weights="bf16"), RUNNER),
    "weights-fp16-w2v-bert": (Layout(variant="w2v-bert", weights="fp16"), RUNNER),
    # processor files
    "proc-preprocessor_config-only": (Layout(processor="preprocessor"), RUNNER),
    "proc-preprocessor_config-only-w2v-bert": (Layout(variant="w2v-bert", processor="preprocessor"), RUNNER),
    "proc-with-lm": (Layout(processor="with_lm"), SCRIPT),
    # feature extractor fields (nested in processor_config.json, and in preprocessor_config.json)
    # (a layer-norm CNN with conv bias: a group-norm CNN's first GroupNorm hides do_normalize)
    "fe-normalize0-mask0": (Layout(variant="w2v2-layer", do_normalize=False, return_attention_mask=False), SCRIPT),
    "fe-normalize0-mask1": (Layout(variant="w2v2-layer", do_normalize=False), RUNNER),
    "fe-normalize1-mask0": (Layout(variant="w2v2-layer", return_attention_mask=False), RUNNER),
    "fe-normalize0-preprocessor": (Layout(variant="w2v2-layer", do_normalize=False, processor="preprocessor"), RUNNER),
    # config.json fields: training-only ones next to non-default ones the engines must honour
    "config-training-fields": (Layout(training_fields=True, bookkeeping=True, seed=2), SCRIPT),
    "config-training-fields-conformer": (
        Layout(variant="conformer-rel", training_fields=True, bookkeeping=True),
        RUNNER,
    ),
    "config-training-fields-w2v-bert": (Layout(variant="w2v-bert", training_fields=True, bookkeeping=True), RUNNER),
    "config-honoured-fields": (Layout(training_fields=True, config=HONOURED), RUNNER),
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    audio, rate = sf.read(EXAMPLE, dtype="float32")
    assert rate == 16000
    audio = audio[: int(CLIP_S * rate)]
    path = tmp_path_factory.mktemp("zoo-audio") / "clip.wav"
    sf.write(path, audio, rate, subtype="FLOAT")
    return path, audio


def transcribe(clip: Path, model_dir: Path, how: str, *extra: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``speechstream transcribe`` on ``clip`` in offline greedy mode."""
    args = [
        "transcribe",
        str(clip),
        "--model",
        str(model_dir),
        "--mode",
        "offline",
        "--vad",
        "none",
        "--jsonl",
        "-",
        "--no-progress",
        *extra,
    ]
    if how == SCRIPT:
        run = subprocess.run(
            [entry_point(), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
        )
        return run.returncode, run.stdout, run.stderr
    from typer.testing import CliRunner

    from speechstream.cli import app

    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def finals_of(stdout: str) -> list[str]:
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [e["text"] for e in events if e["type"] == "final_transcript"]


def reference(model_dir: Path, audio: np.ndarray) -> str:
    with warnings.catch_warnings():  # transformers' own deprecation warnings (WavLM's mask types)
        warnings.simplefilter("ignore")
        text = reference_transcript(model_dir, audio)
    # a transcript that can tell a wrong decode from a right one: several words and letters
    assert len(text.split()) >= 2 and len(set(text.replace(" ", ""))) >= 5, text
    # speechstream's finals are single-spaced and trimmed (a doubled delimiter is one space; issue 20)
    return " ".join(text.split())


@pytest.mark.parametrize("case", list(CASES))
def test_zoo_offline_greedy_transcript_equals_transformers(case: str, clip, tmp_path: Path) -> None:
    layout, how = CASES[case]
    model_dir = build_zoo(layout, tmp_path / "model")
    expected = reference(model_dir, clip[1])
    code, out, err = transcribe(clip[0], model_dir, how, "--lm", "none")
    assert code == 0, err
    assert finals_of(out) == [expected]


def test_defect_layout_files_are_what_transformers_writes(tmp_path: Path) -> None:
    """The defect layout really is the one issue 17 describes (so the cases above test it)."""
    d = build_zoo(Layout(), tmp_path / "m")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert {cfg["added_tokens_decoder"][i]["content"] for i in ("30", "31")} == {"<s>", "</s>"}
    assert json.loads((d / "added_tokens.json").read_text()) == {"<s>": 30, "</s>": 31}
    assert len(json.loads((d / "vocab.json").read_text())) == 30
    assert json.loads((d / "config.json").read_text())["vocab_size"] == 30
    assert (d / "processor_config.json").is_file() and not (d / "preprocessor_config.json").exists()


def test_do_normalize_changes_the_reference(clip, tmp_path: Path) -> None:
    """The fe-normalize cases can fail: on their variant the field changes transformers' transcript."""
    on = reference(build_zoo(Layout(variant="w2v2-layer"), tmp_path / "on"), clip[1])
    off = reference(build_zoo(Layout(variant="w2v2-layer", do_normalize=False), tmp_path / "off"), clip[1])
    assert on != off


def test_honoured_fields_change_the_reference(clip, tmp_path: Path) -> None:
    """config-honoured-fields can fail: the same weights read with a default in place of each
    honoured value give transformers another transcript."""
    d = build_zoo(CASES["config-honoured-fields"][0], tmp_path / "m")
    ours = reference(d, clip[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, default in (("hidden_act", "gelu"), ("layer_norm_eps", 1e-5)):
            assert reference_transcript(d, clip[1], **{key: default}) != ours, key


def test_with_lm_layout_uses_its_language_model(clip, tmp_path: Path) -> None:
    """Without ``--lm none`` the checkpoint's language_model/ decodes the finals (beam search)."""
    d = build_zoo(Layout(processor="with_lm"), tmp_path / "m")
    lm_files = sorted(p.name for p in (d / "language_model").iterdir())
    assert "attrs.json" in lm_files and any(f.endswith((".arpa", ".bin")) for f in lm_files), lm_files
    code, out, err = transcribe(clip[0], d, RUNNER)
    assert code == 0, err
    assert len(finals_of(out)) == 1


# ------------------------------------------------------------------ layouts that cannot work


def _edit_json(path: Path, **changes) -> None:
    raw = json.loads(path.read_text())
    nested = raw.get("feature_extractor") if path.name == "processor_config.json" else None
    (nested if nested is not None else raw).update(changes)
    path.write_text(json.dumps(raw))


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("speechstream: error: "), (code, err)
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "layout, file, field, value",
    [
        (Layout(processor="preprocessor"), "preprocessor_config.json", "sampling_rate", 8000),
        (Layout(), "processor_config.json", "sampling_rate", 22050),
        (Layout(), "processor_config.json", "feature_size", 2),
        (Layout(variant="w2v-bert", processor="preprocessor"), "preprocessor_config.json", "num_mel_bins", 128),
        (Layout(variant="w2v-bert"), "processor_config.json", "stride", 3),
    ],
    ids=["8k-preprocessor", "22k-processor_config", "feature_size", "w2v-bert-mel-bins", "w2v-bert-stride"],
)
def test_unsupported_feature_extractor_names_file_and_field(layout, file, field, value, clip, tmp_path: Path) -> None:
    d = build_zoo(layout, tmp_path / "m")
    _edit_json(d / file, **{field: value})
    code, _, err = transcribe(clip[0], d, RUNNER)
    assert_one_line_error(code, err, str(d / file), field, str(value))


def test_vocabulary_larger_than_head_names_both_files(clip, tmp_path: Path) -> None:
    d = build_zoo(Layout(), tmp_path / "m")
    vocab = json.loads((d / "vocab.json").read_text())
    vocab.update({"Ä": 30, "Ö": 31, "Ü": 32})  # ids the 30-output head cannot emit, inside vocab.json
    (d / "vocab.json").write_text(json.dumps(vocab))
    code, _, err = transcribe(clip[0], d, RUNNER)
    assert_one_line_error(code, err, str(d / "vocab.json"), "vocab_size", "30")


def test_blank_token_outside_head_is_refused(clip, tmp_path: Path) -> None:
    """A pad (CTC blank) appended after vocab.json cannot be emitted by the head: refused, not guessed."""
    d = build_zoo(Layout(), tmp_path / "m")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["pad_token"] = "[PAD]"
    cfg["added_tokens_decoder"]["32"] = {"content": "[PAD]", "special": True}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    code, _, err = transcribe(clip[0], d, RUNNER)
    assert_one_line_error(code, err, "[PAD]", "vocab_size")


@pytest.mark.parametrize("weights", ["fp16", "bf16"])
def test_half_precision_weights_load_as_float32(weights: str, tmp_path: Path) -> None:
    import torch

    from engines.api import load_model

    d = build_zoo(Layout(weights=weights), tmp_path / "m")
    from safetensors.torch import load_file

    stored = {t.dtype for t in load_file(str(d / "model.safetensors")).values()}
    assert stored == {torch.float16 if weights == "fp16" else torch.bfloat16}
    model = load_model(d)
    assert {p.dtype for p in model.module.parameters()} == {torch.float32}
