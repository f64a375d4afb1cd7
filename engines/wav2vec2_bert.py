"""Wav2Vec2-BERT (w2v-BERT 2.0): mel-fbank input, Conformer encoder with a causal depthwise conv.

Shape legend: B batch, T stacked fbank frames (20 ms each), F = 160 input features, D hidden size,
C frames per chunk, L left-context frames.

    fbank (B, T, 160) -> feature_projection (LN, Linear) -> Conformer layers x N
        [ffn1 half-step, self attention (rel. positions), causal conv module, ffn2 half-step, LN]
      -> optional intermediate_ffn (x + 0.5 * FFN(x)) -> optional adapter (strided conv + attention)
      -> head: lm_head (CTC) | classifier (frames) | projector + TDNN + stats pooling (x-vector)
               | projector + mean pooling + classifier (sequence)

The conformer blocks are engines.common.conformer's; the adapter, offline and cached, and the cached
state are in engines.common.w2v_bert_adapter; the heads in engines.common.heads; the offline fbank
frontend in engines.common.fbank_frontend.

Parameter paths are those of transformers' ``Wav2Vec2Bert*`` classes, so an HF checkpoint loads
with a strict key check (the bare model saves without the ``wav2vec2_bert.`` prefix).

Entry points for training a streaming model with this module (issue 5; plain nn.Module, no
in-place ops on parameters, no ``no_grad`` inside ``forward``):

* ``build_model(config_dict, head="ctc", seed=0) -> Wav2Vec2BertEngine``: random init from a dict
  of HF config keys (``Wav2Vec2BertConfig`` names; missing keys take HF defaults).
* ``engine(features, attention_mask=None, chunk_frames=None, left_chunks=None, attn_mask=None)``:
  ``features`` (B, T, 160) fbank (see ``engines.frontend_fbank``), ``attention_mask`` (B, T) 1 on
  real frames; ``chunk_frames``/``left_chunks`` apply the WeNet-U2 dynamic-chunk mask (query in
  chunk c sees chunks c-left_chunks .. c; ``left_chunks=None`` or <0: all past chunks);
  ``attn_mask`` (T, T) or (B, T, T) bool (True = may attend) overrides it; ``chunk_offset=1``
  places the blocks exactly where cached mode puts them (k*C - 1). Returns
  ``ForwardOutput``; for CTC ``.frames`` are the logits (B, T, V) and ``.frame_mask`` the valid frames.
* features for training a streaming model: ``engines.frontend_fbank.stream_features(wave,
  prior=engine.fbank_prior)`` gives the (T, 160) causally normalised fbank that cached mode sees (``extract`` gives the HF
  per-utterance-normalised one, which cached mode can only approximate).
* saving a trained engine as an HF checkpoint: ``examples.train.hf_export.save_pretrained``.

Streaming, cached mode (``init_state("cached", chunk_ms, left_context_ms, lookahead_ms)``):
the fbank is computed chunk by chunk (exact: each call keeps the last 320 samples, since a stacked
frame's 560 samples reach 240 past its hop, so output runs ``delay_frames = 1`` frame behind);
per-mel-bin normalisation is the causal running one of ``frontend_fbank.cumulative_normalize``
(``normalize="stream"``) or none (``normalize="none"``), because the per-utterance statistics of
the HF extractor need the future. A checkpoint whose ``preprocessor_config.json`` carries
``"speechstream_fbank_prior"`` (training-set statistics, e.g. the bundled default model) starts the
running statistics from that prior, so the first second of a stream is not normalised by itself
alone (``frontend_fbank.FbankPrior``; ``stream_features(wave, prior=engine.fbank_prior)`` gives the
same features offline). Every attention layer keeps a fixed-size KV cache of the last L
frames with a validity mask, and the causal depthwise conv keeps its last K-1 inputs, so the
encoder is exact against the offline forward under the chunk mask ``forward(features,
chunk_frames=C, left_frames=L, chunk_offset=1)`` (blocks start at ``k*C - 1``) when ``lookahead_ms``
is 0. With a lookahead of R frames the encoder runs on the C central frames plus the R after them
(``ahead`` keeps their exact features), all attending to L cache + C + R, and caches central frames
only: ``delay_frames = 1 + R``; the offline equivalent is stated in engines.common.streaming. The
adapter streams its lookahead too (R * stride**(n-i) frames at layer i). Positions are absolute frame indices, so
``relative_key`` buckets, ``relative`` distances and ``rotary`` angles are the offline ones across
chunk boundaries. The adapter (stride s per layer) runs at its own rate with its own caches
(kernel <= s + s // 2, which covers the public k=3, s=2); its left context is L / s**i.

Window mode (``window_forward``): each window is featurised like a whole utterance (fbank
normalised over the window), so emitted frames equal transformers run on the window's samples.
No CNN to reuse here; the fbank costs about 0.3 % of real time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from engines import frontend_fbank as fbank
from engines.common.config import ACTIVATIONS, check_choice, config_from_dict
from engines.common.conformer import (
    POSITION_EMBEDDING_TYPES,
    AttentionCache,
    ConformerSelfAttention,
    ConvModule,
    FeedForward,
)
from engines.common.fbank_frontend import FbankFrontend, make_fbank_frontend
from engines.common.heads import HeadedEngine
from engines.common.masks import chunk_attention_mask, chunk_block_ids, combine_masks
from engines.common.w2v_bert_adapter import Adapter, AdapterState, Wav2Vec2BertCache
from engines.errors import StreamUsageError, UnsupportedConfigError
from engines.registry import FamilySpec, register_family
from engines.types import ForwardOutput, StreamSpec

__all__ = [
    "Wav2Vec2BertConfig",
    "Wav2Vec2BertModel",
    "Wav2Vec2BertEngine",
    "FbankFrontend",
    "build_model",
    "parse_config",
    "ARCHITECTURES",
]

ARCHITECTURES = {
    "Wav2Vec2BertForCTC": "ctc",
    "Wav2Vec2BertForAudioFrameClassification": "frame",
    "Wav2Vec2BertForXVector": "xvector",
    "Wav2Vec2BertForSequenceClassification": "sequence",
    "Wav2Vec2BertModel": "base",
}


@dataclass(frozen=True)
class Wav2Vec2BertConfig:
    """The inference-relevant fields of transformers' Wav2Vec2BertConfig, with its defaults."""

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    feature_projection_input_dim: int = 160
    hidden_act: str = "swish"
    layer_norm_eps: float = 1e-5
    position_embeddings_type: str | None = "relative_key"
    rotary_embedding_base: float = 10000
    max_source_positions: int = 5000
    left_max_position_embeddings: int = 64
    right_max_position_embeddings: int = 8
    conv_depthwise_kernel_size: int = 31
    add_adapter: bool = False
    adapter_kernel_size: int = 3
    adapter_stride: int = 2
    num_adapter_layers: int = 1
    adapter_act: str = "relu"
    use_intermediate_ffn_before_adapter: bool = False
    output_hidden_size: int | None = None
    vocab_size: int | None = None
    num_labels: int = 2
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 768
    tdnn_dim: tuple[int, ...] = (512, 512, 512, 512, 1500)
    tdnn_kernel: tuple[int, ...] = (5, 3, 3, 1, 1)
    tdnn_dilation: tuple[int, ...] = (1, 2, 3, 1, 1)
    xvector_output_dim: int = 512
    pad_token_id: int | None = 0

    @property
    def adapter_size(self) -> int:
        return self.output_hidden_size or self.hidden_size

    @property
    def output_size(self) -> int:  # size of the backbone output
        return self.adapter_size if self.add_adapter else self.hidden_size

    @property
    def frame_stride(self) -> int:  # stacked fbank frames per output frame
        return self.adapter_stride**self.num_adapter_layers if self.add_adapter else 1


