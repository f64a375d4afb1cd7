"""MMS-style multilingual checkpoints: per-language adapter weights and nested vocabularies.

A multilingual CTC checkpoint (``facebook/mms-1b-all`` and its fine-tunes) is one base model plus,
per language, a small set of weights that replace part of it:

    model_dir/
        config.json                 adapter_attn_dim: N (the per-layer attention adapters exist)
        model.safetensors           base weights, with one language's adapters and lm_head in it
        adapter.<lang>.safetensors  that language's adapter layers + lm_head (or adapter.<lang>.bin)
        vocab.json                  {lang: {token: id}} (nested: one vocabulary per language)
        tokenizer_config.json       "target_lang": the language of the stored weights' vocabulary

This is what ``Wav2Vec2ForCTC.load_adapter(lang)`` reads (``adapter.<lang>.safetensors`` first, then
``adapter.<lang>.bin``; the file holds exactly the ``Wav2Vec2AttnAdapterLayer`` parameters under their
module paths, ``wav2vec2.encoder.layers.<i>.adapter_layer.*``, plus ``lm_head.weight``/``lm_head.bias``,
whose row count is that language's vocabulary size) and what ``Wav2Vec2CTCTokenizer.set_target_lang``
selects. Without a language, transformers runs the stored weights and the tokenizer's ``target_lang``
(``tokenizer_config.json``); so does this package (``language=None``).

State is data: the loaded base module is never modified. ``language_view(module, file)`` returns a
shallow copy of the module tree in which only the adapter layers and the head are new modules (the
adapter file's weights); every other submodule and parameter is the base model's own object, shared.
``LoadedModel.for_language`` keeps these views in a dict (loaded on first use, then cached), and a
stream's ``StreamSpec.language`` names the view its steps run on.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.errors import CheckpointError, KeyMismatchError

__all__ = [
    "adapter_files",
    "vocab_languages",
    "default_language",
    "available_languages",
    "adapter_module_names",
    "language_view",
    "replace_submodules",
]

ADAPTER_PATTERNS = ("adapter.{}.safetensors", "adapter.{}.bin")  # transformers' WAV2VEC2_ADAPTER_{SAFE,PT}_FILE


def adapter_files(model_dir: Path) -> dict[str, Path]:
    """{lang: file} for every ``adapter.<lang>.safetensors`` / ``.bin`` (safetensors wins, as in transformers)."""
    found: dict[str, Path] = {}
    for suffix in (".bin", ".safetensors"):  # later wins
        for p in sorted(Path(model_dir).glob(f"adapter.*{suffix}")):
            lang = p.name[len("adapter.") : -len(suffix)]
            if lang and "." not in lang:
                found[lang] = p
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def vocab_languages(model_dir: Path) -> tuple[str, ...] | None:
    """The languages of a nested ``vocab.json`` ({lang: {token: id}}), or None for a flat one."""
    path = Path(model_dir) / "vocab.json"
    if not path.is_file():
        return None
    vocab = _read_json(path)
    if isinstance(vocab, dict) and vocab and all(isinstance(v, dict) for v in vocab.values()):
        return tuple(sorted(vocab))
    return None


def default_language(model_dir: Path) -> str | None:
    """The language of the stored weights: ``target_lang`` of tokenizer_config.json, else of config.json."""
    for name in ("tokenizer_config.json", "config.json"):
        path = Path(model_dir) / name
        if path.is_file():
            lang = _read_json(path).get("target_lang")
            if isinstance(lang, str) and lang:
                return lang
    return None


def available_languages(model_dir: Path, has_adapters: bool) -> tuple[str, ...]:
    """Languages a stream may ask for. With adapter layers: the languages with an adapter file (and,
    for a nested vocab, a vocabulary), plus the stored weights' own ``target_lang``. Without: the
    nested vocabulary's languages (the head is the same for all; only the vocabulary changes)."""
    vocab = vocab_languages(model_dir)
    if not has_adapters:
        return vocab or ()
    langs = set(adapter_files(model_dir))
    if vocab is not None:
        langs &= set(vocab)
    own = default_language(model_dir)
    if own is not None and (vocab is None or own in vocab):
        langs.add(own)
    return tuple(sorted(langs))


