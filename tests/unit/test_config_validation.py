"""Issue 21, defect 4: every config field the engines read is checked by type and range at load.

A wrong-typed config.json ("hidden_size": "big", "vocab_size": -3) gave a 98-line TypeError
traceback; it now gives ``speechstream: error: DIR/config.json: field 'hidden_size' must be a
positive integer, got 'big'`` and exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from engines.api import load_model
from engines.common.config import check_field
from engines.errors import CheckpointError, ConfigFieldError, EngineError
from engines.wav2vec2 import Wav2Vec2Config
from engines.wav2vec2_bert import Wav2Vec2BertConfig
from tests.hf_tiny import FAMILIES, build_tiny
from tests.integration.test_cli_entrypoint import entry_point

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hello.wav"

INT, OPT_INT = int, int | None


@pytest.mark.parametrize(
    "name, value, annotation, expected",
    [
        ("hidden_size", "big", INT, "must be a positive integer, got 'big'"),
        ("hidden_size", 0, INT, "must be a positive integer, got 0"),
        ("hidden_size", True, INT, "must be a positive integer, got True"),
        ("hidden_size", 32.0, INT, "must be a positive integer, got 32.0"),
        ("vocab_size", -3, OPT_INT, "must be a positive integer (or null), got -3"),
        ("pad_token_id", -1, OPT_INT, "must be a non-negative integer (or null), got -1"),
        ("layer_norm_eps", 0, float, "must be a positive number, got 0"),
        ("layer_norm_eps", "1e-5", float, "must be a positive number, got '1e-5'"),
        ("layer_norm_eps", float("nan"), float, "must be a positive number, got nan"),
        ("do_stable_layer_norm", "true", bool, "must be true or false, got 'true'"),
        ("do_stable_layer_norm", 1, bool, "must be true or false, got 1"),
        ("hidden_act", 3, str, "must be a string, got 3"),
        ("position_embeddings_type", ["rotary"], str | None, "must be a string (or null), got ['rotary']"),
        ("conv_dim", [], tuple[int, ...], "must be a non-empty list of positive integers, got []"),
        ("conv_dim", [16, "16"], tuple[int, ...], "must be a non-empty list of positive integers"),
        ("conv_stride", 5, tuple[int, ...], "must be a non-empty list of positive integers, got 5"),
    ],
)
def test_check_field_refuses(name, value, annotation, expected) -> None:
    with pytest.raises(ConfigFieldError) as exc:
        check_field(name, value, annotation, "m/config.json")
    assert str(exc.value).startswith(f"m/config.json: field {name!r} ")
    assert expected in str(exc.value)
    assert isinstance(exc.value, CheckpointError) and isinstance(exc.value, EngineError)


@pytest.mark.parametrize(
    "name, value, annotation, out",
    [
        ("hidden_size", 32, INT, 32),
        ("pad_token_id", 0, OPT_INT, 0),
        ("vocab_size", None, OPT_INT, None),
        ("layer_norm_eps", 1, float, 1.0),
        ("rotary_embedding_base", 10000, float, 10000.0),
        ("conv_dim", [16, 16], tuple[int, ...], (16, 16)),
        ("position_embeddings_type", None, str | None, None),
        ("right_max_position_embeddings", 0, int, 0),
    ],
)
def test_check_field_accepts(name, value, annotation, out) -> None:
    assert check_field(name, value, annotation, "") == out


def test_every_annotation_the_families_use_has_a_rule() -> None:
    """A new field type in a family's dataclass must get a rule here (else it would go unchecked)."""
    import typing

    from engines.wav2vec2_conformer import Wav2Vec2ConformerConfig
    from engines.wavlm import WavLMConfig

    ruled = {int, float, bool, str, int | None, str | None, tuple[int, ...]}
    for cls in (Wav2Vec2Config, WavLMConfig, Wav2Vec2ConformerConfig, Wav2Vec2BertConfig):
        for name, ann in typing.get_type_hints(cls).items():
            assert ann in ruled, (cls.__name__, name, ann)


