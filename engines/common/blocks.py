"""Blocks shared by the waveform families (wav2vec2, WavLM, Wav2Vec2-Conformer).

Shape legend: B batch, S samples, T frames, D hidden size, H heads, hd head dim, K kernel.

Attribute names follow the HF modules (``conv``, ``layer_norm``, ``projection``,
``intermediate_dense`` ...) so checkpoints load with a strict key check.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.common.config import activation

__all__ = [
    "ConvLayer",
    "FeatureEncoder",
    "FeatureProjection",
    "PositionalConvEmbedding",
    "FeedForward",
    "SelfAttention",
    "mask_value",
    "attention",
]


def mask_value(dtype: torch.dtype) -> float:
    # a finite "minus infinity": a fully masked row gives a uniform softmax instead of NaNs,
    # which matters for the padding frames a streaming chunk carries and then drops
    return torch.finfo(dtype).min


# ---------------------------------------------------------------------------------------------
# CNN feature encoder: waveform (B, S) -> (B, conv_dim[-1], T)
# ---------------------------------------------------------------------------------------------


class ConvLayer(nn.Module):
    """conv -> [norm] -> activation. norm: None, "group" (GroupNorm with one group per channel:
    normalises each channel over *time*) or "layer" (LayerNorm over channels, per frame)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool, norm: str | None, act: str):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size=kernel, stride=stride, bias=bias)
        self.norm = norm
        self.layer_norm: nn.GroupNorm | nn.LayerNorm
        if norm == "group":
            self.layer_norm = nn.GroupNorm(num_groups=c_out, num_channels=c_out, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(c_out, elementwise_affine=True)
        self.activation = activation(act)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, T_in) -> (B, C_out, T_out)
        x = self.conv(x)
        if self.norm == "group":
            x = self.layer_norm(x)
        elif self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        result: Tensor = self.activation(x)
        return result

    def group_norm_with_stats(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        """GroupNorm (one group per channel) with given statistics. x (B, C, T), mean/var (B, C)."""
        gn = self.layer_norm
        x = (x - mean[..., None]) / torch.sqrt(var[..., None] + gn.eps)
        return x * gn.weight[None, :, None] + gn.bias[None, :, None]


class FeatureEncoder(nn.Module):
    """The wav2vec2 CNN. No padding anywhere, so output frame t depends only on input samples
    [t * hop, t * hop + receptive_field) -- except through GroupNorm's statistics over time."""

    def __init__(
        self,
        conv_dim: Sequence[int],
        conv_kernel: Sequence[int],
        conv_stride: Sequence[int],
        conv_bias: bool,
        norm_mode: str,
        act: str,
    ):
        super().__init__()
        layers = []
        norm: str | None
        for i, (c, k, s) in enumerate(zip(conv_dim, conv_kernel, conv_stride)):
            c_in = conv_dim[i - 1] if i > 0 else 1
            if norm_mode == "layer":
                norm = "layer"
            else:  # "group": only the first layer is normalised
                norm = "group" if i == 0 else None
            layers.append(ConvLayer(c_in, c, k, s, conv_bias, norm, act))
        self.conv_layers = nn.ModuleList(layers)
        self.norm_mode = norm_mode
        hop, rf = 1, 1
        for k, s in zip(conv_kernel, conv_stride):
            rf += (k - 1) * hop
            hop *= s
        self.hop = hop  # input samples per output frame (320 for the standard CNN)
        self.receptive_field = rf  # input samples one output frame sees (400)

    def forward(self, samples: Tensor) -> Tensor:  # (B, S) -> (B, C, T)
        x = samples[:, None]  # (B, 1, S)
        for layer in self.conv_layers:
            x = layer(x)
        return x

    def convs(self) -> list[ConvLayer]:
        """The conv layers, typed."""
        return [layer for layer in self.conv_layers if isinstance(layer, ConvLayer)]

    @staticmethod
    def num_frames(num_samples: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
        n = num_samples
        for k, s in zip(kernels, strides):
            n = (n - k) // s + 1
        return max(n, 0)


class FeatureProjection(nn.Module):
    def __init__(self, conv_dim_last: int, hidden: int, eps: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(conv_dim_last, eps=eps)
        self.projection = nn.Linear(conv_dim_last, hidden)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, D)
        result: Tensor = self.projection(self.layer_norm(x))
        return result


# ---------------------------------------------------------------------------------------------
# Positional conv embedding: grouped conv over time, kernel K, padding K // 2, and for even K
# the last output frame dropped ("SamePad"). Output frame t sees input frames
# [t - K // 2, t - K // 2 + K), i.e. `left` past and `right` future frames.
# ---------------------------------------------------------------------------------------------


class PositionalConvEmbedding(nn.Module):
    def __init__(self, hidden: int, kernel: int, groups: int, act: str):
        super().__init__()
        # weight norm is folded into `conv.weight` at load time (engines.common.hf.fold_weight_norm)
        self.conv = nn.Conv1d(hidden, hidden, kernel_size=kernel, padding=kernel // 2, groups=groups)
        self.kernel = kernel
        self.left = kernel // 2
        self.right = kernel - 1 - kernel // 2
        self.activation = activation(act)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D), zero padding at both ends
        T = x.shape[1]
        y = self.conv(x.transpose(1, 2))[:, :, :T]  # SamePad: drop the extra frame of an even kernel
        result: Tensor = self.activation(y).transpose(1, 2)
        return result

    def forward_valid(self, x: Tensor) -> Tensor:
        """No padding: (B, T_in, D) -> (B, T_in - K + 1, D); output t sees x[t : t + K]."""
        y = F.conv1d(x.transpose(1, 2), self.conv.weight, self.conv.bias, groups=self.conv.groups)
        result: Tensor = self.activation(y).transpose(1, 2)
        return result


class FeedForward(nn.Module):
    def __init__(self, hidden: int, intermediate: int, act: str):
        super().__init__()
        self.intermediate_dense = nn.Linear(hidden, intermediate)
        self.intermediate_act_fn = activation(act)
        self.output_dense = nn.Linear(intermediate, hidden)

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.output_dense(self.intermediate_act_fn(self.intermediate_dense(x)))
        return result


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    """q (B, H, Tq, hd), k/v (B, H, Tk, hd), bias additive (B|1, H|1, Tq, Tk) -> (B, Tq, H*hd)."""
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, Tq, hd)
    B, H, Tq, hd = y.shape
    return y.transpose(1, 2).reshape(B, Tq, H * hd)


class SelfAttention(nn.Module):
    """Multi-head self-attention with q/k/v/out projections (HF names), optional KV cache.

    ``attend``/``attend_cached`` take an additive bias; a family's subclass defines ``forward(x,
    mask_bias, rel)`` and ``forward_cached(x, k, v, mask_bias, rel)`` on top (engines.common.waveform)."""

    def __init__(self, hidden: int, heads: int, bias: bool = True):
        super().__init__()
        self.num_heads = heads
        self.head_dim = hidden // heads
        self.q_proj = nn.Linear(hidden, hidden, bias=bias)
        self.k_proj = nn.Linear(hidden, hidden, bias=bias)
        self.v_proj = nn.Linear(hidden, hidden, bias=bias)
        self.out_proj = nn.Linear(hidden, hidden, bias=bias)

    def split(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, H, T, hd)
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.split(self.q_proj(x)), self.split(self.k_proj(x)), self.split(self.v_proj(x))

    def attend(self, x: Tensor, bias: Tensor | None) -> Tensor:  # (B, T, D) -> (B, T, D)
        q, k, v = self.qkv(x)
        result: Tensor = self.out_proj(attention(q, k, v, bias))
        return result

    def attend_cached(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, bias: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, C, D); caches (B, H, L, hd) hold the keys/values of the L frames before x;
        bias (B, H|1, C, L + C). Returns (y (B, C, D), keys (B, H, L + C, hd), values)."""
        q, k, v = self.qkv(x)
        k = torch.cat([k_cache, k], dim=2)  # (B, H, L + C, hd)
        v = torch.cat([v_cache, v], dim=2)
        return self.out_proj(attention(q, k, v, bias)), k, v
