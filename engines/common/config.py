"""Parsing config.json into a family's plain config dataclass.

Only fields the dataclass declares are read; training-only fields (dropouts, SpecAugment,
CTC loss options ...) are ignored. Values with a fixed set of meanings are checked against
the set the engines implement and refused with UnsupportedConfigError otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch.nn.functional as F
from torch import Tensor, nn

from engines.errors import UnsupportedConfigError

C = TypeVar("C")

__all__ = ["config_from_dict", "check_choice", "ACTIVATIONS", "activation"]


def _gelu_new(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


# the activation names transformers' ACT2FN accepts that these checkpoints use
ACTIVATIONS = {
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
        return self.fn(x)


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def check_choice(key: str, value: Any, supported: Any, source: str) -> None:
    if value not in supported:
        raise UnsupportedConfigError(key, value, list(supported), source)


def config_from_dict(cls: type[C], raw: dict, source: str = "") -> C:
    """Build ``cls`` from the keys of ``raw`` it declares; lists become tuples."""
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in raw:
            v = raw[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)
