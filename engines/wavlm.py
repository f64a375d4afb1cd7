"""WavLM (``model_type="wavlm"``): wav2vec2's architecture with gated relative position bias.

Shape legend: B batch, T frames (Tq queries, Tk keys), D hidden, H heads, hd head dim.

Differences from wav2vec2 (everything else is engines.common.waveform):
- layer 0's attention owns ``rel_attn_embed`` (num_buckets x H): a bias per head for the bucketed
  relative distance ``key - query`` (exact below num_buckets/4, log-spaced up to
  max_bucket_distance, then clamped; separate buckets for keys after the query);
- every layer gates that shared bias per query and head from its own input:
  ``gate = a * (b * gru_rel_pos_const - 1) + 2`` with ``a, b = sigmoid(gru_rel_pos_linear(x_h))``.

Relative positions only depend on distances, so the cached mode's bias for a chunk against
its KV cache is the same (C, L + C) block for every chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from engines.common.blocks import SelfAttention
from engines.common.config import config_from_dict
from engines.common.conv_adapter import with_conv_adapter
from engines.common.waveform import WaveformModel
from engines.frontend_waveform import WaveformFrontend
from engines.registry import FamilySpec, register_family
from engines.wav2vec2 import Wav2Vec2Config, check_waveform_config

__all__ = ["WavLMConfig", "WavLMAttention", "WavLM", "parse_config", "ARCHITECTURES"]


@dataclass(frozen=True)
class WavLMConfig(Wav2Vec2Config):
    num_buckets: int = 320
    max_bucket_distance: int = 800


def parse_config(raw: dict[str, Any], source: str = "") -> WavLMConfig:
    cfg = config_from_dict(WavLMConfig, raw, source)
    check_waveform_config(cfg, raw, source)
    # transformers' WavLM layers have no MMS attention adapters, whatever the config says
    object.__setattr__(cfg, "adapter_attn_dim", None)
    return cfg


class WavLMAttention(SelfAttention):
    def __init__(self, hidden: int, heads: int, num_buckets: int, max_distance: int, has_relative_position_bias: bool):
        super().__init__(hidden, heads)
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, heads, 1, 1))
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        if has_relative_position_bias:
            self.rel_attn_embed = nn.Embedding(num_buckets, heads)

    def _bucket(self, rel: Tensor) -> Tensor:
        """Relative distance (key - query) -> bucket index, as HF WavLM."""
        n = self.num_buckets // 2
        buckets = (rel > 0).to(torch.long) * n
        rel = rel.abs()
        max_exact = n // 2
        is_small = rel < max_exact
        large = torch.log(rel.float() / max_exact) / math.log(self.max_distance / max_exact) * (n - max_exact)
        large = torch.clamp((max_exact + large).to(torch.long), max=n - 1)
        return buckets + torch.where(is_small, rel, large)

    def relative_bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """q_pos (Tq,), k_pos (Tk,) -> (H, Tq, Tk) ungated bias (layer 0 only)."""
        rel = k_pos[None, :] - q_pos[:, None]  # (Tq, Tk)
        result: Tensor = self.rel_attn_embed(self._bucket(rel)).permute(2, 0, 1)
        return result

    def _gated(self, x: Tensor, mask_bias: Tensor | None, rel: Tensor | None) -> Tensor:
        if rel is None:  # relative_bias never returns None for WavLM
            raise ValueError("WavLM attention needs the relative position bias")
        B, T, _ = x.shape
        xh = x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        proj = self.gru_rel_pos_linear(xh).view(B, self.num_heads, T, 2, 4).sum(-1)  # (B, H, T, 2)
        gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)  # (B, H, T, 1) each
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0
        bias = gate * rel[None]  # (B, H, Tq, Tk)
        return bias if mask_bias is None else bias + mask_bias

    def forward(self, x: Tensor, mask_bias: Tensor | None, rel: Tensor | None) -> Tensor:
        return self.attend(x, self._gated(x, mask_bias, rel))

    def forward_cached(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, mask_bias: Tensor | None, rel: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.attend_cached(x, k_cache, v_cache, self._gated(x, mask_bias, rel))


def make_attention(cfg: WavLMConfig, layer_index: int) -> WavLMAttention:
    return WavLMAttention(
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_buckets,
        cfg.max_bucket_distance,
        has_relative_position_bias=(layer_index == 0),
    )


class WavLM(WaveformModel):
    family = "wavlm"
    prefix = "wavlm"

    def __init__(self, cfg: WavLMConfig, head: str):
        super().__init__(cfg, head, make_attention)


ARCHITECTURES = {
    "WavLMForCTC": "ctc",
    "WavLMForAudioFrameClassification": "frame",
    "WavLMForXVector": "xvector",
    "WavLMForSequenceClassification": "sequence",
    "WavLMModel": "base",
}

register_family(
    FamilySpec(
        model_type="wavlm",
        parse_config=parse_config,
        build=lambda cfg, head: with_conv_adapter(WavLM, cfg, head),
        make_frontend=lambda cfg, prep: WaveformFrontend.from_preprocessor(prep),
        architectures=ARCHITECTURES,
    )
)
