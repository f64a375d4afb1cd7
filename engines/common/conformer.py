"""Conformer blocks shared by Wav2Vec2-Conformer and Wav2Vec2-BERT, with their streaming caches.

Shape legend: B batch, T frames (Tq queries, Tk keys), D hidden size, H heads, Dh head size,
K depthwise kernel size, P positions.

Every block keeps the Hugging Face parameter names (``linear_q``, ``pos_bias_u``,
``depthwise_conv`` ...), so checkpoints load with a strict key check.

Positions are absolute frame indices, passed explicitly, so a chunk attending to a KV cache sees
the same relative distances, rotary angles and relative-key buckets as the offline forward:

- ``"relative"`` (Transformer-XL): score ``(q_i + u) . k_j + (q_i + v) . W_pos pe(i - j)``; ``pe(p)``
  is the sinusoid of the signed distance ``p`` (sin on even, cos on odd dims).
- ``"relative_key"`` (Shaw): score ``q_i . k_j + q_i . E[clamp(j - i, -left_max, right_max)]``.
- ``"rotary"``: the layer input is rotated by its absolute position before ``linear_q``/``linear_k``
  (values are not rotated), exactly as transformers does.
- ``None``: no position information in attention.

Both relative variants are computed as ``q @ table^T`` over the distinct distances followed by a
gather, instead of materialising a (Tq, Tk, Dh) tensor; the result is the same.

Masks: ``attn_mask`` is additive float (B or 1, 1, Tq, Tk) with ``-inf``-like values on blocked keys.
The masks (`chunk_attention_mask` and friends) live in engines.common.masks.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.common.config import activation
from engines.common.masks import combine_masks
from engines.errors import UnsupportedConfigError

__all__ = [
    "POSITION_EMBEDDING_TYPES",
    "FeedForward",
    "ConvModule",
    "ConformerSelfAttention",
    "AttentionCache",
    "sinusoid_table",
    "rotary_angles",
]

POSITION_EMBEDDING_TYPES = (None, "relative", "relative_key", "rotary")
MASK_VALUE = torch.finfo(torch.float32).min  # additive mask value for blocked keys


class FeedForward(nn.Module):
    """Linear -> act -> Linear (HF ``intermediate_dense`` / ``output_dense``)."""

    def __init__(self, dim: int, inner: int, act: str):
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, inner)
        self.output_dense = nn.Linear(inner, dim)
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.output_dense(self.act(self.intermediate_dense(x)))
        return result


# -------------------------------------------------------------------------------------------------
# Convolution module
# -------------------------------------------------------------------------------------------------


class ConvModule(nn.Module):
    """LN -> pointwise conv + GLU -> depthwise conv -> norm -> act -> pointwise conv.

    ``causal=True`` (Wav2Vec2-BERT): the depthwise conv is padded K-1 frames on the left and its
    norm is a LayerNorm (``depthwise_layer_norm``). ``causal=False`` (Wav2Vec2-Conformer): symmetric
    (K-1)/2 padding and a BatchNorm (``batch_norm``, eval statistics, so per frame).

    Streaming: the cache holds the last K-1 GLU outputs, (B, D, K-1). A causal conv is exact with
    no lookahead. A symmetric conv needs ``lookahead = (K-1)/2`` future frames: `forward_cached`
    returns outputs for all but the last ``lookahead`` input frames of the concatenation, i.e. the
    output lags the input by ``lookahead`` frames (``final=True`` pads the end with zeros, as offline).
    """

    def __init__(self, dim: int, kernel_size: int, act: str, causal: bool, eps: float = 1e-5):
        super().__init__()
        if kernel_size % 2 == 0:
            raise UnsupportedConfigError("conv_depthwise_kernel_size", kernel_size, "odd sizes")
        self.causal = causal
        self.kernel_size = kernel_size
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.pointwise_conv1 = nn.Conv1d(dim, 2 * dim, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=False)
        if causal:
            self.depthwise_layer_norm = nn.LayerNorm(dim, eps=eps)
        else:
            self.batch_norm = nn.BatchNorm1d(dim)
        self.pointwise_conv2 = nn.Conv1d(dim, dim, 1, bias=False)
        self.act = activation(act)

    @property
    def lookahead(self) -> int:
        return 0 if self.causal else (self.kernel_size - 1) // 2

    def _glu_in(self, x: Tensor, keep: Tensor | None) -> Tensor:
        x = self.layer_norm(x)
        if keep is not None:  # (B, T) bool: zero padded frames so they do not leak into the conv
            x = x.masked_fill(~keep.unsqueeze(-1), 0.0)
        return F.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)  # (B, D, T)

    def _glu_out(self, h: Tensor) -> Tensor:
        h = self.depthwise_conv(h)  # (B, D, T)
        if self.causal:
            h = self.depthwise_layer_norm(h.transpose(1, 2)).transpose(1, 2)
        else:
            h = self.batch_norm(h)
        result: Tensor = self.pointwise_conv2(self.act(h)).transpose(1, 2)  # (B, T, D)
        return result

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        h = self._glu_in(x, keep)
        left = self.kernel_size - 1 if self.causal else (self.kernel_size - 1) // 2
        right = self.kernel_size - 1 - left
        return self._glu_out(F.pad(h, (left, right)))

    def init_cache(self, batch: int, dim: int) -> Tensor:
        """Zeros stand for the offline left padding. (B, D, K-1)."""
        w = self.depthwise_conv.weight
        return torch.zeros(batch, dim, self.kernel_size - 1, device=w.device, dtype=w.dtype)

    def forward_cached(
        self, x: Tensor, cache: Tensor, keep: Tensor | None = None, final: bool = False, central: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (B, T, D) new frames, keep (B, T) bool real frames (others enter the conv as zeros,
        like the offline padding) -> (y (B, T', D), new cache (B, D, K-1)).

        Causal: T' = T. Symmetric: T' = T (outputs for the frames ``lookahead`` behind); with
        ``final=True`` also the last ``lookahead`` frames (zero right padding), T' = T + lookahead.
        ``central``: only the first ``central`` frames of x continue the stream (the rest are a
        provisional right context, computed again next call): the cache ends at x[:, central].
        """
        h = torch.cat([cache, self._glu_in(x, keep)], dim=2)  # (B, D, K-1+T)
        end = h.shape[2] if central is None else self.kernel_size - 1 + central
        new_cache = h[..., end - (self.kernel_size - 1) : end]
        if final and self.lookahead:
            h = F.pad(h, (0, self.lookahead))
        return self._glu_out(h), new_cache


