"""The waveform transformer shared by wav2vec2 and WavLM: CNN feature encoder, feature
projection, positional conv embedding, post-LN or pre-LN ("stable layer norm") transformer,
the encoder's cached streaming (heads: engines.common.heads).

Shape legend: B batch, S samples, T frames, C chunk frames, L left-context frames,
D hidden size, H heads, hd head dim, N layers, K positional conv kernel, V vocab / labels.

A family supplies its config dataclass and an attention module with
``forward(x, mask_bias, rel) -> y`` and ``forward_cached(x, k, v, mask_bias, rel) -> (y, k, v)``
plus ``relative_bias(q_pos, k_pos) -> (H, Tq, Tk) | None`` (None for plain attention).

Cached streaming, per call: C * 320 new samples -> C output frames.

    samples ──► CNN (sample tail: exact) ──► projection ──► positional conv (buffer of K-1
    frames; `right` frames of lookahead) ──► N layers (KV cache of L frames each) ──► head

The transformer chunk of call k covers frames [k*C - delay, (k+1)*C - delay) with
``delay = 1 + right``: 1 frame because a frame's 400 samples reach 80 samples into the next
frame's hop, ``right = K - 1 - K // 2`` (63 frames for K = 128) for the positional conv. Every
frame of a chunk attends to the chunk and the L frames before the chunk start: the offline
equivalent is ``chunk_attention_mask(chunk_block_ids(T, C, delay), L)`` (engines.common.masks).

With a lookahead of R frames (``lookahead_ms``) the delay is ``1 + right + R``: ``pos_buf``
holds K - 1 + R projected frames, the transformer runs on the C central frames plus the R after
them (all attend to L cache + C + R), and only the central frames' keys/values are cached (the
lookahead is recomputed next call; engines.common.streaming states the offline equivalent).

Approximations, the only ones: a GroupNorm feature encoder (``feat_extract_norm="group"``)
normalises each channel over the whole utterance offline; streaming uses the running mean and
variance of every frame seen so far (including the current chunk). Layer-norm feature encoders
are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from engines.common.blocks import FeatureEncoder, FeatureProjection, FeedForward, PositionalConvEmbedding, mask_value
from engines.common.heads import HeadedEngine
from engines.errors import StreamUsageError
from engines.types import ForwardOutput, StreamSpec

__all__ = [
    "EncoderLayer",
    "StableEncoderLayer",
    "Encoder",
    "WaveformBackbone",
    "WaveformModel",
    "WaveformCache",
]


class WaveformAttention(Protocol):
    """What a family's attention module provides (see the module docstring)."""

    def __call__(self, x: Tensor, mask_bias: Tensor | None, rel: Tensor | None) -> Tensor: ...
    def forward_cached(
        self, x: Tensor, k: Tensor, v: Tensor, mask_bias: Tensor | None, rel: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]: ...
    def relative_bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None: ...


class GroupNormStats(Protocol):
    """The running GroupNorm statistics a cached CNN step reads (fields of the families' caches)."""

    @property
    def gn_sum(self) -> Tensor: ...
    @property
    def gn_count(self) -> Tensor: ...


MakeAttention = Callable[[Any, int], WaveformAttention]  # (config, layer index) -> attention module


# ---------------------------------------------------------------------------------------------
# Transformer layers: x = x + attn(x); post-LN or pre-LN
# ---------------------------------------------------------------------------------------------


