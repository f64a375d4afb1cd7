"""Attention masks for every family: the chunk mask that cached streaming is equivalent to, padding masks.

One sign convention for chunk boundaries: ``chunk_block_ids(T, C, delay)`` puts the boundaries at
frames ``k * C - delay``, with ``delay >= 0`` the number of frames a layer runs behind the input
(e.g. 1 + the positional conv's lookahead for wav2vec2/WavLM; ``engines.common.waveform``).
``chunk_attention_mask(chunk_block_ids(T, C, delay), L)`` is then exactly what a KV cache of L
frames sees when the C-frame chunks are processed in order.

Bool masks are True where a query may attend a key; ``combine_masks`` ANDs them and turns the
result into the additive float mask (B or 1, 1, Tq, Tk) the attention adds to its scores.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["chunk_block_ids", "chunk_attention_mask", "padding_attention_mask", "combine_masks"]


def chunk_block_ids(num_frames: int, chunk_frames: int, delay: int = 0) -> Tensor:
    """Block index of each frame (T,) for chunks of ``chunk_frames`` whose boundaries sit at
    ``k * chunk_frames - delay`` (``delay >= 0``: the layer runs ``delay`` frames behind the input)."""
    if delay < 0:
        raise ValueError(f"chunk_block_ids: delay must be >= 0, got {delay}")
    return torch.div(torch.arange(num_frames) + delay, chunk_frames, rounding_mode="floor")


def chunk_attention_mask(block_ids: Tensor, left_frames: int | None, block_starts: Tensor | None = None) -> Tensor:
    """Bool (T, T), True where query i may attend key j: j's block is not after i's block, and j is
    at most ``left_frames`` before the first frame of i's block (None: unlimited left context).
    This is exactly what a KV cache of ``left_frames`` frames sees when blocks are processed in order."""
    T = block_ids.shape[0]
    if block_starts is None:
        first = torch.full((int(block_ids.max()) + 1 if T else 0,), T, dtype=torch.long)
        first = first.scatter_reduce(0, block_ids, torch.arange(T), reduce="amin")
        block_starts = first[block_ids]  # (T,) first frame of each frame's block
    j = torch.arange(T)
    allowed = block_ids.unsqueeze(0) <= block_ids.unsqueeze(1)
    if left_frames is not None:
        allowed = allowed & (j.unsqueeze(0) >= (block_starts - left_frames).unsqueeze(1))
    return allowed


def padding_attention_mask(keep: Tensor) -> Tensor:
    """(B, T) bool real frames -> bool (B, 1, 1, T) allowed keys."""
    return keep[:, None, None, :]


def combine_masks(*masks: Tensor | None, dtype: torch.dtype = torch.float32) -> Tensor | None:
    """AND of bool masks broadcastable to (B, 1, Tq, Tk) -> additive float mask, or None."""
    allowed = None
    for m in masks:
        if m is None:
            continue
        m = m if m.dim() == 4 else m.view(*([1] * (4 - m.dim())), *m.shape)
        allowed = m if allowed is None else allowed & m.to(allowed.device)
    if allowed is None:
        return None
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
