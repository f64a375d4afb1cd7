"""Wav2Vec2 (``model_type="wav2vec2"``): config, attention, model, registration.

Shape legend: B batch, S samples, T frames, D hidden, H heads, hd head dim.

The architecture (shared blocks in engines.common.waveform / engines.common.blocks):

    samples (B, S) ─► feature_extractor: 7 convs, 320 samples/frame, GroupNorm on the first
                      conv ("group") or LayerNorm on every conv ("layer")
                   ─► feature_projection: LayerNorm + Linear -> (B, T, D)
                   ─► encoder: + pos_conv_embed (grouped conv, kernel 128, weight norm folded)
                      then N layers, post-LN (do_stable_layer_norm=False) or pre-LN (True)
                   ─► head: lm_head (CTC) | classifier (frames) | projector+pool+classifier
                      (sequence) | projector+TDNN+stats pooling (x-vector)

HF parameter paths are kept: ``wav2vec2.encoder.layers.0.attention.q_proj.weight`` ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from engines.common.blocks import SelfAttention
from engines.common.config import ACTIVATIONS, check_choice, config_from_dict
from engines.common.conv_adapter import with_conv_adapter
from engines.common.waveform import WaveformModel
from engines.errors import UnsupportedConfigError
from engines.frontend_waveform import WaveformFrontend
from engines.registry import FamilySpec, register_family

__all__ = ["Wav2Vec2Config", "Wav2Vec2Attention", "Wav2Vec2", "parse_config", "ARCHITECTURES"]


@dataclass(frozen=True)
class Wav2Vec2Config:
    """The config.json fields inference needs; defaults are transformers' (wav2vec2-base)."""

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
    do_stable_layer_norm: bool = False
    vocab_size: int | None = 32
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
    adapter_attn_dim: int | None = None


def check_waveform_config(cfg: Any, raw: dict[str, Any], source: str) -> None:
    """Checks shared by the waveform families."""
    check_choice("feat_extract_norm", cfg.feat_extract_norm, ("group", "layer"), source)
    check_choice("hidden_act", cfg.hidden_act, tuple(ACTIVATIONS), source)
    check_choice("feat_extract_activation", cfg.feat_extract_activation, tuple(ACTIVATIONS), source)
    if not (len(cfg.conv_dim) == len(cfg.conv_kernel) == len(cfg.conv_stride)):
        raise UnsupportedConfigError(
            "conv_dim/conv_kernel/conv_stride lengths",
            (len(cfg.conv_dim), len(cfg.conv_kernel), len(cfg.conv_stride)),
            "three equal lengths",
            source,
        )
    if cfg.hidden_size % cfg.num_attention_heads:
        raise UnsupportedConfigError(
            "hidden_size/num_attention_heads", (cfg.hidden_size, cfg.num_attention_heads), "a divisible pair", source
        )
    if cfg.add_adapter and (cfg.num_adapter_layers < 1 or cfg.adapter_stride < 1 or cfg.adapter_kernel_size < 1):
        raise UnsupportedConfigError(
            "num_adapter_layers/adapter_stride/adapter_kernel_size",
            (cfg.num_adapter_layers, cfg.adapter_stride, cfg.adapter_kernel_size),
            "positive ints",
            source,
        )
    if "num_labels" not in raw and "id2label" in raw:
        object.__setattr__(cfg, "num_labels", len(raw["id2label"]))


def parse_config(raw: dict[str, Any], source: str = "") -> Wav2Vec2Config:
    cfg = config_from_dict(Wav2Vec2Config, raw, source)
    check_waveform_config(cfg, raw, source)
    return cfg


class Wav2Vec2Attention(SelfAttention):
    """Plain multi-head attention; no relative position term."""

    def forward(self, x: Tensor, mask_bias: Tensor | None, rel: Tensor | None) -> Tensor:
        return self.attend(x, mask_bias)

    def forward_cached(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, mask_bias: Tensor | None, rel: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.attend_cached(x, k_cache, v_cache, mask_bias)

    def relative_bias(self, q_pos: Tensor, k_pos: Tensor) -> None:
        return None


def make_attention(cfg: Wav2Vec2Config, layer_index: int) -> Wav2Vec2Attention:
    return Wav2Vec2Attention(cfg.hidden_size, cfg.num_attention_heads)


class Wav2Vec2(WaveformModel):
    family = "wav2vec2"
    prefix = "wav2vec2"

    def __init__(self, cfg: Wav2Vec2Config, head: str):
        super().__init__(cfg, head, make_attention)


ARCHITECTURES = {
    "Wav2Vec2ForCTC": "ctc",
    "Wav2Vec2ForAudioFrameClassification": "frame",
    "Wav2Vec2ForXVector": "xvector",
    "Wav2Vec2ForSequenceClassification": "sequence",
    "Wav2Vec2Model": "base",
}

register_family(
    FamilySpec(
        model_type="wav2vec2",
        parse_config=parse_config,
        build=lambda cfg, head: with_conv_adapter(Wav2Vec2, cfg, head),
        make_frontend=lambda cfg, prep: WaveformFrontend.from_preprocessor(prep),
        architectures=ARCHITECTURES,
    )
)
