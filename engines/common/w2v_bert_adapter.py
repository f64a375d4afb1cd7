"""W2V-BERT's adapter (strided conv + GLU, position-free attention, FFN) offline and cached, and the
family's cached state.

Shape legend: B batch, T input frames (stacked fbank frames, 20 ms), D adapter size, H heads,
Dh head size, s stride, L encoder left-context frames (layer i keeps L / s**(i+1)).

The adapter runs each layer at its own rate: layer i's outputs are s**(i+1) input frames apart, so
a chunk of C input frames gives C / s**(i+1) outputs there, and the chunk mask, the left context and
the lookahead are divided by the same factor (they must be multiples of it). In cached mode every
layer keeps a KV cache of its last L / s**(i+1) outputs with a validity mask, and the LayerNormed
inputs right before the block (``stride // 2`` frames: HF pads ``stride // 2`` on both sides), which
makes it exact against the offline adapter under the chunk mask for kernels up to ``s + s // 2``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.common.conformer import AttentionCache, ConformerSelfAttention, FeedForward
from engines.common.masks import chunk_attention_mask, chunk_block_ids, combine_masks
from engines.errors import StreamUsageError

__all__ = ["AdapterConfig", "AdapterLayer", "Adapter", "AdapterState", "Wav2Vec2BertCache"]


class AdapterConfig(Protocol):
    """The config fields the adapter reads (``Wav2Vec2BertConfig`` has them)."""

    @property
    def hidden_size(self) -> int: ...
    @property
    def adapter_size(self) -> int: ...
    @property
    def layer_norm_eps(self) -> float: ...
    @property
    def adapter_kernel_size(self) -> int: ...
    @property
    def adapter_stride(self) -> int: ...
    @property
    def num_attention_heads(self) -> int: ...
    @property
    def intermediate_size(self) -> int: ...
    @property
    def adapter_act(self) -> str: ...
    @property
    def num_adapter_layers(self) -> int: ...


class AdapterLayer(nn.Module):
    """Strided conv + GLU on a residual path and before a position-free self attention, then FFN."""

    def __init__(self, cfg: AdapterConfig):
        super().__init__()
        D, eps, k, s = cfg.adapter_size, cfg.layer_norm_eps, cfg.adapter_kernel_size, cfg.adapter_stride
        self.kernel_size, self.stride, self.padding = k, s, s // 2  # HF pads stride // 2 on both sides
        self.residual_layer_norm = nn.LayerNorm(D, eps=eps)
        self.residual_conv = nn.Conv1d(D, 2 * D, k, stride=s, padding=s // 2)
        self.self_attn_layer_norm = nn.LayerNorm(D, eps=eps)
        self.self_attn_conv = nn.Conv1d(D, 2 * D, k, stride=s, padding=s // 2)
        self.self_attn = ConformerSelfAttention(D, cfg.num_attention_heads, None)
        self.ffn_layer_norm = nn.LayerNorm(D, eps=eps)
        self.ffn = FeedForward(D, cfg.intermediate_size, cfg.adapter_act)

    def _normed(self, x: Tensor) -> Tensor:
        """Both conv inputs side by side: (B, T, 2D) = [residual LN(x), attention LN(x)]."""
        return torch.cat([self.residual_layer_norm(x), self.self_attn_layer_norm(x)], dim=-1)

    def _convs(self, normed: Tensor, pad: tuple[int, int]) -> tuple[Tensor, Tensor]:
        res_in, attn_in = F.pad(normed.transpose(1, 2), pad).chunk(2, dim=1)  # (B, D, T') each

        def conv(h: Tensor, conv: nn.Conv1d) -> Tensor:
            return F.glu(F.conv1d(h, conv.weight, conv.bias, stride=self.stride), dim=1).transpose(1, 2)

        return conv(res_in, self.residual_conv), conv(attn_in, self.self_attn_conv)

    def _tail(self, residual: Tensor, attn: Tensor) -> Tensor:
        x = attn + residual
        result: Tensor = x + self.ffn(self.ffn_layer_norm(x))
        return result

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        residual, h = self._convs(self._normed(x), (self.padding, self.padding))
        return self._tail(residual, self.self_attn(h, attn_mask))

    def output_length(self, n: int) -> int:
        return (n + 2 * (self.kernel_size // 2) - self.kernel_size) // self.stride + 1

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) input lengths -> (B,) output lengths (transformers' formula; ``output_length`` batched)."""
        k, s = self.kernel_size, self.stride
        return torch.div(lengths + 2 * (k // 2) - k, s, rounding_mode="floor") + 1

    @property
    def lookahead(self) -> int:
        """Input frames beyond a stride-aligned chunk that its last output reads (0 for k=3, s=2)."""
        return max(0, self.kernel_size - self.padding - self.stride)

    def forward_cached(
        self,
        x: Tensor,
        positions: Tensor,
        conv_in: Tensor,
        attn: AttentionCache,
        in_keep: Tensor,
        key_valid: Tensor,
        central: int | None = None,
    ) -> tuple[Tensor, Tensor, AttentionCache]:
        """x (B, T, D): a stride-aligned block of input frames (T a multiple of the stride);
        conv_in (B, stride // 2, 2D): the LayerNormed inputs right before it (zeros = offline padding);
        in_keep (B, T) real inputs (others enter the convs as zeros, like the offline padding);
        key_valid (B, L + T / stride) real cached + new outputs; ``central`` (a multiple of the stride,
        default T): the input frames that continue the stream, the rest being a lookahead left out of
        the caches. Returns (B, T / stride, D) and the caches."""
        c = x.shape[1] if central is None else central
        normed = self._normed(x).masked_fill(~in_keep.unsqueeze(-1), 0.0)
        normed = torch.cat([conv_in, normed], dim=1)  # (B, p + T, 2D)
        residual, h = self._convs(normed, (0, self.kernel_size - self.padding - self.stride))
        a, attn = self.self_attn.forward_cached(h, positions, attn, key_valid, c // self.stride)
        return self._tail(residual, a), normed[:, c : c + self.padding], attn


class AdapterState(NamedTuple):
    """The adapter's part of ``Wav2Vec2BertCache`` (the ``ad_*`` fields, in that order)."""

    valid: Tensor  # (B, sum L_i) bool
    keys: Tensor  # (B, H, sum L_i, Dh)
    values: Tensor  # (B, H, sum L_i, Dh)
    conv: Tensor  # (B, n_adapter, stride // 2, 2 D)


def _at_rate(frames: int, scale: int) -> int:
    if frames % scale:
        raise StreamUsageError(f"{frames} frames is not a multiple of the adapter stride {scale}")
    return frames // scale


class Adapter(nn.Module):
    def __init__(self, cfg: AdapterConfig):
        super().__init__()
        self.proj: nn.Linear | None = None
        self.proj_layer_norm: nn.LayerNorm | None = None
        if cfg.adapter_size != cfg.hidden_size:
            self.proj = nn.Linear(cfg.hidden_size, cfg.adapter_size)
            self.proj_layer_norm = nn.LayerNorm(cfg.adapter_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(AdapterLayer(cfg) for _ in range(cfg.num_adapter_layers))

    def adapter_layers(self) -> list[AdapterLayer]:
        return [layer for layer in self.layers if isinstance(layer, AdapterLayer)]

    def project(self, x: Tensor) -> Tensor:
        if self.proj is None or self.proj_layer_norm is None:
            return x
        result: Tensor = self.proj_layer_norm(self.proj(x))
        return result

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) input lengths -> (B,) output lengths of the last layer."""
        for layer in self.adapter_layers():
            lengths = layer.output_lengths(lengths)
        return lengths

    def forward(
        self,
        x: Tensor,
        keep: Tensor | None,
        chunk_frames: int | None = None,
        left_frames: int | None = None,
        chunk_delay: int = 0,
    ) -> Tensor:
        """x (B, T, D_enc) encoder output, keep (B, T) bool real frames -> (B, T', D). With
        ``chunk_frames`` (> 0), layer i gets the encoder's chunk mask at its rate (blocks of
        ``chunk_frames / s**(i+1)`` at ``k * chunk_frames / s**(i+1) - chunk_delay / s**(i+1)``)."""
        x = self.project(x)
        lengths = None if keep is None else keep.sum(1)
        scale = 1
        for layer in self.adapter_layers():
            scale *= layer.stride
            n = layer.output_length(x.shape[1])
            sub_keep = None
            if lengths is not None:
                lengths = layer.output_lengths(lengths)
                sub_keep = torch.arange(n, device=x.device)[None, :] < lengths[:, None]
            sub_chunk = None
            if chunk_frames is not None and chunk_frames > 0:
                c = _at_rate(chunk_frames, scale)
                left = None if left_frames is None else _at_rate(left_frames, scale)
                delay = _at_rate(chunk_delay, scale)
                sub_chunk = chunk_attention_mask(chunk_block_ids(n, c, delay), left).to(x.device)
            sub_mask = combine_masks(None if sub_keep is None else sub_keep[:, None, None, :], sub_chunk, dtype=x.dtype)
            x = layer(x, sub_mask)
        return x

    def forward_cached(
        self,
        x: Tensor,
        idx: Tensor,
        keep: Tensor,
        num_real: Tensor | None,
        state: AdapterState,
        left_frames: int,
        central: int,
    ) -> tuple[Tensor, int, AdapterState]:
        """x (B, T, D_enc) one block of encoder output (central frames + lookahead), idx (B, T) their
        frame indices, keep (B, T) bool real frames, ``num_real`` (B,) real encoder frames of each
        stream (None: the stream goes on), ``central``: frames that continue the stream.
        Returns (B, T / s**n, D), the central output frames of the last layer, and the new state."""
        x = self.project(x)
        valid, keys, values, convs = [], [], [], []
        off = 0
        for i, layer in enumerate(self.adapter_layers()):
            idx = torch.div(idx[:, :: layer.stride], layer.stride, rounding_mode="floor")  # output indices
            out_real = idx >= 0
            if num_real is not None:
                num_real = torch.where(num_real > 0, layer.output_lengths(num_real), 0)
                out_real = out_real & (idx < num_real[:, None])
            Li = left_frames // layer.stride ** (i + 1)
            kv_valid = torch.cat([state.valid[:, off : off + Li], out_real], dim=1)
            attn = AttentionCache(state.keys[:, :, off : off + Li], state.values[:, :, off : off + Li])
            x, conv_in, attn = layer.forward_cached(x, idx, state.conv[:, i], attn, keep, kv_valid, central)
            central //= layer.stride
            valid.append(kv_valid[:, central : central + Li])
            keys.append(attn.key)
            values.append(attn.value)
            convs.append(conv_in)
            keep, off = out_real, off + Li
        if not valid:
            return x, central, state
        new = AdapterState(
            torch.cat(valid, dim=1), torch.cat(keys, dim=2), torch.cat(values, dim=2), torch.stack(convs, dim=1)
        )
        return x, central, new


class Wav2Vec2BertCache(NamedTuple):
    """Cached-mode state of a batch of streams (every field has the batch first; shapes are fixed).

    ahead      (B, R', D)          projected stacked frames of the lookahead (R' = R * frame_stride;
                                   exact, causally normalised): the next call's first central frames
    tail       (B, hop)            last samples of the previous chunk (the fbank overhang; zeros at start)
    next_frame (B,) long           stacked-frame index of the next block's first frame (starts at -frame_stride)
    fb_count   (B,) f64, fb_sum / fb_sumsq (B, 80) f64   running fbank statistics ("stream" normalisation)
    key_valid  (B, L) bool         which of the L cached encoder frames are real
    keys, values (B, N, H, L, Dh)  encoder KV cache, one per layer
    conv       (B, N, D, K-1)      causal depthwise-conv inputs, one per layer
    ad_valid   (B, sum L_i) bool; ad_keys, ad_values (B, H, sum L_i, Dh)   adapter KV caches, layer i
               holding L_i = L / stride**(i+1) frames, concatenated along time
    ad_conv    (B, n_adapter, stride // 2, 2 Da)   LayerNormed inputs before the block, per adapter layer
    """

    ahead: Tensor
    tail: Tensor
    next_frame: Tensor
    fb_count: Tensor
    fb_sum: Tensor
    fb_sumsq: Tensor
    key_valid: Tensor
    keys: Tensor
    values: Tensor
    conv: Tensor
    ad_valid: Tensor
    ad_keys: Tensor
    ad_values: Tensor
    ad_conv: Tensor