class AttnAdapterLayer(nn.Module):
    """MMS per-layer adapter (``adapter_attn_dim``): x + linear_2(relu(linear_1(norm(x))))."""

    def __init__(self, hidden: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.linear_1 = nn.Linear(hidden, dim)
        self.act_fn = nn.ReLU()
        self.linear_2 = nn.Linear(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.linear_2(self.act_fn(self.linear_1(self.norm(x))))
        return result


class EncoderLayer(nn.Module):
    """Post-LN (``do_stable_layer_norm=False``)."""

    def __init__(self, cfg: Any, attn: WaveformAttention):
        super().__init__()
        self.attention = attn
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = FeedForward(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, mask_bias: Tensor | None, rel: Tensor | None) -> Tensor:
        x = self.layer_norm(x + self.attention(x, mask_bias, rel))
        result: Tensor = self.final_layer_norm(x + self.feed_forward(x))
        return result

    def forward_cached(
        self, x: Tensor, k: Tensor, v: Tensor, mask_bias: Tensor | None, rel: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attention.forward_cached(x, k, v, mask_bias, rel)
        x = self.layer_norm(x + a)
        return self.final_layer_norm(x + self.feed_forward(x)), k, v


class StableEncoderLayer(nn.Module):
    """Pre-LN (``do_stable_layer_norm=True``), with the optional MMS adapter."""

    def __init__(self, cfg: Any, attn: WaveformAttention):
        super().__init__()
        self.attention = attn
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = FeedForward(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        adapter_dim = getattr(cfg, "adapter_attn_dim", None)
        self.adapter_layer = AttnAdapterLayer(cfg.hidden_size, adapter_dim) if adapter_dim else None

    def _rest(self, x: Tensor) -> Tensor:
        x = x + self.feed_forward(self.final_layer_norm(x))
        if self.adapter_layer is not None:
            x = x + self.adapter_layer(x)
        return x

    def forward(self, x: Tensor, mask_bias: Tensor | None, rel: Tensor | None) -> Tensor:
        return self._rest(x + self.attention(self.layer_norm(x), mask_bias, rel))

    def forward_cached(
        self, x: Tensor, k: Tensor, v: Tensor, mask_bias: Tensor | None, rel: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attention.forward_cached(self.layer_norm(x), k, v, mask_bias, rel)
        return self._rest(x + a), k, v


class Encoder(nn.Module):
    """pos_conv_embed + layers (+ layer_norm: before the layers for post-LN, after for pre-LN)."""

    def __init__(self, cfg: Any, make_attention: MakeAttention):
        super().__init__()
        self.stable = bool(cfg.do_stable_layer_norm)
        self.pos_conv_embed = PositionalConvEmbedding(
            cfg.hidden_size, cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, cfg.feat_extract_activation
        )
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        Layer = StableEncoderLayer if self.stable else EncoderLayer
        self.layers = nn.ModuleList([Layer(cfg, make_attention(cfg, i)) for i in range(cfg.num_hidden_layers)])

    def relative_bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        return self.encoder_layers()[0].attention.relative_bias(q_pos, k_pos)

    def encoder_layers(self) -> list[EncoderLayer | StableEncoderLayer]:
        return [layer for layer in self.layers if isinstance(layer, (EncoderLayer, StableEncoderLayer))]

    def embed(self, x: Tensor, pos: Tensor) -> Tensor:
        """x (B, T, D) projected features + pos (B, T, D) positional conv output -> layer-0 input."""
        x = x + pos
        return x if self.stable else self.layer_norm(x)

    def forward(self, x: Tensor, mask_bias: Tensor | None, keep_all: bool = False) -> tuple[Tensor, list[Tensor]]:
        """x (B, T, D) with padded frames zeroed; mask_bias (B, 1, T, T) additive or None.
        Returns (last hidden (B, T, D), [layer-0 input, layer outputs...] if keep_all)."""
        T = x.shape[1]
        x = self.embed(x, self.pos_conv_embed(x))
        positions = torch.arange(T, device=x.device)
        rel = self.relative_bias(positions, positions)
        states = [x] if keep_all else []
        for layer in self.layers:
            x = layer(x, mask_bias, rel)
            if keep_all:
                states.append(x)
        if self.stable:
            x = self.layer_norm(x)
        return x, states


class WaveformBackbone(nn.Module):
    """``Wav2Vec2Model`` / ``WavLMModel``: feature_extractor, feature_projection, encoder."""

    def __init__(self, cfg: Any, make_attention: MakeAttention):
        super().__init__()
        self.feature_extractor = FeatureEncoder(
            cfg.conv_dim,
            cfg.conv_kernel,
            cfg.conv_stride,
            cfg.conv_bias,
            cfg.feat_extract_norm,
            cfg.feat_extract_activation,
        )
        self.feature_projection = FeatureProjection(cfg.conv_dim[-1], cfg.hidden_size, cfg.layer_norm_eps)
        self.encoder = Encoder(cfg, make_attention)


class WaveformCache(NamedTuple):
    """Cached-mode state of one or more streams (leading dim B). Shapes fixed for a spec.

    tail:      (B, P)            last P = ceil((rf - hop) / hop) * hop raw samples
    gn_sum:    (B, 2, C0) f64    running sum and sum of squares of layer-0 conv outputs (group norm);
                                 C0 = 0 for layer-norm encoders
    gn_count:  (B,) f64          number of layer-0 frames in gn_sum
    pos_buf:   (B, K - 1, D)     projected frames the positional conv still needs
    keys:      (B, N, H, L, hd)  per-layer keys of the L frames before the next chunk
    values:    (B, N, H, L, hd)
    next_frame:(B,) long         absolute index of the next chunk's first frame (starts at -delay)
    """

    tail: Tensor
    gn_sum: Tensor
    gn_count: Tensor
    pos_buf: Tensor
    keys: Tensor
    values: Tensor
    next_frame: Tensor


class WaveformModel(HeadedEngine):
    """A family + head. ``prefix`` is the HF base-model attribute ("wav2vec2", "wavlm")."""

    prefix = ""

    def __init__(self, cfg: Any, head: str, make_attention: MakeAttention):
        super().__init__(cfg, head)
        backbone = WaveformBackbone(cfg, make_attention)
        if head == "base":
            # a bare ``Wav2Vec2Model`` checkpoint has no prefix: load its keys under it
            self.checkpoint_prefix = self.prefix + "."
        setattr(self, self.prefix, backbone)
        self.ignored_checkpoint_keys = (
            r"(^|\.)masked_spec_embed$",  # SpecAugment's learned mask embedding (training only)
            r"^objective\.",  # x-vector AM-softmax loss weight (training only)
        )
        self.build_head(cfg, cfg.hidden_size)
        fe = backbone.feature_extractor
        self.samples_per_frame = fe.hop
        self.receptive_field_samples = fe.receptive_field

    @property
    def backbone(self) -> WaveformBackbone:
        result: WaveformBackbone = getattr(self, self.prefix)
        return result

    # -- offline --------------------------------------------------------------------------
    def frame_mask(self, attention_mask: Tensor, T: int) -> Tensor:
        """(B, S) sample mask -> (B, T) frame mask, as HF's _get_feature_vector_attention_mask."""
        lengths = attention_mask.sum(-1)
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return torch.arange(T, device=attention_mask.device)[None, :] < lengths[:, None]

    def features(self, samples: Tensor) -> Tensor:
        """(B, S) -> (B, T, D) projected CNN features."""
        bb = self.backbone
        result: Tensor = bb.feature_projection(bb.feature_extractor(samples).transpose(1, 2))
        return result

    def encode(self, h: Tensor, frame_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        """(B, T, D) projected features -> (B, T, D) frames the head consumes per frame
        (last hidden, or the weighted layer sum). frame_mask (B, T) bool marks real frames;
        attn_mask (T, T) or (B, T, T) bool restricts attention further (chunk masks)."""
        allowed = None
        if frame_mask is not None:
            h = h.masked_fill(~frame_mask[..., None], 0.0)
            allowed = frame_mask[:, None, None, :]  # (B, 1, 1, T) keys
        if attn_mask is not None:
            m = attn_mask if attn_mask.dim() == 3 else attn_mask[None]
            m = m[:, None]  # (B|1, 1, T, T)
            allowed = m if allowed is None else (allowed & m)
        bias = None
        if allowed is not None:
            bias = torch.zeros(allowed.shape, dtype=h.dtype, device=h.device).masked_fill(~allowed, mask_value(h.dtype))
        last, states = self.backbone.encoder(h, bias, keep_all=self.weighted)
        return self.layer_sum(states) if self.weighted else last

    def forward(
        self, inputs: Tensor, attention_mask: Tensor | None = None, attn_mask: Tensor | None = None
    ) -> ForwardOutput:
        """inputs (B, S) normalised samples; attention_mask (B, S) 1 on real samples;
        attn_mask (T, T) bool: an extra restriction (e.g. ``chunk_attention_mask``)."""
        h = self.features(inputs)  # (B, T, D)
        fmask = None if attention_mask is None else self.frame_mask(attention_mask, h.shape[1])
        x = self.encode(h, fmask, attn_mask)
        frames = self.head_frames(x)
        utt, utt_logits = self.pool(frames, fmask)
        return ForwardOutput(frames, utt, utt_logits, fmask)

    # -- window mode ----------------------------------------------------------------------
    def window_forward(self, samples: Tensor) -> Tensor:
        return self.head_frames(self.encode(self.features(samples)))

    def window_features(self, samples: Tensor) -> Tensor | None:
        if self.config.feat_extract_norm != "layer":
            return None  # GroupNorm over time: a frame's features depend on the whole window
        return self.features(samples)

    def window_from_features(self, features: Tensor) -> Tensor:
        return self.head_frames(self.encode(features))

    # -- cached mode ----------------------------------------------------------------------
    @property
    def pos_conv(self) -> PositionalConvEmbedding:
        return self.backbone.encoder.pos_conv_embed

    def _tail_len(self) -> int:
        hop, rf = self.samples_per_frame, self.receptive_field_samples
        return -(-(rf - hop) // hop) * hop

    def delay_frames(self, spec: StreamSpec) -> int:
        return self._tail_len() // self.samples_per_frame + self.pos_conv.right + spec.lookahead_frames

    def extra_lookahead_frames(self, spec: StreamSpec) -> int:
        return self.delay_frames(spec) - spec.lookahead_frames

    def init_cache(self, spec: StreamSpec) -> WaveformCache:
        if spec.samples_per_frame != self.samples_per_frame:
            raise StreamUsageError(
                f"spec has {spec.samples_per_frame} samples per frame, model {self.samples_per_frame}"
            )
        cfg = self.config
        p = next(self.parameters())
        N, H = cfg.num_hidden_layers, cfg.num_attention_heads
        hd, L, R = cfg.hidden_size // H, spec.left_frames, spec.lookahead_frames
        c0 = cfg.conv_dim[0] if cfg.feat_extract_norm == "group" else 0
        return WaveformCache(
            tail=torch.zeros(1, self._tail_len(), dtype=p.dtype, device=p.device),
            gn_sum=torch.zeros(1, 2, c0, dtype=torch.float64, device=p.device),
            gn_count=torch.zeros(1, dtype=torch.float64, device=p.device),
            pos_buf=torch.zeros(1, self.pos_conv.kernel - 1 + R, cfg.hidden_size, dtype=p.dtype, device=p.device),
            keys=torch.zeros(1, N, H, L, hd, dtype=p.dtype, device=p.device),
            values=torch.zeros(1, N, H, L, hd, dtype=p.dtype, device=p.device),
            next_frame=torch.full((1,), -self.delay_frames(spec), dtype=torch.long, device=p.device),
        )

    def _cnn_cached(
        self, x: Tensor, cache: GroupNormStats, start_sample: Tensor, end_sample: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, P + C*hop) samples starting at absolute sample ``start_sample`` (B,) ->
        (features (B, C0', C), gn_sum, gn_count)."""
        fe = self.backbone.feature_extractor
        layers = fe.convs()
        if fe.norm_mode != "group":
            return fe(x), cache.gn_sum, cache.gn_count
        first = layers[0]
        y = first.conv(x[:, None])  # (B, C0, U) layer-0 frames
        k0, s0 = first.conv.kernel_size[0], first.conv.stride[0]
        U = y.shape[-1]
        u = torch.arange(U, device=x.device)
        u_abs = torch.div(start_sample, s0, rounding_mode="floor")[:, None] + u[None, :]  # (B, U)
        new_from = -(-(self._tail_len() - k0 + 1) // s0)  # frames ending in the new samples
        count_it = (u[None, :] >= new_from) & (u_abs >= 0)
        if end_sample is not None:
            count_it = count_it & (u_abs * s0 + k0 <= end_sample[:, None])
        w = count_it.to(torch.float64)[:, None, :]  # (B, 1, U)
        y64 = y.to(torch.float64)
        gn_sum = cache.gn_sum + torch.stack([(y64 * w).sum(-1), (y64 * y64 * w).sum(-1)], dim=1)
        gn_count = cache.gn_count + w.sum(dim=(1, 2))
        n = gn_count.clamp(min=1.0)[:, None]
        mean = gn_sum[:, 0] / n
        var = (gn_sum[:, 1] / n - mean * mean).clamp(min=0.0)
        y = first.group_norm_with_stats(y, mean.to(y.dtype), var.to(y.dtype))
        y = first.activation(y)
        for layer in layers[1:]:
            y = layer(y)
        return y, gn_sum, gn_count

    def cached_step(
        self, samples: Tensor, cache: WaveformCache, spec: StreamSpec, end_sample: Tensor | None
    ) -> tuple[Tensor, WaveformCache]:
        """C * hop new samples -> the C central frames [pos0, pos0 + C) (pos0 = ``next_frame``).

        The transformer runs on C central + R lookahead frames [pos0, pos0 + C + R): every query
        (central or lookahead) attends to the L cached frames, the chunk and the lookahead. Only
        central frames enter the KV cache; the lookahead frames' layer outputs are dropped and
        computed again, as central frames, by the next call (their CNN output and positional conv
        input are exact and kept in ``pos_buf``)."""
        cfg = self.config
        B, n = samples.shape
        C, L, R, hop = spec.chunk_frames, spec.left_frames, spec.lookahead_frames, self.samples_per_frame
        if n != C * hop:
            raise StreamUsageError(f"cached_step expects {C * hop} samples, got {n}")
        P = self._tail_len()
        pos0 = cache.next_frame  # (B,) first central transformer frame of this chunk
        delay = self.delay_frames(spec)
        x = torch.cat([cache.tail, samples], dim=1)  # (B, P + C*hop)
        start_sample = (pos0 + delay) * hop - P  # absolute index of x[:, 0]
        cnn, gn_sum, gn_count = self._cnn_cached(x, cache, start_sample, end_sample)  # (B, C0', C)
        bb = self.backbone
        h = bb.feature_projection(cnn.transpose(1, 2))  # (B, C, D) frames [pos0 + R + right, +C)
        pc = self.pos_conv
        f_idx = pos0[:, None] + R + pc.right + torch.arange(C, device=h.device)[None, :]  # (B, C)
        valid = f_idx >= 0
        if end_sample is not None:
            end_frame = torch.div(end_sample - self.receptive_field_samples, hop, rounding_mode="floor") + 1
            valid = valid & (f_idx < end_frame[:, None])
        h = h.masked_fill(~valid[..., None], 0.0)  # padding frames are zeros, as offline
        buf = torch.cat([cache.pos_buf, h], dim=1)  # (B, K-1+R+C, D) frames [pos0 - left, pos0 + C + R + right)
        pos = pc.forward_valid(buf)  # (B, C + R, D) frames [pos0, pos0 + C + R)
        x = bb.encoder.embed(buf[:, pc.left : pc.left + C + R], pos)

        # attention geometry: keys are the L cached frames + the chunk + the lookahead
        ar_k = torch.arange(L + C + R, device=h.device)
        k_abs = pos0[:, None] - L + ar_k[None, :]  # (B, L + C + R)
        k_ok = k_abs >= 0
        if end_sample is not None:
            k_ok = k_ok & (k_abs < end_frame[:, None])
        mask_bias = torch.zeros(B, 1, 1, L + C + R, dtype=h.dtype, device=h.device)
        mask_bias = mask_bias.masked_fill(~k_ok[:, None, None, :], mask_value(h.dtype))
        rel = bb.encoder.relative_bias(ar_k[L:], ar_k)  # (H, C + R, L + C + R) or None

        keep = self.weighted
        states = [x[:, :C]] if keep else []
        new_k, new_v = [], []
        for i, layer in enumerate(bb.encoder.encoder_layers()):
            x, k, v = layer.forward_cached(x, cache.keys[:, i], cache.values[:, i], mask_bias, rel)
            new_k.append(k[:, :, C : C + L])  # (B, H, L, hd): the last L central frames
            new_v.append(v[:, :, C : C + L])
            if keep:
                states.append(x[:, :C])
        x = x[:, :C]  # the lookahead frames' outputs are provisional: dropped
        if bb.encoder.stable:
            x = bb.encoder.layer_norm(x)
        if keep:
            x = self.layer_sum(states)
        frames = self.head_frames(x)  # (B, C, V)
        N = cfg.num_hidden_layers
        new_cache = WaveformCache(
            tail=x_tail(samples, cache.tail, P),
            gn_sum=gn_sum,
            gn_count=gn_count,
            pos_buf=buf[:, C:],
            keys=torch.stack(new_k, dim=1) if N else cache.keys,
            values=torch.stack(new_v, dim=1) if N else cache.values,
            next_frame=pos0 + C,
        )
        return frames, new_cache


def x_tail(samples: Tensor, tail: Tensor, P: int) -> Tensor:
    """The last P samples of cat(tail, samples)."""
    if samples.shape[1] >= P:
        return samples[:, samples.shape[1] - P :]
    return torch.cat([tail, samples], dim=1)[:, -P:]