def adapter_module_names(module: nn.Module, adapter_type: type) -> list[str]:
    """Paths of the per-language submodules, as ``Wav2Vec2PreTrainedModel._get_adapters``: every
    adapter layer, then ``lm_head``."""
    names = [name for name, m in module.named_modules() if isinstance(m, adapter_type)]
    if hasattr(module, "lm_head"):
        names.append("lm_head")
    return names


def replace_submodules(root: nn.Module, replacements: dict[str, nn.Module]) -> nn.Module:
    """A shallow copy of ``root`` in which the submodules at the dotted paths in ``replacements`` are
    the given modules. Modules on the way to a replaced one are shallow-copied (their own child dict);
    every other submodule, parameter and buffer is ``root``'s own object. ``root`` is not changed."""
    tree: dict[str, Any] = {}
    for path, new in replacements.items():
        node = tree
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = new

    def rebuild(mod: nn.Module, sub: dict[str, Any]) -> nn.Module:
        c = copy.copy(mod)
        c._modules = dict(mod._modules)
        for name, v in sub.items():
            if name not in mod._modules:
                raise KeyError(f"no submodule {name!r} in {type(mod).__name__}")
            child = mod._modules[name]
            if child is None:
                raise KeyError(f"submodule {name!r} of {type(mod).__name__} is None")
            c._modules[name] = v if isinstance(v, nn.Module) else rebuild(child, v)
        return c

    return rebuild(root, tree)


def _read_adapter(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read adapter weights {path}: {exc}") from exc
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def language_view(module: nn.Module, path: Path, adapter_type: type) -> nn.Module:
    """``module`` with the adapter layers and lm_head of the adapter file ``path`` (strict key check;
    the head may have another vocabulary size: the view's ``config.vocab_size`` says which)."""
    sd = _read_adapter(path)
    names = adapter_module_names(module, adapter_type)
    lm_head = module.get_submodule("lm_head") if "lm_head" in names else None
    expected = {f"{n}.{k}": v for n in names for k, v in module.get_submodule(n).state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise KeyMismatchError(str(path), missing, unexpected)
    vocab_size = int(sd["lm_head.weight"].shape[0]) if "lm_head" in names else None
    bad = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if not k.startswith("lm_head.") and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if (
        vocab_size is not None
        and isinstance(lm_head, nn.Linear)
        and (sd["lm_head.weight"].shape[1:] != lm_head.weight.shape[1:] or sd["lm_head.bias"].shape != (vocab_size,))
    ):
        bad.append(f"lm_head: file {tuple(sd['lm_head.weight'].shape)} vs model (V, {lm_head.in_features})")
    if bad:
        raise CheckpointError(f"adapter weights {path}: shape mismatch: " + "; ".join(bad[:8]))
    p = next(module.parameters())
    new: dict[str, nn.Module] = {}
    for n in names:
        m: nn.Module
        if n == "lm_head" and isinstance(lm_head, nn.Linear) and vocab_size is not None:
            m = nn.Linear(lm_head.in_features, vocab_size)
        else:
            m = copy.deepcopy(module.get_submodule(n))  # same class and shapes, own tensors
        prefix = n + "."
        m.load_state_dict(
            {k[len(prefix) :]: v.to(torch.float32) for k, v in sd.items() if k.startswith(prefix)}, strict=True
        )
        new[n] = m.to(device=p.device, dtype=p.dtype).eval()
    view = replace_submodules(module, new)
    inner = module.__dict__.get("inner")  # a wrapper that runs another module's copy of the tree (add_adapter)
    if inner is not None:
        view.__dict__["inner"] = replace_submodules(
            inner, {k: v for k, v in new.items() if k.split(".")[0] in inner._modules}
        )
    if vocab_size is not None:
        config: Any = module.config  # a family's config dataclass
        view.config = dataclasses.replace(config, vocab_size=vocab_size)
    return view
