"""Wav2Vec2-Conformer (``model_type="wav2vec2-conformer"``): waveform CNN + Conformer encoder.

Shape legend: B batch, S samples, T frames, C chunk frames, L left-context frames, D hidden size,
N layers, K depthwise kernel, r = (K - 1) / 2 conv lookahead.

    samples (B, S) -> feature_extractor (the wav2vec2 CNN, 320 samples/frame) -> feature_projection
      -> N Conformer layers [ffn1 half-step, self attention (relative / rotary / none),
         conv module (symmetric depthwise conv + BatchNorm), ffn2 half-step, LN] -> encoder.layer_norm
      -> head (CTC, frame classification, x-vector, sequence classification; shared with wav2vec2)

transformers builds ``encoder.pos_conv_embed`` for this family but never applies it; its weights
are loaded (strict key check) and unused, exactly as the reference does.

Cached streaming. The depthwise conv is symmetric (non-causal): output t reads inputs
t - r .. t + r. So each layer runs r frames behind its input: a call hands layer l the block of
frames [s, s + C) and gets back its outputs for [s - r, s + C - r), keeping the last r
post-attention frames and the last K - 1 conv inputs. The whole stack lags the CNN by N * r
frames (for K = 31 and 12 layers: 180 frames, 3.6 s), plus one frame of CNN overhang:
``delay_frames = 1 + N * r``. That is the lookahead the config implies; it is exact. Each layer's
attention sees its block and the L frames before it, so the offline equivalent is a chunk mask
per layer whose blocks start at ``k * C - 1 - l * r`` (`layer_chunk_masks`).

With a lookahead of R frames (``lookahead_ms``) every layer's block is C central + R lookahead
frames (``ahead`` keeps the R exact CNN frames for the next call), all attending to L cache + C + R;
the caches (keys/values, conv inputs, pending) take central frames only, and the lookahead's
outputs go on to the next layer (r frames behind, as the central ones) and are dropped after the
last: ``delay_frames = 1 + N * r + R``. The offline equivalent is stated in engines.common.streaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from engines.common.blocks import FeatureEncoder, FeatureProjection, PositionalConvEmbedding, mask_value
from engines.common.config import config_from_dict
from engines.common.conformer import (
    AttentionCache,
    ConformerSelfAttention,
    ConvModule,
    FeedForward,
)
from engines.common.conv_adapter import with_conv_adapter
from engines.common.masks import chunk_attention_mask, chunk_block_ids
from engines.common.waveform import WaveformModel, x_tail
from engines.errors import StreamUsageError, UnsupportedConfigError
from engines.frontend_waveform import WaveformFrontend
from engines.registry import FamilySpec, register_family
from engines.types import EngineModule, StreamSpec
from engines.wav2vec2 import check_waveform_config

__all__ = ["Wav2Vec2ConformerConfig", "Wav2Vec2Conformer", "parse_config", "layer_chunk_masks", "ARCHITECTURES"]

POSITION_TYPES = ("relative", "rotary", None)


@dataclass(frozen=True)
class Wav2Vec2ConformerConfig:
    """The config.json fields inference needs; defaults are transformers'."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    position_embeddings_type: str | None = "relative"
    rotary_embedding_base: float = 10000
    max_source_positions: int = 5000
    conv_depthwise_kernel_size: int = 31
    vocab_size: int | None = None
    num_labels: int = 2
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    tdnn_dim: tuple[int, ...] = (512, 512, 512, 512, 1500)
    tdnn_kernel: tuple[int, ...] = (5, 3, 3, 1, 1)
    tdnn_dilation: tuple[int, ...] = (1, 2, 3, 1, 1)
    xvector_output_dim: int = 512
    pad_token_id: int | None = 0
    # add_adapter: the strided conv stack after the encoder (engines.common.conv_adapter)
    add_adapter: bool = False
    output_hidden_size: int | None = None  # None: hidden_size
    num_adapter_layers: int = 3
    adapter_kernel_size: int = 3
    adapter_stride: int = 2


