"""The family registry: each encoder family registers how to parse its config, build its module and its frontend.

``get_family(model_type)`` imports a built-in family module on first use (it registers itself).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engines.errors import UnsupportedConfigError
from engines.types import EngineModule, Frontend

__all__ = ["FamilySpec", "register_family", "get_family", "supported_model_types"]


@dataclass(frozen=True)
class FamilySpec:
    """Registry entry. ``parse_config(raw_config_dict, source) -> config dataclass`` refuses
    unsupported values with UnsupportedConfigError; ``build(config, head) -> EngineModule``;
    ``make_frontend(config, preprocessor_dict_or_None) -> Frontend``;
    ``architectures`` maps HF architecture class names to heads."""

    model_type: str
    parse_config: Callable[[dict[str, Any], str], Any]
    build: Callable[[Any, str], EngineModule]
    make_frontend: Callable[[Any, dict[str, Any] | None], Frontend]
    architectures: dict[str, str]


_FAMILIES: dict[str, FamilySpec] = {}
_BUILTIN_MODULES = {
    "wav2vec2": "engines.wav2vec2",
    "wavlm": "engines.wavlm",
    "wav2vec2-conformer": "engines.wav2vec2_conformer",
    "wav2vec2-bert": "engines.wav2vec2_bert",
}


def register_family(spec: FamilySpec) -> FamilySpec:
    _FAMILIES[spec.model_type] = spec
    return spec


def supported_model_types() -> list[str]:
    return sorted(_BUILTIN_MODULES)


def get_family(model_type: str, source: str = "") -> FamilySpec:
    if model_type not in _FAMILIES:
        if model_type not in _BUILTIN_MODULES:
            raise UnsupportedConfigError("model_type", model_type, list[object](supported_model_types()), source)
        importlib.import_module(_BUILTIN_MODULES[model_type])  # registers itself
        if model_type not in _FAMILIES:
            raise UnsupportedConfigError("model_type", model_type, list[object](sorted(_FAMILIES)), source)
    return _FAMILIES[model_type]
