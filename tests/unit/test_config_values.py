"""The recogniser configuration's value checks (engines.online.config), and the one hub-id rule."""

from __future__ import annotations

import pytest

from engines.online.config import RecognizerConfig, check_compute_device, parse_hub_id, resolve_compute_device
from stream.errors import ConfigError


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("facebook/wav2vec2-base-960h", ("facebook/wav2vec2-base-960h", None)),
        ("gpt2", ("gpt2", None)),  # huggingface_hub accepts a name without a namespace
        ("org/name@main", ("org/name", "main")),
        ("org/name@refs/pr/1", ("org/name", "refs/pr/1")),
        ("a/b/c", None),
        ("./model", None),
        ("/abs/model", None),
        ("~/model", None),
        ("-a/b", None),
        ("a--b/c", None),
        ("a/b.git", None),
        ("a b", None),
        ("", None),
    ],
)
def test_hub_id_rule_is_huggingface_hubs(text, parsed):
    assert parse_hub_id(text) == parsed
    hub = pytest.importorskip("huggingface_hub.utils")
    if parsed is not None:  # whatever we call a hub id, huggingface_hub accepts as one
        hub.validate_repo_id(parsed[0])


def test_loader_and_cli_share_the_rule():
    import inspect

    from engines.common import hf

    assert "parse_hub_id" in inspect.getsource(hf.resolve_model_dir)


@pytest.mark.parametrize("good", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_compute_device_spellings(good):
    check_compute_device(good)
    assert RecognizerConfig(compute_device=good).compute_device == good


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "CUDA", "cuda:x", "mps"])
def test_bad_compute_device_is_refused_at_construction(bad):
    with pytest.raises(ConfigError, match="--compute-device"):
        RecognizerConfig(compute_device=bad)


def test_resolve_compute_device():
    torch = pytest.importorskip("torch")
    assert resolve_compute_device("cpu") == "cpu"
    assert resolve_compute_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_compute_device("cuda")
    with pytest.raises(ConfigError, match="cuda:999"):
        resolve_compute_device("cuda:999")


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"mode": "fast"}, "mode must be one of"),
        ({"chunk_ms": 10}, "chunk_ms must be at least 20"),
        ({"left_context_ms": -1}, "left_context_ms must be >= 0"),
        ({"lm_alpha": float("nan")}, "lm_alpha must be a finite number"),
        ({"beam_width": 0}, "beam_width must be >= 1"),
        ({"hotwords": (" ",)}, "--hotword must not be empty"),
        ({"language": "en us"}, "--language must be a language code"),
    ],
)
def test_recognizer_config_checks_each_value_at_construction(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        RecognizerConfig(**kwargs)
