"""The root of speechstream's errors, and the exceptions raised by the engines.

Every error any layer raises on purpose derives from ``SpeechStreamError``, defined here because
``engines`` is the lowest layer; ``stream.errors`` adds the runtime's subtree under the same root
(and re-exports the root and ``ConfigError``). A checkpoint or model argument that cannot be used
is a ``ConfigError`` as well as an ``EngineError``, so the edges (CLI, servers, the facade) catch
``ConfigError`` once and need not translate. Foreign exceptions (safetensors, torch.load,
huggingface_hub, json) are translated where they occur, ``raise CheckpointError(msg) from exc``.

    SpeechStreamError                 (root; stream.errors adds StreamError, GraphError, ProtocolError)
    ├── ConfigError                   a bad option, argument or checkpoint: raised before or at start
    └── EngineError
        ├── ModelNotFoundError        (also ConfigError) a path or hub id that resolves to nothing
        ├── CheckpointError           (also ConfigError) a checkpoint that cannot be read or does not fit
        │   ├── KeyMismatchError      strict key check failed (lists missing / unexpected keys, names the file)
        │   └── ConfigFieldError      a config field of the wrong type or out of range (names file, field, value)
        ├── UnsupportedConfigError    (also ConfigError) a config value the engines do not implement
        ├── UnknownLanguageError      (also ConfigError) a language the checkpoint has no adapter / vocabulary for
        └── StreamUsageError          misuse of the streaming API (bad chunk sizes, mixing states of
                                      different modes in one batch, a chunk that is not 1-D float audio)
"""

from __future__ import annotations

__all__ = [
    "SpeechStreamError",
    "ConfigError",
    "EngineError",
    "ModelNotFoundError",
    "CheckpointError",
    "KeyMismatchError",
    "ConfigFieldError",
    "UnsupportedConfigError",
    "StreamUsageError",
    "UnknownLanguageError",
]


class SpeechStreamError(Exception):
    """Root of every error raised on purpose by speechstream (engines, stream, sinks, the facade)."""


class ConfigError(SpeechStreamError, ValueError):
    """A bad option, argument or checkpoint. The message names the offending value."""


class EngineError(SpeechStreamError):
    """Base class of every error raised on purpose by ``engines``."""


class ModelNotFoundError(EngineError, ConfigError):
    """A model argument that is neither a model directory nor a cached hub id."""


class CheckpointError(EngineError, ConfigError):
    """A checkpoint file that cannot be read, or whose tensors do not fit the model."""


class KeyMismatchError(CheckpointError):
    """The strict key check failed. ``missing`` and ``unexpected`` hold the key names."""

    def __init__(self, checkpoint: str, missing: list[str], unexpected: list[str]):
        self.checkpoint = checkpoint
        self.missing = list(missing)
        self.unexpected = list(unexpected)

        def show(keys: list[str]) -> str:
            head = ", ".join(keys[:12])
            return head + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")

        parts = [f"checkpoint {checkpoint} does not match the model"]
        if self.missing:
            parts.append(f"missing keys: {show(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys: {show(self.unexpected)}")
        super().__init__("; ".join(parts))


class ConfigFieldError(CheckpointError):
    """A field of config.json (or the feature extractor's config) of the wrong type or out of range:
    ``SOURCE: field 'hidden_size' must be a positive integer, got 'big'``."""

    def __init__(self, source: str, key: str, expected: str, value: object):
        self.source = source
        self.key = key
        self.expected = expected
        self.value = value
        where = f"{source}: " if source else ""
        super().__init__(f"{where}field {key!r} must be {expected}, got {value!r}")


class UnsupportedConfigError(EngineError, ConfigError):
    """A config value the engines do not implement. Never silently approximated."""

    def __init__(self, key: str, value: object, supported: list[object] | tuple[object, ...] | str, source: str = ""):
        self.key = key
        self.value = value
        self.supported = supported
        self.source = source
        where = f" in {source}" if source else ""
        sup = supported if isinstance(supported, str) else ", ".join(repr(s) for s in supported)
        super().__init__(f"unsupported {key}={value!r}{where}; supported: {sup}")


class StreamUsageError(EngineError):
    """Misuse of the streaming API."""


class UnknownLanguageError(EngineError, ConfigError):
    """A language code the checkpoint has no adapter / vocabulary for. ``available`` lists the ones it has."""

    def __init__(self, language: str, available: list[str] | tuple[str, ...], model_dir: object = ""):
        self.language = language
        self.available = tuple(available)
        shown = ", ".join(self.available[:40]) + (
            f", ... ({len(self.available)} in all)" if len(self.available) > 40 else ""
        )
        where = f" in {model_dir}" if model_dir else ""
        if self.available:
            msg = f"unknown language {language!r}{where}; available: {shown}"
        else:
            msg = f"language {language!r} asked for, but {model_dir or 'the model'} is not multilingual (no adapter.<lang> files, no nested vocab.json)"
        super().__init__(msg)
