"""Hugging Face checkpoint loading, without transformers.

Steps, each failing loudly with the checkpoint's name:
1. resolve the model argument: a local HF-layout directory, or a hub id looked up in the local
   HF cache with ``local_files_only=True`` (the hub is never contacted);
2. parse ``config.json``: ``model_type`` picks the family, ``architectures[0]`` the head, and the
   family's ``parse_config`` refuses values it does not implement;
3. read ``model.safetensors`` (or a sharded index) or ``pytorch_model.bin``
   (``torch.load(weights_only=True)``);
4. fold weight norm (``weight_g``/``weight_v`` and ``parametrizations.weight.original0/1``)
   into plain ``weight`` tensors;
5. drop the module's training-only keys, then check keys and shapes strictly and load.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from engines.errors import CheckpointError, KeyMismatchError, ModelNotFoundError, UnsupportedConfigError

__all__ = [
    "resolve_model_dir",
    "read_json",
    "read_state_dict",
    "fold_weight_norm",
    "load_state_dict_strict",
    "head_from_architectures",
    "load_model",
]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


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
    looks_like_id = re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?(@[\w.\-/]+)?", text) is not None
    if not looks_like_id or path.exists() or text.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model {text!r}: no such directory, and not a hub id")
    repo_id, _, revision = text.partition("@")
    cache_dir = _hub_cache_dir()
    try:
        from huggingface_hub import snapshot_download

        snap = snapshot_download(
            repo_id, revision=revision or None, cache_dir=cache_dir, local_files_only=True
        )
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        raise ModelNotFoundError(
            f"model {repo_id!r} is not a directory and is not in the local HF cache {cache_dir} "
            f"(the hub is not contacted; download it elsewhere or pass a local directory)"
        ) from exc
    return Path(snap)


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def read_state_dict(model_dir: Path) -> tuple[dict[str, Tensor], str]:
    """Returns (state dict on CPU, the name of the file it came from)."""
    for name in WEIGHT_FILES:
        path = model_dir / name
        if path.is_file():
            break
    else:
        raise CheckpointError(f"{model_dir}: no weights file (looked for {', '.join(WEIGHT_FILES)})")
    try:
        if name == "model.safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu"), str(path)
        if name.endswith(".index.json"):
            from safetensors.torch import load_file

            index = read_json(path)
            sd: dict[str, Tensor] = {}
            for shard in sorted(set(index["weight_map"].values())):
                sd.update(load_file(str(model_dir / shard), device="cpu"))
            return sd, str(path)
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(sd, dict):
            raise CheckpointError(f"{path}: expected a state dict, got {type(sd).__name__}")
        return sd, str(path)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read weights {path}: {exc}") from exc


def _norm_except(v: Tensor, g: Tensor) -> Tensor:
    # weight = g * v / ||v||, the norm taken over every dim where g is a singleton
    dims = [d for d in range(v.dim()) if g.shape[d] == 1]
    return v * (g / v.norm(dim=dims, keepdim=True))


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


def head_from_architectures(raw: dict, architectures: dict[str, str], source: str) -> str:
    archs = raw.get("architectures") or []
    if not archs:
        return "base"
    arch = archs[0]
    if arch not in architectures:
        raise UnsupportedConfigError("architectures", arch, sorted(architectures), source)
    return architectures[arch]


def _load_vocab(model_dir: Path) -> dict[str, int] | None:
    path = model_dir / "vocab.json"
    if not path.is_file():
        return None
    vocab = read_json(path)
    # multilingual CTC vocabs nest one vocab per language; keep them as they are
    return vocab


def load_model(model: str | Path, device: str | torch.device = "cpu") -> Any:
    from engines.api import LoadedModel, get_family

    model_dir = resolve_model_dir(model)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(f"model {str(model)!r}: {model_dir} has no config.json")
    raw = read_json(config_path)
    source = str(config_path)
    family = get_family(raw.get("model_type", "<missing>"), source)
    config = family.parse_config(raw, source)
    head = head_from_architectures(raw, family.architectures, source)
    prep_path = model_dir / "preprocessor_config.json"
    preprocessor = read_json(prep_path) if prep_path.is_file() else None
    frontend = family.make_frontend(config, preprocessor)

    module = family.build(config, head)
    module.use_preprocessor(preprocessor, str(prep_path))
    sd, checkpoint = read_state_dict(model_dir)
    sd = fold_weight_norm(sd)
    load_state_dict_strict(module, sd, checkpoint)
    module = module.to(device=device, dtype=torch.float32).eval()
    id2label = raw.get("id2label")
    if id2label is not None:
        id2label = {int(k): v for k, v in id2label.items()}
    return LoadedModel(
        module, frontend, model_dir, checkpoint, vocab=_load_vocab(model_dir), id2label=id2label, device=device
    )