def parse_config(raw: dict[str, Any], source: str = "") -> Wav2Vec2ConformerConfig:
    cfg = config_from_dict(Wav2Vec2ConformerConfig, raw, source)
    check_waveform_config(cfg, raw, source)
    if cfg.position_embeddings_type not in POSITION_TYPES:
        raise UnsupportedConfigError("position_embeddings_type", cfg.position_embeddings_type, POSITION_TYPES, source)
    if cfg.conv_depthwise_kernel_size % 2 == 0:
        raise UnsupportedConfigError("conv_depthwise_kernel_size", cfg.conv_depthwise_kernel_size, "odd sizes", source)
    return cfg


# -------------------------------------------------------------------------------------------------
# Blocks
# -------------------------------------------------------------------------------------------------


class LayerCache(NamedTuple):
    """One layer's stream cache: keys/values (B, H, L, Dh) of its last L input frames, the last r
    post-attention frames waiting for conv lookahead (B, r, D), and the last K-1 GLU outputs (B, D, K-1)."""

    attn: AttentionCache
    pending: Tensor
    conv: Tensor


class ConformerLayer(nn.Module):
    """x + FFN/2 -> x + MHSA -> x + Conv (symmetric) -> x + FFN/2 -> LN. LayerNorms use eps 1e-5, as HF."""

    def __init__(self, cfg: Wav2Vec2ConformerConfig):
        super().__init__()
        D = cfg.hidden_size
        self.ffn1_layer_norm = nn.LayerNorm(D)
        self.ffn1 = FeedForward(D, cfg.intermediate_size, cfg.hidden_act)
        self.self_attn_layer_norm = nn.LayerNorm(D)
        self.self_attn = ConformerSelfAttention(
            D, cfg.num_attention_heads, cfg.position_embeddings_type, rotary_embedding_base=cfg.rotary_embedding_base
        )
        self.conv_module = ConvModule(D, cfg.conv_depthwise_kernel_size, cfg.hidden_act, causal=False)
        self.ffn2_layer_norm = nn.LayerNorm(D)
        self.ffn2 = FeedForward(D, cfg.intermediate_size, cfg.hidden_act)
        self.final_layer_norm = nn.LayerNorm(D)

    def _attention_half(self, x: Tensor) -> Tensor:
        result: Tensor = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        return result

    def _after_conv(self, x: Tensor) -> Tensor:
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        result: Tensor = self.final_layer_norm(x)
        return result

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = self._attention_half(x)
        x = x + self.self_attn(self.self_attn_layer_norm(x), attn_mask)
        x = x + self.conv_module(x)
        return self._after_conv(x)

    def forward_cached(
        self,
        x: Tensor,
        positions: Tensor,
        cache: LayerCache,
        key_valid: Tensor,
        keep: Tensor,
        central: int | None = None,
    ) -> tuple[Tensor, LayerCache]:
        """x (B, T, D) input frames [s, s+T) at ``positions`` (B, T); key_valid (B, L + T); keep (B, T)
        real frames. Returns outputs for frames [s - r, s + T - r) and the new cache. ``central``:
        the first ``central`` frames continue the stream; the others (a lookahead of T - central
        frames) are attended to and passed on, but left out of every cache."""
        T = x.shape[1]
        c0 = T if central is None else central
        x = self._attention_half(x)
        a, attn = self.self_attn.forward_cached(self.self_attn_layer_norm(x), positions, cache.attn, key_valid, c0)
        x = x + a  # post-attention frames [s, s + T)
        c, conv = self.conv_module.forward_cached(x, cache.conv, keep, central=c0)  # conv outputs [s - r, s + T - r)
        r = cache.pending.shape[1]
        xs = torch.cat([cache.pending, x], dim=1)  # [s - r, s + T)
        y = self._after_conv(xs[:, :T] + c)
        return y, LayerCache(attn, xs[:, c0 : c0 + r], conv)


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: Wav2Vec2ConformerConfig):
        super().__init__()
        # built (and loaded) because HF checkpoints carry it; HF's forward never applies it
        self.pos_conv_embed = PositionalConvEmbedding(
            cfg.hidden_size, cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, cfg.feat_extract_activation
        )
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def blocks(self) -> list[ConformerLayer]:
        """The layers, typed."""
        return [layer for layer in self.layers if isinstance(layer, ConformerLayer)]

    def forward(self, x: Tensor, masks: list[Tensor | None]) -> tuple[Tensor, list[Tensor]]:
        """x (B, T, D), one additive mask per layer -> (last hidden after layer_norm, [input, layer outputs])."""
        states = [x]
        for layer, mask in zip(self.layers, masks):
            x = layer(x, mask)
            states.append(x)
        return self.layer_norm(x), states


