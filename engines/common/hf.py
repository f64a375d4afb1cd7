"""Hugging Face checkpoint loading, without transformers.

Steps, each failing loudly with the checkpoint's name:
1. resolve the model argument: a local HF-layout directory, or a hub id looked up in the local
   HF cache with ``local_files_only=True`` (the hub is never contacted);
2. parse ``config.json``: ``model_type`` picks the family, ``architectures[0]`` the head, and the
   family's ``parse_config`` checks every field it reads by type and range (ConfigFieldError)
   and refuses values it does not implement (UnsupportedConfigError);
   the feature extractor's fields come from ``processor_config.json`` (nested, as current
   transformers saves a processor) or else ``preprocessor_config.json``, as transformers reads them;
3. read ``model.safetensors`` (or a sharded ``model.safetensors.index.json``), or
   ``pytorch_model.bin`` (or a sharded ``pytorch_model.bin.index.json``) with
   ``torch.load(weights_only=True)``; half-precision tensors are loaded to float32;
4. fold weight norm (``weight_g``/``weight_v`` and ``parametrizations.weight.original0/1``)
   into plain ``weight`` tensors;
5. drop the module's training-only keys, then check keys and shapes strictly and load.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from engines.errors import (
    CheckpointError,
    ConfigFieldError,
    KeyMismatchError,
    ModelNotFoundError,
    UnsupportedConfigError,
)
from engines.online.config import parse_hub_id

__all__ = [
    "resolve_model_dir",
    "read_json",
    "read_preprocessor",
    "check_raw_config",
    "read_state_dict",
    "fold_weight_norm",
    "load_state_dict_strict",
    "head_from_architectures",
    "ModelParts",
    "read_model",
]

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _hub_cache_dir() -> Path:
    # read at call time (huggingface_hub reads its env vars once, at import)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home) / "hub"


def resolve_model_dir(model: str | Path) -> Path:
    """A directory path, or a hub id ("org/name", optionally "org/name@revision") in the local cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    text = str(model)
    hub_id = parse_hub_id(text)
    if hub_id is None or path.exists():
        raise ModelNotFoundError(f"model {text!r}: no such directory, and not a hub id")
    repo_id, revision = hub_id
    cache_dir = _hub_cache_dir()
    try:
        from huggingface_hub import snapshot_download

        snap = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        raise ModelNotFoundError(
            f"model {repo_id!r} is not a directory and is not in the local HF cache {cache_dir} "
            f"(the hub is not contacted; download it elsewhere or pass a local directory)"
        ) from exc
    return Path(snap)


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            result: dict[Any, Any] = json.load(f)
            return result
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def _load_weights_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def read_state_dict(model_dir: Path) -> tuple[dict[str, Tensor], str]:
    """Returns (state dict on CPU, the name of the file it came from)."""
    for name in WEIGHT_FILES:
        path = model_dir / name
        if path.is_file():
            break
    else:
        raise CheckpointError(f"{model_dir}: no weights file (looked for {', '.join(WEIGHT_FILES)})")
    try:
        if not name.endswith(".index.json"):
            return _load_weights_file(path), str(path)
        index = read_json(path)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{path}: field 'weight_map' must map tensor names to shard files")
        sd: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = model_dir / shard
            if Path(shard).name != shard or not shard_path.is_file():
                raise CheckpointError(f"{path}: shard {shard!r} is not a file in {model_dir}")
            sd.update(_load_weights_file(shard_path))
        return sd, str(path)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read weights {path}: {exc}") from exc


def _norm_except(v: Tensor, g: Tensor) -> Tensor:
    # weight = g * v / ||v||, the norm taken over every dim where g is a singleton
    dims = [d for d in range(v.dim()) if g.shape[d] == 1]
    result: Tensor = v * (g / v.norm(dim=dims, keepdim=True))
    return result


