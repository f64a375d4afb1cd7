"""Wav2Vec2-BERT (w2v-BERT 2.0): mel-fbank input, Conformer encoder with a causal depthwise conv.

Shape legend: B batch, T stacked fbank frames (20 ms each), F = 160 input features, D hidden size,
C frames per chunk, L left-context frames.

    fbank (B, T, 160) -> feature_projection (LN, Linear) -> Conformer layers x N
        [ffn1 half-step, self attention (rel. positions), causal conv module, ffn2 half-step, LN]
      -> optional intermediate_ffn (x + 0.5 * FFN(x)) -> optional adapter (strided conv + attention)
      -> head: lm_head (CTC) | classifier (frames) | projector + TDNN + stats pooling (x-vector)
               | projector + mean pooling + classifier (sequence)

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
  ``attn_mask`` (T, T) or (B, T, T) bool (True = may attend) overrides it. Returns
  ``ForwardOutput``; for CTC ``.frames`` are the logits (B, T, V) and ``.frame_mask`` the valid frames.
* ``save_pretrained(engine, out_dir, vocab=None)``: writes ``config.json`` (``architectures``
  ["Wav2Vec2BertForCTC"] etc.), ``model.safetensors`` with exact HF keys (transformers'
  ``Wav2Vec2BertForCTC.from_pretrained`` loads it with no missing or unexpected keys),
  ``preprocessor_config.json`` and, if given, ``vocab.json``.

Streaming (cached mode): the fbank is computed chunk by chunk (exact), per-mel-bin normalisation
is the causal running one of ``FbankStream`` (or none/fixed, see ``engines.frontend_fbank``),
every attention layer keeps a KV cache of the last L frames, and the causal depthwise conv keeps
its last K-1 inputs, so the encoder is exact against the offline forward under the chunk mask,
with no lookahead beyond the chunk. Positions are absolute frame indices, so ``relative_key``
buckets, ``relative`` distances and ``rotary`` angles are the offline ones across chunk boundaries.
The adapter (stride s per layer) runs at its own rate with its own caches; chunks must then be a
multiple of s**num_adapter_layers frames.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.api import EngineModule, FamilySpec, ForwardOutput, Frontend, StreamSpec, register_family
from engines.common.config import ACTIVATIONS, check_choice, config_from_dict
from engines.common.conformer import (
    POSITION_EMBEDDING_TYPES,
    AttentionCache,
    ConformerSelfAttention,
    ConvModule,
    FeedForward,
    chunk_attention_mask,
    chunk_block_ids,
    combine_masks,
)
from engines.errors import StreamError, UnsupportedConfigError
from engines import frontend_fbank as fbank

__all__ = [
    "Wav2Vec2BertConfig",
    "Wav2Vec2BertModel",
    "Wav2Vec2BertEngine",
    "FbankFrontend",
    "build_model",
    "save_pretrained",
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


def parse_config(raw: dict, source: str = "") -> Wav2Vec2BertConfig:
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
        return self.projection(self.layer_norm(x))


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
        return self.final_layer_norm(x)

    def streaming_forward(self, x: Tensor, start: int, cache: LayerCache, left_frames: int) -> tuple[Tensor, LayerCache]:
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        a, attn = self.self_attn.streaming_forward(self.self_attn_layer_norm(x), start, cache.attn, left_frames)
        x = x + a
        c, conv = self.conv_module.streaming_forward(x, cache.conv)
        x = x + c
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        return self.final_layer_norm(x), LayerCache(attn, conv)


class Encoder(nn.Module):
    def __init__(self, cfg: Wav2Vec2BertConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))


class AdapterLayerCache(NamedTuple):
    """One adapter layer's stream cache: its last ``stride // 2`` LayerNormed inputs for the two
    strided convs (B, s//2, 2 Da) and its attention keys/values (B, H, <=L/s, Dh)."""

    conv_in: Tensor
    attn: AttentionCache


class AdapterLayer(nn.Module):
    """Strided conv + GLU on a residual path and before a position-free self attention, then FFN."""

    def __init__(self, cfg: Wav2Vec2BertConfig):
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
        return x + self.ffn(self.ffn_layer_norm(x))

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        residual, h = self._convs(self._normed(x), (self.padding, self.padding))
        return self._tail(residual, self.self_attn(h, attn_mask))

    def output_length(self, n: int) -> int:
        return (n + 2 * (self.kernel_size // 2) - self.kernel_size) // self.stride + 1

    @property
    def lookahead(self) -> int:
        """Input frames beyond a stride-aligned chunk that its last output reads (0 for k=3, s=2)."""
        return max(0, self.kernel_size - self.padding - self.stride)

    def init_cache(self, batch: int) -> AdapterLayerCache:
        D = self.residual_layer_norm.normalized_shape[0]
        H, Dh = self.self_attn.num_heads, self.self_attn.head_size
        empty = torch.zeros(batch, H, 0, Dh)
        # zeros: the offline zero padding after the LayerNorms
        return AdapterLayerCache(torch.zeros(batch, self.padding, 2 * D), AttentionCache(empty, empty.clone()))

    def streaming_forward(
        self, x: Tensor, start: int, cache: AdapterLayerCache, left_frames: int, final: bool = False
    ) -> tuple[Tensor, AdapterLayerCache]:
        """x (B, T, D): input frames from ``start * stride`` (T a multiple of the stride unless
        ``final``) -> outputs ``start ..`` (B, ceil(T / stride), D) and the new cache."""
        normed = torch.cat([cache.conv_in, self._normed(x)], dim=1)  # (B, p + T, 2D)
        T = x.shape[1]
        n_out = -(-T // self.stride) if final else T // self.stride
        right = (n_out - 1) * self.stride + self.kernel_size - normed.shape[1]  # zero pad (final) or crop
        residual, h = self._convs(normed, (0, right))
        a, attn = self.self_attn.streaming_forward(h, start, cache.attn, left_frames)
        return self._tail(residual, a), AdapterLayerCache(normed[:, normed.shape[1] - self.padding:], attn)


class Adapter(nn.Module):
    def __init__(self, cfg: Wav2Vec2BertConfig):
        super().__init__()
        if cfg.adapter_size != cfg.hidden_size:
            self.proj = nn.Linear(cfg.hidden_size, cfg.adapter_size)
            self.proj_layer_norm = nn.LayerNorm(cfg.adapter_size, eps=cfg.layer_norm_eps)
        else:
            self.proj = self.proj_layer_norm = None
        self.layers = nn.ModuleList(AdapterLayer(cfg) for _ in range(cfg.num_adapter_layers))

    def project(self, x: Tensor) -> Tensor:
        return x if self.proj is None else self.proj_layer_norm(self.proj(x))


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
        self.intermediate_ffn = (
            FeedForward(cfg.hidden_size, cfg.intermediate_size, "relu") if cfg.use_intermediate_ffn_before_adapter else None
        )
        self.adapter = Adapter(cfg) if cfg.add_adapter else None

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames after the adapter for (B,) stacked-frame lengths (transformers' formula)."""
        if self.adapter is None:
            return lengths
        for layer in self.adapter.layers:
            lengths = torch.div(lengths + 2 * (layer.kernel_size // 2) - layer.kernel_size, layer.stride, rounding_mode="floor") + 1
        return lengths

    def forward(
        self,
        features: Tensor,
        keep: Tensor | None = None,
        chunk_frames: int | None = None,
        left_chunks: int | None = None,
        attn_mask: Tensor | None = None,
    ) -> list[Tensor]:
        """features (B, T, 160), keep (B, T) bool real frames. Returns the hidden states:
        [projection (masked), layer 1 .. layer N, backbone output]; the last one is (B, T', D')."""
        T = features.shape[1]
        x = self.feature_projection(features)
        if keep is not None:
            x = x.masked_fill(~keep.unsqueeze(-1), 0.0)
        chunk = _chunk_mask(T, chunk_frames, left_chunks) if attn_mask is None else attn_mask
        if chunk is not None and chunk.dim() == 3:
            chunk = chunk.unsqueeze(1)  # (B, 1, T, T)
        mask = combine_masks(None if keep is None else keep[:, None, None, :], chunk, dtype=x.dtype)
        hidden = [x]
        for layer in self.encoder.layers:
            x = layer(x, mask, keep)
            hidden.append(x)
        if self.intermediate_ffn is not None:
            x = x + 0.5 * self.intermediate_ffn(x)
        if self.adapter is not None:
            x = self.adapter.project(x)
            lengths = None if keep is None else keep.sum(1)
            scale = 1
            for layer in self.adapter.layers:
                scale *= layer.stride
                n = layer.output_length(x.shape[1])
                sub_keep = None
                if lengths is not None:
                    lengths = torch.div(lengths + 2 * (layer.kernel_size // 2) - layer.kernel_size, layer.stride, rounding_mode="floor") + 1
                    sub_keep = torch.arange(n, device=x.device)[None, :] < lengths[:, None]
                sub_chunk = None
                if chunk_frames is not None and attn_mask is None:
                    sub_chunk = _chunk_mask(n, _adapter_chunk(chunk_frames, scale), left_chunks)
                sub_mask = combine_masks(None if sub_keep is None else sub_keep[:, None, None, :], sub_chunk, dtype=x.dtype)
                x = layer(x, sub_mask)
        hidden.append(x)
        return hidden


def _chunk_mask(T: int, chunk_frames: int | None, left_chunks: int | None) -> Tensor | None:
    if chunk_frames is None or chunk_frames <= 0:
        return None
    left = None if left_chunks is None or left_chunks < 0 else left_chunks * chunk_frames
    return chunk_attention_mask(chunk_block_ids(T, chunk_frames), left)


def _adapter_chunk(chunk_frames: int, scale: int) -> int:
    if chunk_frames % scale:
        raise StreamError(f"chunk of {chunk_frames} frames is not a multiple of the adapter stride {scale}")
    return chunk_frames // scale


# -------------------------------------------------------------------------------------------------
# Heads
# -------------------------------------------------------------------------------------------------


class TDNNLayer(nn.Module):
    """HF keeps the TDNN kernel as a Linear over (kernel * in) inputs; applied as a dilated conv."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, dilation: int):
        super().__init__()
        self.in_dim, self.out_dim, self.kernel_size, self.dilation = in_dim, out_dim, kernel, dilation
        self.kernel = nn.Linear(in_dim * kernel, out_dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, in) -> (B, T - dilation*(kernel-1), out)
        w = self.kernel.weight.view(self.out_dim, self.kernel_size, self.in_dim).transpose(1, 2)
        return F.relu(F.conv1d(x.transpose(1, 2), w, self.kernel.bias, dilation=self.dilation).transpose(1, 2))


class Wav2Vec2BertEngine(EngineModule):
    """Backbone + one head, with transformers' parameter paths."""

    family = "wav2vec2-bert"
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
        if head in ("frame", "xvector", "sequence"):
            if cfg.add_adapter and head != "xvector":
                raise UnsupportedConfigError("add_adapter", True, [False], f"Wav2Vec2Bert {head} head")
            if cfg.use_weighted_layer_sum:
                self.layer_weights = nn.Parameter(torch.full((cfg.num_hidden_layers + 1,), 1.0 / (cfg.num_hidden_layers + 1)))
        if head == "ctc":
            if cfg.vocab_size is None:
                raise UnsupportedConfigError("vocab_size", None, "an int for a CTC head")
            self.lm_head = nn.Linear(cfg.output_size, cfg.vocab_size)
        elif head == "frame":
            self.classifier = nn.Linear(cfg.hidden_size, cfg.num_labels)
        elif head == "sequence":
            self.projector = nn.Linear(cfg.hidden_size, cfg.classifier_proj_size)
            self.classifier = nn.Linear(cfg.classifier_proj_size, cfg.num_labels)
        elif head == "xvector":
            self.projector = nn.Linear(cfg.hidden_size, cfg.tdnn_dim[0])
            dims = (cfg.tdnn_dim[0],) + tuple(cfg.tdnn_dim)
            self.tdnn = nn.ModuleList(
                TDNNLayer(dims[i], dims[i + 1], cfg.tdnn_kernel[i], cfg.tdnn_dilation[i]) for i in range(len(cfg.tdnn_dim))
            )
            self.feature_extractor = nn.Linear(cfg.tdnn_dim[-1] * 2, cfg.xvector_output_dim)
            self.classifier = nn.Linear(cfg.xvector_output_dim, cfg.xvector_output_dim)

    # -- offline ----------------------------------------------------------------------------------

    def head_input(self, hidden: list[Tensor]) -> Tensor:
        """What the head consumes: the weighted layer sum if configured, else the backbone output."""
        if getattr(self, "layer_weights", None) is not None:
            w = F.softmax(self.layer_weights, dim=-1)
            return (torch.stack(hidden[:-1], dim=1) * w.view(1, -1, 1, 1)).sum(dim=1)
        return hidden[-1]

    def frames_from_head_input(self, x: Tensor) -> Tensor:
        if self.head == "ctc":
            return self.lm_head(x)
        if self.head == "frame":
            return self.classifier(x)
        return x

    def forward(
        self,
        inputs: Tensor,
        attention_mask: Tensor | None = None,
        chunk_frames: int | None = None,
        left_chunks: int | None = None,
        attn_mask: Tensor | None = None,
    ) -> ForwardOutput:
        keep = None if attention_mask is None else attention_mask.bool()
        hidden = self.backbone(inputs, keep, chunk_frames, left_chunks, attn_mask)
        x = self.head_input(hidden)
        frame_mask = None
        if keep is not None:
            lengths = self.backbone.output_lengths(keep.sum(1))
            frame_mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        utterance, logits = self.pool(x, frame_mask) if self.head in ("xvector", "sequence") else (None, None)
        return ForwardOutput(self.frames_from_head_input(x), utterance, logits, frame_mask)

    def pool(self, frames: Tensor, frame_mask: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        if self.head == "sequence":
            h = self.projector(frames)
            if frame_mask is None:
                pooled = h.mean(dim=1)
            else:
                m = frame_mask.unsqueeze(-1).to(h.dtype)
                pooled = (h * m).sum(dim=1) / m.sum(dim=1)
            return self.classifier(pooled), None
        if self.head == "xvector":
            h = self.projector(frames)
            for layer in self.tdnn:
                h = layer(h)
            if frame_mask is None:
                stats = torch.cat([h.mean(dim=1), h.std(dim=1)], dim=-1)
            else:
                lengths = frame_mask.sum(1)
                for layer in self.tdnn:
                    lengths = lengths - layer.dilation * (layer.kernel_size - 1)
                stats = torch.stack(
                    [torch.cat([h[i, :n].mean(0), h[i, :n].std(0)]) for i, n in enumerate(lengths.tolist())]
                )
            embeddings = self.feature_extractor(stats)
            return embeddings, self.classifier(embeddings)
        return None, None


# -------------------------------------------------------------------------------------------------
# Frontend, registry, training helpers
# -------------------------------------------------------------------------------------------------


class FbankFrontend(Frontend):
    """Offline: ``SeamlessM4TFeatureExtractor`` features. Streaming: samples pass through unchanged;
    the module computes the fbank and its running normalisation in its cache."""

    def __call__(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if lengths is None:
            waves = list(audio)
        else:
            waves = [a[: int(n)] for a, n in zip(audio, lengths)]
        features, mask = fbank.extract(waves)
        return features, mask


def _make_frontend(config: Wav2Vec2BertConfig, preprocessor: dict | None) -> Frontend:
    if preprocessor is not None:
        for key, want in (("num_mel_bins", 80), ("stride", 2), ("sampling_rate", 16000)):
            if key in preprocessor and preprocessor[key] != want:
                raise UnsupportedConfigError(f"preprocessor {key}", preprocessor[key], [want])
    return FbankFrontend()


def build(config: Wav2Vec2BertConfig, head: str) -> Wav2Vec2BertEngine:
    return Wav2Vec2BertEngine(config, head)


register_family(
    FamilySpec(
        model_type="wav2vec2-bert",
        parse_config=parse_config,
        build=build,
        make_frontend=_make_frontend,
        architectures=ARCHITECTURES,
    )
)

_HEAD_ARCH = {head: arch for arch, head in ARCHITECTURES.items()}


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


def build_model(config: dict | Wav2Vec2BertConfig, head: str = "ctc", seed: int = 0) -> Wav2Vec2BertEngine:
    """A randomly initialised engine from HF config keys (missing keys take transformers' defaults)."""
    cfg = config if isinstance(config, Wav2Vec2BertConfig) else parse_config(dict(config), "build_model")
    engine = Wav2Vec2BertEngine(cfg, head)
    _init_weights(engine, torch.Generator().manual_seed(seed))
    return engine


def hf_config_dict(cfg: Wav2Vec2BertConfig, head: str) -> dict[str, Any]:
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    d.pop("num_labels")
    d.update(model_type="wav2vec2-bert", architectures=[_HEAD_ARCH[head]])
    if head in ("frame", "sequence", "xvector"):
        n = cfg.num_labels
        d["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
        d["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    # inference-only checkpoint: no SpecAugment, no dropout, no layerdrop
    d.update(mask_time_prob=0.0, layerdrop=0.0, hidden_dropout=0.0, activation_dropout=0.0,
             attention_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, conformer_conv_dropout=0.0)
    return d


def save_pretrained(engine: Wav2Vec2BertEngine, out_dir: str | Path, vocab: dict[str, int] | None = None) -> Path:
    """Write an HF-layout checkpoint that transformers and ``engines.api.load_model`` both load."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config_dict(engine.config, engine.head), indent=2))
    sd = {k: v.detach().contiguous().cpu() for k, v in engine.state_dict().items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "SeamlessM4TFeatureExtractor",
                "processor_class": "Wav2Vec2BertProcessor",
                "feature_size": 80,
                "num_mel_bins": 80,
                "padding_side": "right",
                "padding_value": 0.0,
                "return_attention_mask": True,
                "sampling_rate": 16000,
                "stride": 2,
            },
            indent=2,
        )
    )
    if vocab is not None:
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    return out
