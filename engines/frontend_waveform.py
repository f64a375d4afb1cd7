"""Waveform frontend with ``Wav2Vec2FeatureExtractor`` semantics, offline and streaming.

Shape legend: B batch, S samples (16 kHz mono float).

Offline (``__call__``), as the HF extractor with ``do_normalize``:
``(x - mean) / sqrt(var + 1e-7)`` over the utterance's real samples (population variance), then
padding positions set to ``padding_value``. The attention mask is returned only when the
checkpoint's ``return_attention_mask`` is true (wav2vec2-base style checkpoints were trained
without one; transformers then pads with zeros and passes no mask, and so do we).

Streaming (``init_state``/``step``): the utterance mean and variance are not known while the
stream runs, so ``spec.normalize`` picks:

- ``"stream"`` (default): each sample is normalised with the running mean and variance of the
  stream up to and including itself. Causal, constant-size state, and the same whatever piece
  sizes the audio arrives in; the first samples' statistics are noisier than an utterance's,
  the difference fades as the statistics settle.
- ``"window"`` (window mode only; the driver applies ``normalize`` to each window, exactly as
  the transformers ASR pipeline does per chunk; this rules out reusing CNN output).
- ``"none"``: raw samples (what a ``do_normalize=False`` checkpoint gets anyway).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from engines.errors import UnsupportedConfigError
from engines.types import Frontend, StreamSpec

__all__ = ["WaveformFrontend", "RunningStats", "normalize"]

EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


def normalize(x: Tensor) -> Tensor:
    """(..., S) -> zero mean, unit variance over the last dim, HF epsilon."""
    x64 = x.to(torch.float64)
    mean = x64.mean(dim=-1, keepdim=True)
    var = x64.var(dim=-1, unbiased=False, keepdim=True)
    return ((x64 - mean) / torch.sqrt(var + EPS)).to(x.dtype)


class RunningStats(NamedTuple):
    num_samples: Tensor  # () float64 samples seen
    total: Tensor  # () float64 sum
    total_sq: Tensor  # () float64 sum of squares


class WaveformFrontend(Frontend):
    def __init__(self, do_normalize: bool = True, padding_value: float = 0.0, return_attention_mask: bool = False):
        self.do_normalize = bool(do_normalize)
        self.padding_value = float(padding_value)
        self.return_attention_mask = bool(return_attention_mask)

    @classmethod
    def from_preprocessor(cls, prep: dict[str, Any] | None, source: str = "") -> WaveformFrontend:
        if prep is None:
            return cls()
        sr = prep.get("sampling_rate", 16000)
        if sr != 16000:
            raise UnsupportedConfigError("sampling_rate", sr, [16000], source)
        if prep.get("feature_size", 1) != 1:
            raise UnsupportedConfigError("feature_size", prep.get("feature_size"), [1], source)
        return cls(
            do_normalize=prep.get("do_normalize", True),
            padding_value=prep.get("padding_value", 0.0),
            return_attention_mask=prep.get("return_attention_mask", False),
        )

    # -- offline --------------------------------------------------------------------------
    def __call__(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """audio (B, S) float, lengths (B,) real samples per row (None: all real)."""
        B, S = audio.shape
        if lengths is None:
            lengths = torch.full((B,), S, dtype=torch.long)
        mask = torch.arange(S)[None, :] < lengths[:, None]  # (B, S)
        x = audio.to(torch.float32)
        if self.do_normalize:
            rows = []
            for i in range(B):
                n = int(lengths[i])  # offline, once per utterance: not a per-chunk path
                rows.append(torch.cat([normalize(x[i, :n]), x.new_zeros(S - n)]))
            x = torch.stack(rows)
        x = x.masked_fill(~mask, self.padding_value)
        return x, (mask.long() if self.return_attention_mask else None)

    # -- streaming ------------------------------------------------------------------------
    def init_state(self, spec: StreamSpec) -> RunningStats | None:
        if not self.do_normalize or spec.normalize != "stream":
            return None
        z = torch.zeros((), dtype=torch.float64)
        return RunningStats(z, z, z)

    def step(self, samples: Tensor, fstate: RunningStats | None) -> tuple[Tensor, RunningStats | None]:
        """(S,) raw -> (S,) normalised: each sample with the statistics of the stream up to and
        including itself, so the result does not depend on how the audio is cut into pieces."""
        if fstate is None or samples.numel() == 0:
            return samples, fstate
        x64 = samples.to(torch.float64)
        count = fstate.num_samples + torch.arange(1, x64.numel() + 1, dtype=torch.float64)
        total = fstate.total + torch.cumsum(x64, 0)
        total_sq = fstate.total_sq + torch.cumsum(x64 * x64, 0)
        mean = total / count
        var = (total_sq / count - mean * mean).clamp(min=0.0)
        st = RunningStats(count[-1], total[-1], total_sq[-1])
        return ((x64 - mean) / torch.sqrt(var + EPS)).to(samples.dtype), st