def _edit(path: Path, **changes) -> None:
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_typed_field_is_refused_at_load_in_every_family(family: str, tmp_path: Path) -> None:
    d = build_tiny(family, "ctc", tmp_path)
    for key, value, what in (
        ("hidden_size", "big", "a positive integer"),
        ("num_hidden_layers", -1, "a positive integer"),
        ("layer_norm_eps", "tiny", "a positive number"),
        ("vocab_size", -3, "a positive integer"),
    ):
        shutil.copy(d / "config.json", tmp_path / "config.orig")
        _edit(d / "config.json", **{key: value})
        with pytest.raises(ConfigFieldError) as exc:
            load_model(d)
        assert str(exc.value).startswith(f"{d / 'config.json'}: field {key!r} must be {what}"), str(exc.value)
        shutil.copy(tmp_path / "config.orig", d / "config.json")
    load_model(d)  # the untouched config still loads


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"conv_kernel": [10, 3]}, "conv_dim/conv_stride/conv_kernel"),
        ({"tdnn_dim": [16, 16]}, "tdnn_dim/tdnn_kernel/tdnn_dilation"),
        ({"num_attention_heads": 5}, "num_attention_heads"),
        ({"num_conv_pos_embedding_groups": 3}, "num_conv_pos_embedding_groups"),
        ({"architectures": "Wav2Vec2ForCTC"}, "architectures"),
        ({"id2label": {"zero": "a"}}, "id2label"),
        ({"model_type": 2}, "model_type"),
        ({"vocab_size": None}, "vocab_size"),  # a CTC head needs one
    ],
)
def test_fields_that_belong_together_and_raw_fields(changes, field, tmp_path: Path) -> None:
    d = build_tiny("wav2vec2", "ctc", tmp_path)
    _edit(d / "config.json", **changes)
    with pytest.raises(ConfigFieldError, match=f"config.json: field '{field}' must be"):
        load_model(d)


@pytest.mark.parametrize(
    "key, value, what",
    [
        ("do_normalize", "yes", "true or false"),
        ("sampling_rate", "16k", "a positive integer"),
        ("padding_value", None, "a number"),
        ("return_attention_mask", 1, "true or false"),
    ],
)
def test_preprocessor_fields_are_checked(key, value, what, tmp_path: Path) -> None:
    d = build_tiny("wav2vec2", "ctc", tmp_path)
    _edit(d / "preprocessor_config.json", **{key: value})
    with pytest.raises(ConfigFieldError) as exc:
        load_model(d)
    assert str(exc.value) == f"{d / 'preprocessor_config.json'}: field {key!r} must be {what}, got {value!r}"


def test_cli_in_process_gives_one_line_for_a_negative_vocab_size(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from speechstream.cli import app

    d = build_tiny("wav2vec2", "ctc", tmp_path)
    _edit(d / "config.json", vocab_size=-3)
    result = CliRunner().invoke(app, ["transcribe", str(EXAMPLE), "--model", str(d), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"speechstream: error: {d / 'config.json'}: field 'vocab_size' must be a positive integer (or null), got -3"
    )


def test_installed_cli_gives_one_line_and_exit_2_for_the_probe_config(tmp_path: Path) -> None:
    """The probe of issue 21: "hidden_size": "big", "vocab_size": -3 (the first field read is reported)."""
    d = build_tiny("wav2vec2", "ctc", tmp_path / "m")
    _edit(d / "config.json", hidden_size="big", vocab_size=-3)
    run = subprocess.run(
        [entry_point(), "transcribe", str(EXAMPLE), "--model", str(d), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"speechstream: error: {d / 'config.json'}: field 'hidden_size' must be a positive integer, got 'big'"
    ]
    assert "Traceback" not in run.stderr and run.stdout == ""