def parse_config(raw: dict[str, Any], source: str = "") -> Wav2Vec2BertConfig:
    raw = dict(raw)
    if "num_labels" not in raw and "id2label" in raw:
        raw["num_labels"] = len(raw["id2label"])
    cfg = config_from_dict(Wav2Vec2BertConfig, raw, source)
    check_choice("position_embeddings_type", cfg.position_embeddings_type, POSITION_EMBEDDING_TYPES, source)
    check_choice("hidden_act", cfg.hidden_act, sorted(ACTIVATIONS), source)
    check_choice("adapter_act", cfg.adapter_act, sorted(ACTIVATIONS), source)
    if cfg.conv_depthwise_kernel_size % 2 == 0:
        raise UnsupportedConfigError("conv_depthwise_kernel_size", cfg.conv_depthwise_kernel_size, "odd sizes", source)
    if cfg.feature_projection_input_dim != fbank.NUM_MEL_BINS * fbank.STRIDE:
        raise UnsupportedConfigError("feature_projection_input_dim", cfg.feature_projection_input_dim, [160], source)
    return cfg


# -------------------------------------------------------------------------------------------------
# Blocks
# -------------------------------------------------------------------------------------------------


class FeatureProjection(nn.Module):
    def __init__(self, cfg: Wav2Vec2BertConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(cfg.feature_projection_input_dim, eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.feature_projection_input_dim, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.projection(self.layer_norm(x))
        return result


class LayerCache(NamedTuple):
    """One Conformer layer's stream cache: attention keys/values (B, H, <=L, Dh) and the last K-1
    GLU outputs of the depthwise conv (B, D, K-1)."""

    attn: AttentionCache
    conv: Tensor


class EncoderLayer(nn.Module):
    """Conformer block: x + FFN/2 -> x + MHSA -> x + Conv -> x + FFN/2 -> LN."""

    def __init__(self, cfg: Wav2Vec2BertConfig):
        super().__init__()
        D, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.ffn1_layer_norm = nn.LayerNorm(D, eps=eps)
        self.ffn1 = FeedForward(D, cfg.intermediate_size, cfg.hidden_act)
        self.self_attn_layer_norm = nn.LayerNorm(D, eps=eps)
        self.self_attn = ConformerSelfAttention(
            D,
            cfg.num_attention_heads,
            cfg.position_embeddings_type,
            cfg.left_max_position_embeddings,
            cfg.right_max_position_embeddings,
            cfg.rotary_embedding_base,
        )
        self.conv_module = ConvModule(D, cfg.conv_depthwise_kernel_size, cfg.hidden_act, causal=True, eps=eps)
        self.ffn2_layer_norm = nn.LayerNorm(D, eps=eps)
        self.ffn2 = FeedForward(D, cfg.intermediate_size, cfg.hidden_act)
        self.final_layer_norm = nn.LayerNorm(D, eps=eps)

    def forward(self, x: Tensor, attn_mask: Tensor | None, keep: Tensor | None) -> Tensor:
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn(self.self_attn_layer_norm(x), attn_mask)
        x = x + self.conv_module(x, keep)
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        result: Tensor = self.final_layer_norm(x)
        return result

    def forward_cached(
        self,
        x: Tensor,
        positions: Tensor,
        cache: LayerCache,
        key_valid: Tensor,
        keep: Tensor,
        central: int | None = None,
    ) -> tuple[Tensor, LayerCache]:
        """x (B, T, D) one chunk (+ lookahead); key_valid (B, L + T) real cached + new frames; keep (B, T)
        real new frames; ``central``: only the first ``central`` frames enter the caches (default all)."""
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        a, attn = self.self_attn.forward_cached(self.self_attn_layer_norm(x), positions, cache.attn, key_valid, central)
        x = x + a
        c, conv = self.conv_module.forward_cached(x, cache.conv, keep, central=central)
        x = x + c
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        return self.final_layer_norm(x), LayerCache(attn, conv)


class Encoder(nn.Module):
    def __init__(self, cfg: Wav2Vec2BertConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def blocks(self) -> list[EncoderLayer]:
        """The layers, typed."""
        return [layer for layer in self.layers if isinstance(layer, EncoderLayer)]


# -------------------------------------------------------------------------------------------------
# Backbone
# -------------------------------------------------------------------------------------------------


class Wav2Vec2BertModel(nn.Module):
    """The backbone with HF parameter names: feature_projection, encoder, intermediate_ffn, adapter."""

    def __init__(self, cfg: Wav2Vec2BertConfig):
        super().__init__()
        self.cfg = cfg
        self.feature_projection = FeatureProjection(cfg)
        self.encoder = Encoder(cfg)
        self.intermediate_ffn: FeedForward | None = (
            FeedForward(cfg.hidden_size, cfg.intermediate_size, "relu")
            if cfg.use_intermediate_ffn_before_adapter
            else None
        )
        self.adapter: Adapter | None = Adapter(cfg) if cfg.add_adapter else None

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames after the adapter for (B,) stacked-frame lengths (transformers' formula)."""
        return lengths if self.adapter is None else self.adapter.output_lengths(lengths)

    def forward(
        self,
        features: Tensor,
        keep: Tensor | None = None,
        chunk_frames: int | None = None,
        left_chunks: int | None = None,
        attn_mask: Tensor | None = None,
        chunk_offset: int = 0,
        left_frames: int | None = None,
    ) -> list[Tensor]:
        """features (B, T, 160), keep (B, T) bool real frames. Returns the hidden states:
        [projection (masked), layer 1 .. layer N, backbone output]; the last one is (B, T', D').

        Chunk mask: blocks of ``chunk_frames`` starting at ``k * chunk_frames - chunk_offset``; a
        query sees its block and ``left_frames`` frames before the block (default
        ``left_chunks * chunk_frames``; None or negative ``left_chunks``: everything before).
        The adapter layers get the same mask at their rate. ``attn_mask`` (T, T) / (B, T, T) bool
        replaces the encoder's chunk mask."""
        T = features.shape[1]
        x = self.feature_projection(features)
        if keep is not None:
            x = x.masked_fill(~keep.unsqueeze(-1), 0.0)
        if left_frames is None and chunk_frames and left_chunks is not None and left_chunks >= 0:
            left_frames = left_chunks * chunk_frames
        chunk = _chunk_mask(T, chunk_frames, left_frames, chunk_offset) if attn_mask is None else attn_mask
        if chunk is not None:
            chunk = chunk.to(x.device)
        if chunk is not None and chunk.dim() == 3:
            chunk = chunk.unsqueeze(1)  # (B, 1, T, T)
        mask = combine_masks(None if keep is None else keep[:, None, None, :], chunk, dtype=x.dtype)
        hidden = [x]
        for layer in self.encoder.blocks():
            x = layer(x, mask, keep)
            hidden.append(x)
        if self.intermediate_ffn is not None:
            x = x + 0.5 * self.intermediate_ffn(x)
        if self.adapter is not None:
            x = self.adapter(x, keep, chunk_frames if attn_mask is None else None, left_frames, chunk_offset)
        hidden.append(x)
        return hidden


def _chunk_mask(T: int, chunk_frames: int | None, left_frames: int | None, offset: int = 0) -> Tensor | None:
    if chunk_frames is None or chunk_frames <= 0:
        return None
    return chunk_attention_mask(chunk_block_ids(T, chunk_frames, offset), left_frames)


# -------------------------------------------------------------------------------------------------
# Engine: backbone + head (engines.common.heads), offline and cached streaming
# -------------------------------------------------------------------------------------------------


class Wav2Vec2BertEngine(HeadedEngine):
    """Backbone + one head, with transformers' parameter paths."""

    family = "wav2vec2-bert"
    # the fbank runs on the raw streamed samples inside the module: the driver gives them in float32
    # whatever the weights' dtype (log-mel of float16-rounded samples is visibly off; engines.device)
    samples_in_float32 = True
    backbone: Wav2Vec2BertModel  # set in __init__ (outside the module tree: its children are registered)
    ignored_checkpoint_keys = (r"masked_spec_embed$", r"^objective\.weight$")

    def __init__(self, config: Wav2Vec2BertConfig, head: str):
        super().__init__(config, head)
        cfg = config
        self.samples_per_frame = fbank.HOP_LENGTH * fbank.STRIDE * cfg.frame_stride
        # stacked frame s covers fbank frames 2s, 2s+1: samples [320 s, 320 s + 560)
        self.receptive_field_samples = fbank.FRAME_LENGTH + fbank.HOP_LENGTH * (fbank.STRIDE * cfg.frame_stride - 1)
        backbone = Wav2Vec2BertModel(cfg)
        if head == "base":  # the bare HF model saves its weights without a prefix
            for name, child in backbone.named_children():
                self.add_module(name, child)
        else:
            self.wav2vec2_bert = backbone
        self.__dict__["backbone"] = backbone  # not a submodule attribute: the same modules as above
        self.fbank_prior: fbank.FbankPrior | None = None  # streaming normalisation prior, see use_preprocessor
        if head in ("frame", "xvector", "sequence"):
            if cfg.add_adapter and head != "xvector":
                # transformers' Wav2Vec2BertFor{AudioFrame,Sequence}Classification raise on it: no such checkpoint
                raise UnsupportedConfigError(
                    "add_adapter", True, [False], f"Wav2Vec2Bert {head} head (transformers refuses it too)"
                )
        self.build_head(cfg, cfg.hidden_size, ctc_input_size=cfg.output_size)

    # -- offline ----------------------------------------------------------------------------------

    def head_input(self, hidden: list[Tensor]) -> Tensor:
        """What the head consumes: the weighted layer sum if configured, else the backbone output."""
        return self.layer_sum(hidden[:-1]) if self.weighted else hidden[-1]

    def forward(
        self,
        inputs: Tensor,
        attention_mask: Tensor | None = None,
        chunk_frames: int | None = None,
        left_chunks: int | None = None,
        attn_mask: Tensor | None = None,
        chunk_offset: int = 0,
        left_frames: int | None = None,
    ) -> ForwardOutput:
        keep = None if attention_mask is None else attention_mask.bool()
        hidden = self.backbone(inputs, keep, chunk_frames, left_chunks, attn_mask, chunk_offset, left_frames)
        x = self.head_input(hidden)
        frame_mask = None
        if keep is not None:
            lengths = self.backbone.output_lengths(keep.sum(1))
            frame_mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        utterance, logits = self.pool(x, frame_mask) if self.head in ("xvector", "sequence") else (None, None)
        return ForwardOutput(self.head_frames(x), utterance, logits, frame_mask)

    # -- streaming --------------------------------------------------------------------------------

    def num_frames(self, num_samples: int) -> int:
        """Output frames of an utterance of ``num_samples`` samples (through the adapter's own formula)."""
        n = fbank.stacked_frames_for_samples(num_samples)
        if self.backbone.adapter is not None:
            for layer in self.backbone.adapter.adapter_layers():
                n = layer.output_length(n) if n > 0 else 0
        return n

    def window_forward(self, samples: Tensor) -> Tensor:
        """(B, S) samples of one window -> (B, T, D) frames, exactly as the offline model on those
        samples (fbank normalised over the window, as SeamlessM4TFeatureExtractor does)."""
        features, mask = fbank.extract(list(samples))  # an odd fbank frame count ends in a masked frame
        p = next(self.parameters())
        hidden = self.backbone(features.to(p.device, p.dtype), mask.bool().to(p.device))
        return self.head_frames(self.head_input(hidden))

    def delay_frames(self, spec: StreamSpec) -> int:
        # a stacked frame's 560 samples reach 240 samples past its 320-sample hop; + the lookahead
        return 1 + spec.lookahead_frames

    def use_preprocessor(self, preprocessor: dict[str, Any] | None, source: str) -> None:
        """A checkpoint may carry training-set fbank statistics (``"speechstream_fbank_prior"``): cached
        mode then starts its running normalisation from them (``frontend_fbank.FbankPrior``)."""
        self.fbank_prior = fbank.prior_from_preprocessor(preprocessor, source)

    def init_cache(self, spec: StreamSpec) -> Wav2Vec2BertCache:
        cfg, bb = self.config, self.backbone
        if spec.normalize not in ("stream", "none"):
            raise StreamUsageError(
                f"wav2vec2-bert cached mode normalises the fbank causally ('stream') or not at all ('none'), got {spec.normalize!r}"
            )
        scale = cfg.frame_stride
        L = spec.left_frames * scale
        layer0 = bb.encoder.blocks()[0]
        H, Dh, D, K = (
            layer0.self_attn.num_heads,
            layer0.self_attn.head_size,
            cfg.hidden_size,
            cfg.conv_depthwise_kernel_size,
        )
        N = cfg.num_hidden_layers
        ad_L, n_ad = 0, 0
        ad_H, ad_Dh, Da, pad = H, 1, cfg.adapter_size, 0
        if bb.adapter is not None:
            n_ad = len(bb.adapter.layers)
            first = bb.adapter.adapter_layers()[0]
            if first.lookahead:
                raise UnsupportedConfigError(
                    "adapter_kernel_size", first.kernel_size, "kernels up to stride + stride // 2 in cached mode"
                )
            ad_H, ad_Dh, pad = first.self_attn.num_heads, first.self_attn.head_size, first.padding
            ad_L = sum(L // cfg.adapter_stride ** (i + 1) for i in range(n_ad))
        p = next(self.parameters())
        dev, dt = p.device, p.dtype  # the samples tail stays float32 (samples_in_float32)
        fb_count, fb_sum, fb_sumsq = fbank.initial_sums(self.fbank_prior if spec.normalize == "stream" else None)
        return Wav2Vec2BertCache(
            ahead=torch.zeros(1, spec.lookahead_frames * scale, D, device=dev, dtype=dt),
            tail=torch.zeros(1, self.samples_per_frame, device=dev),
            next_frame=torch.full((1,), -scale, dtype=torch.long, device=dev),
            fb_count=fb_count.reshape(1).to(dev),
            fb_sum=fb_sum.reshape(1, fbank.NUM_MEL_BINS).to(dev),
            fb_sumsq=fb_sumsq.reshape(1, fbank.NUM_MEL_BINS).to(dev),
            key_valid=torch.zeros(1, L, dtype=torch.bool, device=dev),
            keys=torch.zeros(1, N, H, L, Dh, device=dev, dtype=dt),
            values=torch.zeros(1, N, H, L, Dh, device=dev, dtype=dt),
            conv=torch.zeros(1, N, D, K - 1, device=dev, dtype=dt),
            ad_valid=torch.zeros(1, ad_L, dtype=torch.bool, device=dev),
            ad_keys=torch.zeros(1, ad_H, ad_L, ad_Dh, device=dev, dtype=dt),
            ad_values=torch.zeros(1, ad_H, ad_L, ad_Dh, device=dev, dtype=dt),
            ad_conv=torch.zeros(1, n_ad, pad, 2 * Da, device=dev, dtype=dt),
        )

    def cached_step(
        self, samples: Tensor, cache: Wav2Vec2BertCache, spec: StreamSpec, end_sample: Tensor | None
    ) -> tuple[Tensor, Wav2Vec2BertCache]:
        """(B, C * hop) new samples -> (B, C, D) frames [k*C - 1, (k+1)*C - 1) and the new cache.

        The encoder block of this call is the stacked frames [next_frame, next_frame + C') with
        C' = C * frame_stride; frames before 0 (the first call) or past the stream's end are not
        real: masked as keys, zeroed at conv inputs, left out of the fbank statistics."""
        cfg, bb = self.config, self.backbone
        B, dev = samples.shape[0], samples.device
        scale = cfg.frame_stride
        Cs = samples.shape[1] // self.samples_per_frame * scale  # C' stacked frames
        hop = self.samples_per_frame
        # 1. fbank of stacked frames [next_frame, next_frame + C'): samples [320 f0, 320 (f0 + C') + 240)
        window = torch.cat([cache.tail, samples], dim=1)[:, : Cs * fbank.HOP_LENGTH * fbank.STRIDE + 240]
        frames = fbank.log_mel_frames(window)  # (B, 2C', 80)
        f_idx = 2 * cache.next_frame[:, None] + torch.arange(2 * Cs, device=dev)  # fbank frame indices
        s_idx = cache.next_frame[:, None] + torch.arange(Cs, device=dev)  # stacked frame indices
        if end_sample is None:
            fb_real, s_real = f_idx >= 0, s_idx >= 0
        else:
            n_fb = torch.where(
                end_sample >= fbank.FRAME_LENGTH, 1 + (end_sample - fbank.FRAME_LENGTH) // fbank.HOP_LENGTH, 0
            )
            fb_real = (f_idx >= 0) & (f_idx < n_fb[:, None])
            s_real = (s_idx >= 0) & (s_idx < (n_fb // fbank.STRIDE)[:, None])
        count, total, total_sq = cache.fb_count, cache.fb_sum, cache.fb_sumsq
        if spec.normalize == "stream":
            frames, count, total, total_sq = fbank.cumulative_normalize(frames, fb_real, count, total, total_sq)
        x = frames.reshape(B, Cs, fbank.NUM_MEL_BINS * fbank.STRIDE).to(cache.keys.dtype)  # the weights' dtype
        # 2. encoder: the central frames [f0, f0 + C') and the R' lookahead frames after them (the
        # stacked frames computed above are the last C' of these; ``ahead`` holds the first R')
        x = bb.feature_projection(x).masked_fill(~s_real.unsqueeze(-1), 0.0)
        Ra = cache.ahead.shape[1]
        if Ra:
            x = torch.cat([cache.ahead, x], dim=1)  # (B, C' + R', D)
            s_idx = cache.next_frame[:, None] - Ra + torch.arange(Ra + Cs, device=dev)
            s_real = s_idx >= 0
            if end_sample is not None:
                s_real = s_real & (s_idx < (n_fb // fbank.STRIDE)[:, None])
        ahead = x[:, Cs:]
        L = cache.key_valid.shape[1]
        key_valid = torch.cat([cache.key_valid, s_real], dim=1)
        keys, values, convs, hidden = [], [], [], [x[:, :Cs]]
        for i, layer in enumerate(bb.encoder.blocks()):
            lc = LayerCache(AttentionCache(cache.keys[:, i], cache.values[:, i]), cache.conv[:, i])
            x, lc = layer.forward_cached(x, s_idx, lc, key_valid, s_real, central=Cs)
            keys.append(lc.attn.key)
            values.append(lc.attn.value)
            convs.append(lc.conv)
            hidden.append(x[:, :Cs])
        if bb.intermediate_ffn is not None:
            x = x + 0.5 * bb.intermediate_ffn(x)
        # 3. adapter, each layer at its own rate (the lookahead goes through it too: R' / stride**i frames)
        central = Cs
        ad = AdapterState(cache.ad_valid, cache.ad_keys, cache.ad_values, cache.ad_conv)
        if bb.adapter is not None:
            num_real = None if end_sample is None else n_fb // fbank.STRIDE
            x, central, ad = bb.adapter.forward_cached(x, s_idx, s_real, num_real, ad, L, Cs)
        x = x[:, :central]  # the lookahead's outputs are provisional: dropped
        hidden.append(x)
        frames_out = self.head_frames(self.head_input(hidden))
        new = Wav2Vec2BertCache(
            ahead=ahead,
            tail=samples[:, samples.shape[1] - hop :],
            next_frame=cache.next_frame + Cs,
            fb_count=count,
            fb_sum=total,
            fb_sumsq=total_sq,
            key_valid=key_valid[:, Cs : Cs + L],
            keys=torch.stack(keys, dim=1),
            values=torch.stack(values, dim=1),
            conv=torch.stack(convs, dim=1),
            ad_valid=ad.valid,
            ad_keys=ad.keys,
            ad_values=ad.values,
            ad_conv=ad.conv,
        )
        return frames_out, new


# -------------------------------------------------------------------------------------------------
# Registry, training helpers
# -------------------------------------------------------------------------------------------------


def build(config: Wav2Vec2BertConfig, head: str) -> Wav2Vec2BertEngine:
    return Wav2Vec2BertEngine(config, head)


register_family(
    FamilySpec(
        model_type="wav2vec2-bert",
        parse_config=parse_config,
        build=build,
        make_frontend=make_fbank_frontend,
        architectures=ARCHITECTURES,
    )
)


def _init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Random init in the spirit of transformers' (normal 0.02 linears, LN at 1/0, kaiming convs)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv1d):
            nn.init.kaiming_normal_(m.weight, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02, generator=generator)
        elif isinstance(m, ConformerSelfAttention) and m.position_embeddings_type == "relative":
            nn.init.xavier_uniform_(m.pos_bias_u, generator=generator)
            nn.init.xavier_uniform_(m.pos_bias_v, generator=generator)


def build_model(config: dict[str, Any] | Wav2Vec2BertConfig, head: str = "ctc", seed: int = 0) -> Wav2Vec2BertEngine:
    """A randomly initialised engine from HF config keys (missing keys take transformers' defaults)."""
    cfg = config if isinstance(config, Wav2Vec2BertConfig) else parse_config(dict(config), "build_model")
    engine = Wav2Vec2BertEngine(cfg, head)
    _init_weights(engine, torch.Generator().manual_seed(seed))
    return engine