class ConformerBackbone(nn.Module):
    """``Wav2Vec2ConformerModel``: feature_extractor, feature_projection, encoder."""

    def __init__(self, cfg: Wav2Vec2ConformerConfig):
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
        self.encoder = ConformerEncoder(cfg)


def layer_chunk_masks(T: int, num_layers: int, chunk: int, left: int, delay_cnn: int, lookahead: int) -> list[Tensor]:
    """The offline equivalent of cached mode: layer l's blocks start at ``k*C - delay_cnn - l*lookahead``."""
    return [chunk_attention_mask(chunk_block_ids(T, chunk, delay_cnn + l * lookahead), left) for l in range(num_layers)]


# -------------------------------------------------------------------------------------------------
# Model + head
# -------------------------------------------------------------------------------------------------


class ConformerCache(NamedTuple):
    """Cached-mode state (leading dim B, fixed shapes).

    tail (B, P) raw samples of the CNN overhang; gn_sum (B, 2, C0) f64 / gn_count (B,) f64 running
    GroupNorm statistics (C0 = 0 for layer-norm CNNs); next_frame (B,) long: first CNN frame of the
    next block (starts at -1); key_valid (B, N, L) bool per-layer real cached frames;
    keys/values (B, N, H, L, Dh); pending (B, N, r, D) post-attention frames awaiting conv
    lookahead; conv (B, N, D, K-1) GLU outputs; hist (B, sum_l (N-l) r, D): earlier layers'
    outputs delayed to line up with the last layer (weighted layer sum only, else empty);
    ahead (B, R, D): projected CNN frames of the lookahead (exact; layer 0's next central frames).
    """

    tail: Tensor
    gn_sum: Tensor
    gn_count: Tensor
    next_frame: Tensor
    key_valid: Tensor
    keys: Tensor
    values: Tensor
    pending: Tensor
    conv: Tensor
    hist: Tensor
    ahead: Tensor


