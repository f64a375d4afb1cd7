"""The checkpoint loader: weight-norm layouts, weight formats, strict keys, refused configs,
hub ids from a local HF cache (offline, real cache layout)."""

import hashlib
import json
import os
import shutil

import pytest
import torch

from engines.api import load_model
from engines.common.hf import fold_weight_norm
from engines.errors import CheckpointError, EngineError, KeyMismatchError, ModelNotFoundError, UnsupportedConfigError
from tests import hf_tiny

pytest.importorskip("transformers")
# tiny models: threads only add contention on the shared 2-core machine
torch.set_num_threads(1)


def _logits(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return model.forward(0.1 * torch.randn(1, 4000, generator=g)).frames


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    return hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("layout", ["parametrizations", "legacy"])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_weight_norm_layouts_and_formats_load_to_the_same_model(layout, fmt, tmp_path, reference_dir):
    path = hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path, weight_norm_layout=layout, weights_format=fmt)
    names = os.listdir(path)
    assert ("pytorch_model.bin" in names) == (fmt == "bin")
    sd_keys = (
        torch.load(path / "pytorch_model.bin", weights_only=True).keys()
        if fmt == "bin"
        else __import__("safetensors.torch").torch.load_file(str(path / "model.safetensors")).keys()
    )
    marker = "weight_g" if layout == "legacy" else "parametrizations.weight.original0"
    assert any(marker in k for k in sd_keys)
    torch.testing.assert_close(_logits(load_model(path)), _logits(load_model(reference_dir)), atol=1e-6, rtol=0)


def test_fold_weight_norm_matches_torch():
    conv = torch.nn.Conv1d(8, 8, 5, groups=2)
    wn = torch.nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
    sd = {"c." + k: v for k, v in wn.state_dict().items()}
    folded = fold_weight_norm(sd)
    assert "c.weight" in folded and not any("parametrizations" in k for k in folded)
    torch.testing.assert_close(folded["c.weight"], wn.weight.detach())
    legacy = {
        "c.weight_g": sd["c.parametrizations.weight.original0"],
        "c.weight_v": sd["c.parametrizations.weight.original1"],
    }
    torch.testing.assert_close(fold_weight_norm(legacy)["c.weight"], wn.weight.detach())


def _rewrite_weights(path, edit):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path / "model.safetensors"))
    edit(sd)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_strict_key_check_names_missing_unexpected_and_checkpoint(tmp_path):
    path = hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path)

    def edit(sd):
        sd.pop("lm_head.bias")
        sd["wav2vec2.encoder.extra.weight"] = torch.zeros(1)

    _rewrite_weights(path, edit)
    with pytest.raises(KeyMismatchError) as exc:
        load_model(path)
    msg = str(exc.value)
    assert "lm_head.bias" in msg and "wav2vec2.encoder.extra.weight" in msg
    assert str(path / "model.safetensors") in msg
    assert exc.value.missing == ["lm_head.bias"]
    assert exc.value.unexpected == ["wav2vec2.encoder.extra.weight"]


def test_shape_mismatch_is_a_checkpoint_error(tmp_path):
    path = hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path)
    _rewrite_weights(path, lambda sd: sd.__setitem__("lm_head.bias", torch.zeros(99)))
    with pytest.raises(CheckpointError, match=r"lm_head\.bias.*\(99,\)"):
        load_model(path)


def test_training_only_keys_are_dropped(tmp_path):
    # masked_spec_embed (SpecAugment) and objective.weight (AM-softmax) are training plumbing
    path = hf_tiny.build_tiny("wavlm", "xvector", tmp_path, mask_time_prob=0.05)
    from safetensors.torch import load_file

    keys = load_file(str(path / "model.safetensors")).keys()
    assert "wavlm.masked_spec_embed" in keys and "objective.weight" in keys
    load_model(path)


def test_bare_model_checkpoint_loads_without_prefix(tmp_path):
    path = hf_tiny.build_tiny("wav2vec2", "base", tmp_path)
    model = load_model(path)
    assert model.head == "base"
    assert model.forward(torch.zeros(1, 4000)).frames.shape == (1, 12, 32)


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "key,value",
    [
        ("model_type", "hubert"),
        ("hidden_act", "mish"),
        ("feat_extract_activation", "softplus"),
        ("feat_extract_norm", "batch"),
        ("architectures", ["Wav2Vec2ForPreTraining"]),
    ],
)
def test_unsupported_config_is_refused_with_value_and_supported(key, value, tmp_path):
    path = hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path)
    _edit_config(path, **{key: value})
    with pytest.raises(UnsupportedConfigError) as exc:
        load_model(path)
    msg = str(exc.value)
    shown = value[0] if isinstance(value, list) else value
    assert repr(shown) in msg and "supported:" in msg and key in msg
    assert str(path / "config.json") in msg
    if key == "model_type":
        assert "'wav2vec2'" in msg and "'wavlm'" in msg


def test_missing_directory_and_weights(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(tmp_path / "empty")
    path = hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path / "m")
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        load_model(path)
    assert issubclass(CheckpointError, EngineError) and issubclass(ModelNotFoundError, EngineError)


def _fake_hub_cache(cache, repo_id, src):
    """The real cache layout: blobs/<sha>, snapshots/<commit>/<file> -> ../../blobs/<sha>, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, repo / "blobs" / sha)
        os.symlink(os.path.join("..", "..", "blobs", sha), snap / f.name)
    return snap


def test_hub_id_resolves_from_local_cache_offline(tmp_path, monkeypatch, reference_dir):
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "acme/tiny-w2v2", reference_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model("acme/tiny-w2v2")
    assert model.family == "wav2vec2" and model.head == "ctc"
    assert model.vocab is not None and model.vocab["<pad>"] == 0
    torch.testing.assert_close(_logits(model), _logits(load_model(reference_dir)), atol=0, rtol=0)
    with pytest.raises(ModelNotFoundError, match="acme/not-cached"):
        load_model("acme/not-cached")
