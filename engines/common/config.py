"""Parsing config.json into a family's plain config dataclass.

Only fields the dataclass declares are read; training-only fields (dropouts, SpecAugment,
CTC loss options ...) are ignored. Every field read is checked against its annotation, at load:

    int                    a positive integer (``NON_NEGATIVE_INTS``: zero allowed); not a bool
    int | None             the same, or null
    float                  a finite number > 0
    bool                   true or false
    str, str | None        a string (or null)
    tuple[int, ...]        a non-empty list of positive integers

and refused with ConfigFieldError (``SOURCE: field 'hidden_size' must be a positive integer,
got 'big'``). Then fields that belong together: equal lengths of the conv and TDNN lists,
hidden_size divisible by num_attention_heads and by num_conv_pos_embedding_groups. Values with a
fixed set of meanings are checked by the family against the set the engines implement and
refused with UnsupportedConfigError otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import torch.nn.functional as F
from torch import Tensor, nn

from engines.errors import ConfigFieldError, UnsupportedConfigError

C = TypeVar("C")

__all__ = ["config_from_dict", "check_field", "check_choice", "ACTIVATIONS", "activation", "NON_NEGATIVE_INTS"]

# integer fields for which 0 is meaningful (a token id, a relative-position window of 0 frames)
NON_NEGATIVE_INTS = frozenset({"pad_token_id", "left_max_position_embeddings", "right_max_position_embeddings"})
# list fields that describe one stack layer by layer
_SAME_LENGTH = (("conv_dim", "conv_stride", "conv_kernel"), ("tdnn_dim", "tdnn_kernel", "tdnn_dilation"))


def _gelu_new(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


# the activation names transformers' ACT2FN accepts that these checkpoints use
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_new": lambda: _Fn(_gelu_new),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "selu": nn.SELU,
    "tanh": nn.Tanh,
}


class _Fn(nn.Module):
    def __init__(self, fn: Any):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.fn(x)
        return y


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def check_choice(key: str, value: Any, supported: Any, source: str) -> None:
    if value not in supported:
        raise UnsupportedConfigError(key, value, list(supported), source)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_field(name: str, value: Any, annotation: Any, source: str = "") -> Any:
    """``value`` checked against its dataclass annotation (see the module docstring); lists become
    tuples. Raises ConfigFieldError naming ``source`` and ``name``."""
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        if value is None:
            return None
        (annotation,) = [a for a in args if a is not type(None)]
    nullable = " (or null)" if optional else ""
    if annotation is int:
        zero_ok = name in NON_NEGATIVE_INTS
        if not _is_int(value) or value < (0 if zero_ok else 1):
            what = "a non-negative integer" if zero_ok else "a positive integer"
            raise ConfigFieldError(source, name, what + nullable, value)
        return value
    if annotation is float:
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigFieldError(source, name, "a positive number" + nullable, value)
        return float(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigFieldError(source, name, "true or false" + nullable, value)
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigFieldError(source, name, "a string" + nullable, value)
        return value
    if typing.get_origin(annotation) is tuple:
        if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) and v >= 1 for v in value):
            raise ConfigFieldError(source, name, "a non-empty list of positive integers" + nullable, value)
        return tuple(value)
    return tuple(value) if isinstance(value, list) else value  # an annotation without a rule


def config_from_dict(cls: type[C], raw: dict[str, Any], source: str = "") -> C:
    """Build ``cls`` from the keys of ``raw`` it declares, each checked by ``check_field``; then
    the fields that belong together (module docstring)."""
    if not isinstance(raw, dict):
        raise ConfigFieldError(source, "<top level>", "a JSON object", type(raw).__name__)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in raw:
            kwargs[f.name] = check_field(f.name, raw[f.name], hints[f.name], source)
    cfg = cls(**kwargs)
    for group in _SAME_LENGTH:
        if all(hasattr(cfg, k) for k in group):
            lengths = [len(getattr(cfg, k)) for k in group]
            if len(set(lengths)) > 1:
                shown = ", ".join(f"{k}: {n}" for k, n in zip(group, lengths))
                raise ConfigFieldError(source, "/".join(group), "lists of one length", shown)
    hidden = getattr(cfg, "hidden_size", None)
    for key in ("num_attention_heads", "num_conv_pos_embedding_groups"):
        n = getattr(cfg, key, None)
        if hidden is not None and n is not None and hidden % n:
            raise ConfigFieldError(source, key, f"a divisor of hidden_size={hidden}", n)
    return cfg