class Wav2Vec2Conformer(WaveformModel):
    """Shares the CNN, its cached/GroupNorm streaming, the heads and window mode with wav2vec2
    (engines.common.waveform); replaces the encoder and the cached encoder step."""

    family = "wav2vec2-conformer"
    prefix = "wav2vec2_conformer"

    def __init__(self, cfg: Wav2Vec2ConformerConfig, head: str):
        EngineModule.__init__(self, cfg, head)
        if head == "base":
            self.checkpoint_prefix = self.prefix + "."
        setattr(self, self.prefix, ConformerBackbone(cfg))
        self.ignored_checkpoint_keys = (
            r"(^|\.)masked_spec_embed$",  # SpecAugment (training only)
            r"^objective\.",  # x-vector AM-softmax loss weight (training only)
            r"encoder\.embed_positions\.inv_freq$",  # rotary constant, recomputed from rotary_embedding_base
        )
        self.build_head(cfg, cfg.hidden_size)
        fe = self.backbone.feature_extractor
        self.samples_per_frame = fe.hop
        self.receptive_field_samples = fe.receptive_field

    def conformer_backbone(self) -> ConformerBackbone:
        bb = getattr(self, self.prefix)
        assert isinstance(bb, ConformerBackbone)
        return bb

    @property
    def lookahead(self) -> int:
        """Frames of future each layer's symmetric depthwise conv reads."""
        result: int = (self.config.conv_depthwise_kernel_size - 1) // 2
        return result

    # -- offline ----------------------------------------------------------------------------------

    def encode(self, h: Tensor, frame_mask: Tensor | None = None, attn_mask: Any = None) -> Tensor:
        """(B, T, D) projected features -> (B, T, D) head input. ``attn_mask``: (T, T) / (B, T, T)
        bool for every layer, or a list with one per layer (`layer_chunk_masks`)."""
        N = self.config.num_hidden_layers
        key_ok = None
        if frame_mask is not None:
            h = h.masked_fill(~frame_mask[..., None], 0.0)
            key_ok = frame_mask[:, None, None, :]
        per_layer = attn_mask if isinstance(attn_mask, (list, tuple)) else [attn_mask] * N
        masks = []
        for m in per_layer:
            allowed = key_ok
            if m is not None:
                m = (m if m.dim() == 3 else m[None])[:, None].to(h.device)  # (B|1, 1, T, T)
                allowed = m if allowed is None else allowed & m
            masks.append(
                None
                if allowed is None
                else torch.zeros(allowed.shape, dtype=h.dtype, device=h.device).masked_fill(
                    ~allowed, mask_value(h.dtype)
                )
            )
        last, states = self.conformer_backbone().encoder(h, masks)
        return self.layer_sum(states) if self.weighted else last

    # -- cached mode ------------------------------------------------------------------------------

    def delay_frames(self, spec: StreamSpec) -> int:
        num_layers: int = self.config.num_hidden_layers
        return self._tail_len() // self.samples_per_frame + num_layers * self.lookahead + spec.lookahead_frames

    # extra_lookahead_frames: inherited from WaveformModel (it returns this delay_frames)

    # the conformer's cache has its own fields: WaveformModel's cached_step never sees it
    def init_cache(self, spec: StreamSpec) -> ConformerCache:  # type: ignore[override]
        cfg = self.config
        p = next(self.parameters())
        N, H = cfg.num_hidden_layers, cfg.num_attention_heads
        Dh, L, D, r, R = cfg.hidden_size // H, spec.left_frames, cfg.hidden_size, self.lookahead, spec.lookahead_frames
        c0 = cfg.conv_dim[0] if cfg.feat_extract_norm == "group" else 0
        dt, dev = p.dtype, p.device
        return ConformerCache(
            tail=torch.zeros(1, self._tail_len(), dtype=dt, device=dev),
            gn_sum=torch.zeros(1, 2, c0, dtype=torch.float64, device=p.device),
            gn_count=torch.zeros(1, dtype=torch.float64, device=p.device),
            next_frame=torch.full(
                (1,), -(self._tail_len() // self.samples_per_frame) - R, dtype=torch.long, device=p.device
            ),
            key_valid=torch.zeros(1, N, L, dtype=torch.bool, device=p.device),
            keys=torch.zeros(1, N, H, L, Dh, dtype=dt, device=dev),
            values=torch.zeros(1, N, H, L, Dh, dtype=dt, device=dev),
            pending=torch.zeros(1, N, r, D, dtype=dt, device=dev),
            conv=torch.zeros(1, N, D, 2 * r, dtype=dt, device=dev),
            hist=torch.zeros(1, (N * (N + 1) // 2) * r if self.weighted else 0, D, dtype=dt, device=dev),
            ahead=torch.zeros(1, R, D, dtype=dt, device=dev),
        )

    def cached_step(  # type: ignore[override]  # ConformerCache, as init_cache
        self, samples: Tensor, cache: ConformerCache, spec: StreamSpec, end_sample: Tensor | None
    ) -> tuple[Tensor, ConformerCache]:
        """(B, C * 320) new samples -> (B, C, D) frames [k*C - delay, (k+1)*C - delay) and the new cache.

        Layer 0 gets the C central frames [f0, f0 + C) plus the R lookahead frames after them
        (``ahead`` + the CNN frames of the new samples); each layer hands C + R frames on, r frames
        behind. Only the central frames enter the KV, conv and pending caches; the lookahead's
        outputs are provisional and dropped after the last layer (the next call computes them
        again as central frames)."""
        B, n = samples.shape
        C, hop, r, R = spec.chunk_frames, self.samples_per_frame, self.lookahead, spec.lookahead_frames
        if n != C * hop:
            raise StreamUsageError(f"cached_step expects {C * hop} samples, got {n}")
        P = self._tail_len()
        f0 = cache.next_frame  # (B,) first central frame of layer 0's block
        x = torch.cat([cache.tail, samples], dim=1)
        start_sample = (f0 + R + P // hop) * hop - P
        cnn, gn_sum, gn_count = self._cnn_cached(x, cache, start_sample, end_sample)  # (B, C0', C)
        bb = self.conformer_backbone()
        h = bb.feature_projection(cnn.transpose(1, 2))  # (B, C, D) CNN frames [f0 + R, f0 + C + R)
        h = torch.cat([cache.ahead, h], dim=1)  # (B, C + R, D) frames [f0, f0 + C + R)
        ar = torch.arange(C + R, device=h.device)
        end_frame = None
        if end_sample is not None:
            end_frame = torch.div(end_sample - self.receptive_field_samples, hop, rounding_mode="floor") + 1

        def real(idx: Tensor) -> Tensor:
            ok = idx >= 0
            return ok if end_frame is None else ok & (idx < end_frame[:, None])

        idx = f0[:, None] + ar  # (B, C + R) absolute frames of layer 0's block
        keep = real(idx)
        x = h.masked_fill(~keep[..., None], 0.0)
        ahead = x[:, C:]
        states = [x[:, :C]]
        new_valid, new_k, new_v, new_pending, new_conv = [], [], [], [], []
        L = cache.key_valid.shape[2]
        for i, layer in enumerate(bb.encoder.blocks()):
            key_valid = torch.cat([cache.key_valid[:, i], keep], dim=1)
            lc = LayerCache(AttentionCache(cache.keys[:, i], cache.values[:, i]), cache.pending[:, i], cache.conv[:, i])
            x, lc = layer.forward_cached(x, idx, lc, key_valid, keep, central=C)
            new_valid.append(key_valid[:, C : C + L])
            new_k.append(lc.attn.key)
            new_v.append(lc.attn.value)
            new_pending.append(lc.pending)
            new_conv.append(lc.conv)
            idx = idx - r  # the next layer's block lags by r frames
            keep = real(idx)
            states.append(x[:, :C])
        x = bb.encoder.layer_norm(x[:, :C])
        hist = cache.hist
        if self.weighted:
            # state l covers frames [s - l*r, ...): delay it by (N - l)*r frames to line up with the last
            N, aligned, kept, off = len(states) - 1, [], [], 0
            for l, st in enumerate(states):
                n_l = (N - l) * r
                buf = torch.cat([cache.hist[:, off : off + n_l], st], dim=1)
                aligned.append(buf[:, :C])
                kept.append(buf[:, buf.shape[1] - n_l :])
                off += n_l
            hist = torch.cat(kept, dim=1)
            x = self.layer_sum(aligned)
        frames = self.head_frames(x)
        new_cache = ConformerCache(
            tail=x_tail(samples, cache.tail, P),
            gn_sum=gn_sum,
            gn_count=gn_count,
            next_frame=f0 + C,
            key_valid=torch.stack(new_valid, dim=1),
            keys=torch.stack(new_k, dim=1),
            values=torch.stack(new_v, dim=1),
            pending=torch.stack(new_pending, dim=1),
            conv=torch.stack(new_conv, dim=1),
            hist=hist,
            ahead=ahead,
        )
        return frames, new_cache


ARCHITECTURES = {
    "Wav2Vec2ConformerForCTC": "ctc",
    "Wav2Vec2ConformerForAudioFrameClassification": "frame",
    "Wav2Vec2ConformerForXVector": "xvector",
    "Wav2Vec2ConformerForSequenceClassification": "sequence",
    "Wav2Vec2ConformerModel": "base",
}

register_family(
    FamilySpec(
        model_type="wav2vec2-conformer",
        parse_config=parse_config,
        build=lambda cfg, head: with_conv_adapter(Wav2Vec2Conformer, cfg, head),
        make_frontend=lambda cfg, prep: WaveformFrontend.from_preprocessor(prep),
        architectures=ARCHITECTURES,
    )
)