def fold_weight_norm(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Both layouts -> plain ``<module>.weight``:
    ``<module>.weight_g`` + ``<module>.weight_v`` (torch.nn.utils.weight_norm) and
    ``<module>.parametrizations.weight.original0`` (g) + ``original1`` (v) (parametrizations)."""
    out = dict(sd)
    pairs = []
    for key in sd:
        if key.endswith(".weight_g"):
            base = key[: -len(".weight_g")]
            pairs.append((base, key, base + ".weight_v"))
        elif key.endswith(".parametrizations.weight.original0"):
            base = key[: -len(".parametrizations.weight.original0")]
            pairs.append((base, key, base + ".parametrizations.weight.original1"))
    for base, g_key, v_key in pairs:
        if v_key not in sd:
            raise CheckpointError(f"weight norm: {g_key} without {v_key}")
        g, v = out.pop(g_key), out.pop(v_key)
        out[base + ".weight"] = _norm_except(v.float(), g.float())
    return out


def load_state_dict_strict(module: torch.nn.Module, sd: dict[str, Tensor], checkpoint: str) -> None:
    ignored = [re.compile(p) for p in getattr(module, "ignored_checkpoint_keys", ())]
    prefix = getattr(module, "checkpoint_prefix", "")
    sd = {prefix + k: v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not any(p.search(k) for p in ignored)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise KeyMismatchError(checkpoint, missing, unexpected)
    bad = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise CheckpointError(f"checkpoint {checkpoint}: shape mismatch: " + "; ".join(bad[:8]))
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()}, strict=True)


def head_from_architectures(raw: dict[str, Any], architectures: dict[str, str], source: str) -> str:
    archs = raw.get("architectures") or []
    if not archs:
        return "base"
    arch = archs[0]
    if arch not in architectures:
        raise UnsupportedConfigError("architectures", arch, list[object](sorted(architectures)), source)
    return architectures[arch]


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# feature-extractor fields the frontends read, and what each must be
_PREPROCESSOR_FIELDS: dict[str, tuple[str, Any]] = {
    "sampling_rate": ("a positive integer", _positive_int),
    "feature_size": ("a positive integer", _positive_int),
    "num_mel_bins": ("a positive integer", _positive_int),
    "stride": ("a positive integer", _positive_int),
    "do_normalize": ("true or false", lambda v: isinstance(v, bool)),
    "return_attention_mask": ("true or false", lambda v: isinstance(v, bool)),
    "padding_value": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
}


def read_preprocessor(model_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The feature extractor's fields and the file they came from, with transformers' precedence:
    the dict nested in ``processor_config.json`` under "feature_extractor" (or "audio_processor"),
    as a processor saved by transformers >= 5 has, else ``preprocessor_config.json``; (None, path
    of the latter) when there is neither. Every field a frontend reads is type-checked."""
    prep, source = None, model_dir / "preprocessor_config.json"
    proc_path = model_dir / "processor_config.json"
    if proc_path.is_file():
        proc = read_json(proc_path)
        if not isinstance(proc, dict):
            raise ConfigFieldError(str(proc_path), "<top level>", "a JSON object", type(proc).__name__)
        for key in ("feature_extractor", "audio_processor"):
            if key in proc:
                if not isinstance(proc[key], dict):
                    raise ConfigFieldError(str(proc_path), key, "a JSON object", proc[key])
                prep, source = proc[key], proc_path
                break
    if prep is None and source.is_file():
        prep = read_json(source)
        if not isinstance(prep, dict):
            raise ConfigFieldError(str(source), "<top level>", "a JSON object", type(prep).__name__)
    for key, (what, ok) in _PREPROCESSOR_FIELDS.items():
        if prep is not None and key in prep and not ok(prep[key]):
            raise ConfigFieldError(str(source), key, what, prep[key])
    return prep, str(source)


def check_raw_config(raw: Any, source: str) -> None:
    """The config.json fields read before the family's own parse_config: model_type,
    architectures, id2label."""
    if not isinstance(raw, dict):
        raise ConfigFieldError(source, "<top level>", "a JSON object", type(raw).__name__)
    if "model_type" in raw and not isinstance(raw["model_type"], str):
        raise ConfigFieldError(source, "model_type", "a string", raw["model_type"])
    archs = raw.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise ConfigFieldError(source, "architectures", "a list of class names", archs)
    id2label = raw.get("id2label")
    if id2label is not None:

        def _id(k: Any) -> bool:
            return isinstance(k, str) and k.isdigit()

        if not (isinstance(id2label, dict) and all(_id(k) and isinstance(v, str) for k, v in id2label.items())):
            raise ConfigFieldError(source, "id2label", "an object of integer ids to label strings", id2label)


def _load_vocab(model_dir: Path) -> dict[str, int] | None:
    path = model_dir / "vocab.json"
    if not path.is_file():
        return None
    vocab = read_json(path)
    # multilingual CTC vocabs nest one vocab per language; keep them as they are
    return vocab


class ModelParts(NamedTuple):
    """What a checkpoint directory holds, built and loaded: ``engines.model.load_model`` wraps it in a LoadedModel."""

    module: Any  # EngineModule, on the device in the dtype, eval mode
    frontend: Any  # Frontend
    model_dir: Path
    checkpoint: str
    vocab: dict[str, Any] | None
    id2label: dict[int, str] | None


def read_model(model: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> ModelParts:
    from engines.registry import get_family

    model_dir = resolve_model_dir(model)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(f"model {str(model)!r}: {model_dir} has no config.json")
    raw = read_json(config_path)
    source = str(config_path)
    check_raw_config(raw, source)
    family = get_family(raw.get("model_type", "<missing>"), source)
    config = family.parse_config(raw, source)
    head = head_from_architectures(raw, family.architectures, source)
    if head == "ctc" and getattr(config, "vocab_size", 1) is None:
        raise ConfigFieldError(source, "vocab_size", "a positive integer for a CTC head", None)
    preprocessor, prep_source = read_preprocessor(model_dir)
    try:
        frontend = family.make_frontend(config, preprocessor)
    except UnsupportedConfigError as exc:
        if exc.source:
            raise
        raise UnsupportedConfigError(exc.key, exc.value, exc.supported, prep_source) from exc

    module = family.build(config, head)
    module.use_preprocessor(preprocessor, prep_source)
    sd, checkpoint = read_state_dict(model_dir)
    sd = fold_weight_norm(sd)
    load_state_dict_strict(module, sd, checkpoint)
    module = module.to(device=device, dtype=dtype).eval()
    id2label = raw.get("id2label")
    if id2label is not None:
        id2label = {int(k): v for k, v in id2label.items()}
    return ModelParts(module, frontend, model_dir, checkpoint, _load_vocab(model_dir), id2label)
