"""Where a model computes, and in which precision.

    device = resolve_device("auto")            # cuda:0 when a GPU is visible, else cpu
    dtype = default_dtype(device)              # float16 on CUDA, float32 on CPU
    model = engines.api.load_model(path, device=device, dtype=dtype)

The contract of a ``LoadedModel`` on any device and in any dtype: callers give CPU float32 audio
and get CPU float32 outputs (logits, frames, embeddings). The weights and every per-stream cache
tensor (keys/values, convolution and positional buffers) live on the model's device in its dtype;
running statistics that need the range (group-norm and fbank sums) stay float64 on the device. The
raw-sample buffer a stream keeps before a chunk is due stays on the CPU, so a chunk crosses to the
device once, as part of one batch for every stream due together (``to_device``), and each batch's
frames come back in one transfer (``to_cpu``).

Chunks cross in the weights' dtype, except for a module that computes its features from the raw
samples itself (W2V-BERT's fbank, ``samples_in_float32``): its samples cross as float32, since the
log-mel of float16-rounded samples moved the default model's logits by up to 6 (against 0.05).

Precision (max |logit diff| against float32 on CPU, relative to the float32 logits' std; the
tolerances tests/parity/test_device_dtype.py asserts for the four families, offline, cached step and
step_batch): float64 1e-4 (measured < 1e-5), float16 0.04 (measured < 0.02 on the tiny models, 0.008
on base-size wav2vec2, 0.01 on the default model with greedy transcripts of TTS speech unchanged),
bfloat16 0.25 (measured < 0.12; the default model's transcripts then differ by a letter here and
there, so bfloat16 is never a default). CUDA float16 uses the same code paths; bench/bench_gpu.py
measures it against the same tolerance wherever a GPU is. ``SPEECHSTREAM_FORCE_FP32=1`` (or an
explicit ``dtype``) keeps CUDA in float32 for a checkpoint the tolerance does not suit.
"""

from __future__ import annotations

import os
import re

import torch
from torch import Tensor

from engines.errors import ConfigError

__all__ = [
    "DEVICE_CHOICES",
    "FORCE_FP32_ENV",
    "resolve_device",
    "resolve_dtype",
    "default_dtype",
    "to_device",
    "to_cpu",
]

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"
FORCE_FP32_ENV = "SPEECHSTREAM_FORCE_FP32"

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "fp64": torch.float64,
}


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (cuda:0 when a GPU is visible, else cpu), ``"cpu"``, ``"cuda"`` (cuda:0) or
    ``"cuda:N"``. Raises ConfigError, one line naming the value, for anything else, for cuda on a
    machine without a usable GPU, and for an index past the GPUs there are."""
    if isinstance(device, torch.device):
        text = str(device)
    elif isinstance(device, str):
        text = device.strip().lower()
    else:
        raise ConfigError(f"compute device must be one of {DEVICE_CHOICES}, got {device!r}")
    if text == "auto":
        return torch.device("cuda", 0) if _cuda_count() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m is None:
        raise ConfigError(f"compute device must be one of {DEVICE_CHOICES}, got {device!r}")
    index = int(m.group(1) or 0)
    count = _cuda_count()
    if count == 0:
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ConfigError(f"compute device {device!r} asked for, but {why}; use --compute-device cpu or auto")
    if index >= count:
        raise ConfigError(
            f"compute device {device!r}: no such GPU; this machine has {count} (cuda:0 .. cuda:{count - 1})"
        )
    return torch.device("cuda", index)


def _force_fp32() -> bool:
    return os.environ.get(FORCE_FP32_ENV, "").strip().lower() not in ("", "0", "false", "no")


def default_dtype(device: torch.device, force_fp32: bool | None = None) -> torch.dtype:
    """float16 on CUDA, float32 elsewhere; float32 everywhere when ``force_fp32`` is true (None:
    read the ``SPEECHSTREAM_FORCE_FP32`` environment variable)."""
    if force_fp32 is None:
        force_fp32 = _force_fp32()
    if device.type == "cuda" and not force_fp32:
        return torch.float16
    return torch.float32


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None or ``"auto"``: ``default_dtype(device)``; else a floating torch dtype or its name
    (``"float32"``/``"fp32"``, ``"float16"``/``"fp16"``, ``"bfloat16"``/``"bf16"``, ``"float64"``)."""
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ConfigError(f"compute dtype must be a floating dtype, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.strip().lower() in _DTYPES:
        return _DTYPES[dtype.strip().lower()]
    raise ConfigError(f"compute dtype must be auto, float32, float16, bfloat16 or float64, got {dtype!r}")


def to_device(x: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A batch for the model: floating tensors move to ``device`` in ``dtype``; integer and bool
    tensors (lengths, masks, indices) move and keep their dtype. One copy, none when already there."""
    if x.is_floating_point():
        return x.to(device=device, dtype=dtype, non_blocking=False)
    return x.to(device=device)


def to_cpu(x: Tensor) -> Tensor:
    """A result for the caller: floating tensors come back to the CPU as float32; others keep
    their dtype. Returns ``x`` itself when it already is a CPU float32 (or CPU non-float) tensor."""
    if x.is_floating_point():
        return x.to(device="cpu", dtype=torch.float32)
    return x.to(device="cpu")