# -------------------------------------------------------------------------------------------------
# Positions
# -------------------------------------------------------------------------------------------------


def sinusoid_table(distances: Tensor, dim: int) -> Tensor:
    """Transformer-XL position encodings of signed distances (P,) -> (P, dim), as transformers builds them."""
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.int64).float() * -(math.log(10000.0) / dim))
    angles = distances.float().unsqueeze(1) * div_term.to(distances.device)  # (P, dim/2)
    pe = torch.zeros(distances.shape[0], dim, device=distances.device)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe


def rotary_angles(positions: Tensor, head_size: int, base: float) -> tuple[Tensor, Tensor]:
    """cos, sin (..., T, 1, Dh) for absolute positions (..., T)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.int64).float() / head_size))
    freqs = positions.float().unsqueeze(-1) * inv_freq.to(positions.device)  # (..., T, Dh/2)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().unsqueeze(-2), emb.sin().unsqueeze(-2)


class AttentionCache(NamedTuple):
    """Keys and values of the last L frames of one attention layer (L may be 0): (B, H, L, Dh) each."""

    key: Tensor
    value: Tensor


class ConformerSelfAttention(nn.Module):
    """Multi-head self attention with optional relative / relative_key / rotary positions."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        position_embeddings_type: str | None = None,
        left_max_position_embeddings: int = 64,
        right_max_position_embeddings: int = 8,
        rotary_embedding_base: float = 10000.0,
    ):
        super().__init__()
        if position_embeddings_type not in POSITION_EMBEDDING_TYPES:
            raise UnsupportedConfigError("position_embeddings_type", position_embeddings_type, POSITION_EMBEDDING_TYPES)
        self.num_heads = num_heads
        self.head_size = dim // num_heads
        self.scaling = self.head_size**-0.5
        self.position_embeddings_type = position_embeddings_type
        self.rotary_base = rotary_embedding_base
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        if position_embeddings_type == "relative":
            self.linear_pos = nn.Linear(dim, dim, bias=False)
            self.pos_bias_u = nn.Parameter(torch.zeros(num_heads, self.head_size))
            self.pos_bias_v = nn.Parameter(torch.zeros(num_heads, self.head_size))
        if position_embeddings_type == "relative_key":
            self.left_max = left_max_position_embeddings
            self.right_max = right_max_position_embeddings
            self.distance_embedding = nn.Embedding(self.left_max + self.right_max + 1, self.head_size)

    def _rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate x (B, T, D) by absolute positions (T,) or (B, T), per head."""
        B, T, D = x.shape
        cos, sin = rotary_angles(positions.to(x.device), self.head_size, self.rotary_base)  # (.., T, 1, Dh)
        if cos.dim() == 3:
            cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
        x = x.view(B, T, self.num_heads, self.head_size)
        half = self.head_size // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return (x * cos.to(x.dtype) + rotated * sin.to(x.dtype)).view(B, T, D)

    def _heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, H, T, Dh)

    def project_kv(self, x: Tensor, positions: Tensor) -> AttentionCache:
        """Keys and values of frames x (B, T, D); ``positions`` (T,) or (B, T) matter for rotary only."""
        qk_in = self._rotate(x, positions) if self.position_embeddings_type == "rotary" else x
        return AttentionCache(self._heads(self.linear_k(qk_in)), self._heads(self.linear_v(x)))

    def _position_bias(self, q: Tensor, q_offset: int, Tk: int) -> tuple[Tensor, Tensor | None]:
        """(content query, additive score bias (B, H, Tq, Tk) or None). Query i sits at key index
        ``q_offset + i``; only distances matter, so no absolute position is needed here."""
        kind = self.position_embeddings_type
        Tq = q.shape[2]
        q_idx = torch.arange(q_offset, q_offset + Tq, device=q.device)
        k_idx = torch.arange(Tk, device=q.device)
        if kind == "relative":
            lo = q_offset - (Tk - 1)  # smallest distance i - j
            table = torch.arange(lo, q_offset + Tq, device=q.device)  # (P,) distances lo .. hi
            pos = self.linear_pos(sinusoid_table(table, self.linear_pos.in_features).to(q))  # (P, D)
            pos = pos.view(-1, self.num_heads, self.head_size).transpose(0, 1)  # (H, P, Dh)
            scores = (q + self.pos_bias_v[None, :, None, :]) @ pos.transpose(1, 2).unsqueeze(0)  # (B, H, Tq, P)
            dist = q_idx.unsqueeze(1) - k_idx.unsqueeze(0)  # (Tq, Tk)
            return q + self.pos_bias_u[None, :, None, :], _gather_last(scores, dist - lo) * self.scaling
        if kind == "relative_key":
            dist = (k_idx.unsqueeze(0) - q_idx.unsqueeze(1)).clamp(-self.left_max, self.right_max) + self.left_max
            scores = q @ self.distance_embedding.weight.to(q.dtype).t()  # (B, H, Tq, P)
            return q, _gather_last(scores, dist) * self.scaling
        return q, None

    def attend(
        self, x: Tensor, positions: Tensor, kv: AttentionCache, attn_mask: Tensor | None, q_offset: int = 0
    ) -> Tensor:
        """Queries from x (B, Tq, D) at ``positions`` against keys/values kv (B, H, Tk, Dh), the
        first query being key ``q_offset``; attn_mask additive, broadcastable to (B, H, Tq, Tk)."""
        qk_in = self._rotate(x, positions) if self.position_embeddings_type == "rotary" else x
        q = self._heads(self.linear_q(qk_in))  # (B, H, Tq, Dh)
        q, bias = self._position_bias(q, q_offset, kv.key.shape[2])
        if attn_mask is not None:
            bias = attn_mask if bias is None else bias + attn_mask
        out = F.scaled_dot_product_attention(q, kv.key, kv.value, attn_mask=bias, scale=self.scaling)
        B, H, T, Dh = out.shape
        result: Tensor = self.linear_out(out.transpose(1, 2).reshape(B, T, H * Dh))
        return result

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Offline self attention over x (B, T, D) at positions 0..T-1."""
        positions = torch.arange(x.shape[1], device=x.device)
        return self.attend(x, positions, self.project_kv(x, positions), attn_mask)

    def forward_cached(
        self, x: Tensor, positions: Tensor, cache: AttentionCache, key_valid: Tensor, central: int | None = None
    ) -> tuple[Tensor, AttentionCache]:
        """One chunk against a fixed-size KV cache.

        x (B, T, D) new frames at absolute ``positions`` (B, T); cache (B, H, L, Dh): the L frames
        right before the chunk; key_valid (B, L + T) bool: which cached and new frames are real
        (the rest are masked out). Every query sees the whole cache and the whole chunk.
        ``central``: only the first ``central`` new frames enter the cache (the rest are a
        lookahead, computed again as central frames by the next call); default all T.
        Returns (B, T, D) and the cache of the L frames before the next chunk.
        """
        T = x.shape[1]
        c = T if central is None else central
        L = cache.key.shape[2]
        new = self.project_kv(x, positions)
        kv = AttentionCache(torch.cat([cache.key, new.key], dim=2), torch.cat([cache.value, new.value], dim=2))
        mask = combine_masks(key_valid[:, None, None, :], dtype=x.dtype)
        out = self.attend(x, positions, kv, mask, q_offset=L)
        return out, AttentionCache(kv.key[:, :, c : c + L], kv.value[:, :, c : c + L])

    def init_cache(self, batch: int, left_frames: int) -> AttentionCache:
        w = self.linear_q.weight
        empty = torch.zeros(batch, self.num_heads, left_frames, self.head_size, device=w.device, dtype=w.dtype)
        return AttentionCache(empty, empty.clone())


def _gather_last(scores: Tensor, index: Tensor) -> Tensor:
    """scores (B, H, Tq, P), index (Tq, Tk) into P -> (B, H, Tq, Tk)."""
    B, H, Tq, _ = scores.shape
    return torch.gather(scores, 3, index.unsqueeze(0).unsqueeze(0).expand(B, H, Tq, index.shape[1]))
