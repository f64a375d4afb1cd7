"""``add_adapter``: the strided conv stack after the encoder (``Wav2Vec2Adapter`` in transformers),
for the waveform families (wav2vec2, WavLM, Wav2Vec2-Conformer).

Shape legend: B batch, S samples, T encoder frames (20 ms), D hidden size, D' output_hidden_size,
n adapter layers, s adapter_stride, K adapter_kernel_size, p = 1 (the conv's fixed padding).

    encoder frames (B, T, D) -> [proj: Linear D -> D' + LayerNorm, when D' != D]
      -> n x (Conv1d D' -> 2D', kernel K, stride s, padding 1 -> GLU)  -> (B, T / s**n, D') -> head

So a model frame is ``s**n`` encoder frames (3 layers of stride 2: 8 x 20 ms = 160 ms), and
``samples_per_frame`` is ``320 * s**n``. Heads: CTC (``lm_head`` reads D'), the bare model, and the
x-vector head on the adapter's output (D' = D, no weighted layer sum: with one, transformers pools the
encoder's layers but counts frames at the adapter's rate, refused here). transformers refuses adapters
with frame and sequence classification heads, and so does this.

``ConvAdapted`` wraps the family's encoder-only module (its ``"base"`` head) and keeps HF's
parameter paths (``wav2vec2.adapter.layers.0.conv.weight``, ``lm_head.weight``), so checkpoints load
with the strict key check. The encoder's own streaming is reused unchanged: both modes run the
encoder at its 20 ms rate and this module adds the conv stack on top.

Streaming, cached mode. Output j of an adapter layer reads its inputs ``[s*j - p, s*j - p + K)``;
with every chunk a multiple of ``s**n`` encoder frames, each call hands layer i a block of ``C_i``
inputs and gets back exactly ``C_i / s`` outputs, keeping the last ``m_i`` inputs for the next call.
If layer i's input runs ``D_i`` frames behind (``D_0``: the encoder's delay), its output runs
``D_{i+1} = ceil((D_i + K - p) / s) - 1`` frames behind, and ``m_i = s*D_{i+1} + p - D_i``. Inputs
before frame 0 and after the stream's last frame are zeros, as the conv's padding offline, so cached
mode is exact to the offline adapter applied to the encoder's cached-mode (chunk-masked) output.

Lookahead the adapter adds: output j's span is inputs ``[s*j, s*j + s)``; it reads ``K - p - s``
inputs past that span (0 for the public K = 3, s = 2: it reads frames 2j - 1 .. 2j + 1). So the right
context is unchanged; what grows is the frame (``20 * s**n`` ms), hence the chunk (a multiple of it)
and the emission step, and the delay rounds up to whole output frames: ``delay_frames`` is
``D_n`` output frames, ``D_n * s**n * 20`` ms, at most ``D_0 * 20 + (s**n - 1) * 20`` ms for K = 3.

Window mode runs the whole model (encoder + adapter + head) on each window: output j of a window
that starts at model frame a is absolute frame a + j (windows start at multiples of
``samples_per_frame``). No CNN features are reused across windows here (``window_features`` is
None), since the driver indexes reusable features in model frames.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.common.heads import HeadedEngine
from engines.common.waveform import WaveformModel
from engines.errors import StreamUsageError, UnsupportedConfigError
from engines.types import EngineModule, ForwardOutput, StreamSpec

__all__ = ["ConvAdapterLayer", "ConvAdapter", "ConvAdapted", "with_conv_adapter", "ADAPTER_HEADS"]

ADAPTER_HEADS = ("ctc", "base", "xvector")
PADDING = 1  # transformers' Wav2Vec2AdapterLayer pads 1 frame on both sides, whatever the kernel


class ConvAdapterLayer(nn.Module):
    """``Wav2Vec2AdapterLayer``: conv (D' -> 2D', kernel K, stride s, padding 1) + GLU over channels."""

    def __init__(self, dim: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, 2 * dim, kernel, stride=stride, padding=PADDING)
        self.kernel_size, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:  # (B, D', T) -> (B, D', T')
        return F.glu(self.conv(x), dim=1)

    def output_length(self, n: int) -> int:
        return (n + 2 * PADDING - self.kernel_size) // self.stride + 1 if n > 0 else 0


class ConvAdapter(nn.Module):
    """``Wav2Vec2Adapter``: optional projection to D', then the conv layers."""

    def __init__(self, hidden: int, out: int, kernel: int, stride: int, num_layers: int):
        super().__init__()
        self.proj: nn.Linear | None = None
        self.proj_layer_norm: nn.LayerNorm | None = None
        if out != hidden:
            self.proj = nn.Linear(hidden, out)
            self.proj_layer_norm = nn.LayerNorm(out)  # eps 1e-5, as transformers
        self.layers = nn.ModuleList(ConvAdapterLayer(out, kernel, stride) for _ in range(num_layers))

    def adapter_layers(self) -> list[ConvAdapterLayer]:
        """The layers, typed."""
        return [layer for layer in self.layers if isinstance(layer, ConvAdapterLayer)]

    def project(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D')
        if self.proj is None or self.proj_layer_norm is None:
            return x
        result: Tensor = self.proj_layer_norm(self.proj(x))
        return result

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T / s**n, D')
        x = self.project(x).transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        return x.transpose(1, 2)

    @property
    def stride(self) -> int:  # encoder frames per output frame
        out = 1
        for layer in self.adapter_layers():
            out *= layer.stride
        return out


_CACHE_TYPES: dict[type, type] = {}


def _cache_type(inner: type) -> type:
    """The encoder's cache fields + ``ad_buf`` (B, sum m_i, D'): the last m_i inputs of each adapter
    layer, and ``ad_next`` (B,) long: the encoder frame the next block starts at. Flat, so the
    streaming driver stacks and splits it like any family cache."""
    if inner not in _CACHE_TYPES:
        # built at run time from the encoder's NamedTuple cache type, which mypy cannot follow
        fields: tuple[str, ...] = inner._fields  # type: ignore[attr-defined]  # a NamedTuple class
        t = namedtuple("Adapted" + inner.__name__, fields + ("ad_buf", "ad_next"))  # type: ignore[misc]  # dynamic name
        t.encoder_type = inner  # type: ignore[attr-defined]  # the encoder's own cache type, for cached_step
        _CACHE_TYPES[inner] = t
    return _CACHE_TYPES[inner]


class ConvAdapted(HeadedEngine):
    """A waveform family's encoder (``inner``, built with the "base" head) + ConvAdapter + head."""

    inner: WaveformModel  # set in __init__ (outside the module tree: its modules are registered once)

    def __init__(self, inner: WaveformModel, cfg: Any, head: str):
        super().__init__(cfg, head)
        if head not in ADAPTER_HEADS:
            raise UnsupportedConfigError(
                "add_adapter", True, [False], f"{inner.family} {head} head (transformers refuses it too)"
            )
        self.family, self.prefix = inner.family, inner.prefix
        backbone = inner.backbone
        out = cfg.output_hidden_size or cfg.hidden_size
        backbone.adapter = ConvAdapter(
            cfg.hidden_size, out, cfg.adapter_kernel_size, cfg.adapter_stride, cfg.num_adapter_layers
        )
        setattr(self, self.prefix, backbone)  # HF paths: <prefix>.feature_extractor ..., <prefix>.adapter ...
        self.__dict__["inner"] = inner  # the same modules; not registered twice
        self.ignored_checkpoint_keys = inner.ignored_checkpoint_keys
        if head == "base":
            self.checkpoint_prefix = self.prefix + "."
        if head == "xvector":
            if cfg.use_weighted_layer_sum:
                raise UnsupportedConfigError(
                    "use_weighted_layer_sum", True, [False], "an x-vector head with add_adapter"
                )
            if out != cfg.hidden_size:  # transformers' projector reads hidden_size inputs
                raise UnsupportedConfigError(
                    "output_hidden_size", out, [cfg.hidden_size], "an x-vector head with add_adapter"
                )
        self.build_head(cfg, cfg.hidden_size, ctc_input_size=out)
        self.scale = self.adapter.stride
        self.samples_per_frame = inner.samples_per_frame * self.scale
        # the last encoder frame of an output frame's span ends here
        self.receptive_field_samples = inner.receptive_field_samples + inner.samples_per_frame * (self.scale - 1)

    @property
    def backbone(self) -> nn.Module:
        result: nn.Module = getattr(self, self.prefix)
        return result

    @property
    def adapter(self) -> ConvAdapter:
        adapter = self.backbone.adapter
        assert isinstance(adapter, ConvAdapter)
        return adapter

    # -- offline ----------------------------------------------------------------------------------
    def output_lengths(self, lengths: Tensor) -> Tensor:
        """transformers' ``_get_feat_extract_output_lengths`` for the adapter (it uses kernel 1)."""
        for layer in self.adapter.adapter_layers():
            lengths = torch.div(lengths - 1, layer.stride, rounding_mode="floor") + 1
        return lengths

    def num_frames(self, num_samples: int) -> int:
        inner = self.inner
        n = (
            0
            if num_samples < inner.receptive_field_samples
            else (num_samples - inner.receptive_field_samples) // inner.samples_per_frame + 1
        )
        for layer in self.adapter.adapter_layers():
            n = layer.output_length(n)
        return n

    def forward(self, inputs: Tensor, attention_mask: Tensor | None = None, attn_mask: Any = None) -> ForwardOutput:
        """As the family's forward; ``attn_mask`` restricts the encoder's attention (chunk masks)."""
        inner = self.inner
        h = inner.features(inputs)
        fmask = None if attention_mask is None else inner.frame_mask(attention_mask, h.shape[1])
        x = self.adapter(inner.encode(h, fmask, attn_mask))
        mask = None
        if fmask is not None:
            mask = torch.arange(x.shape[1], device=x.device)[None, :] < self.output_lengths(fmask.sum(-1))[:, None]
        frames = self.head_frames(x)
        utt, utt_logits = self.pool(frames, mask)
        return ForwardOutput(frames, utt, utt_logits, mask)

    # -- window mode ------------------------------------------------------------------------------
    def window_forward(self, samples: Tensor) -> Tensor:
        return self.head_frames(self.adapter(self.inner.window_forward(samples)))

    # -- cached mode ------------------------------------------------------------------------------
    def encoder_spec(self, spec: StreamSpec) -> StreamSpec:
        """The encoder's geometry for ``spec``: chunks of C * s**n encoder frames."""
        hop = self.inner.samples_per_frame
        return StreamSpec(
            spec.mode,
            spec.chunk_frames * self.scale * hop * 1000 // 16000,
            spec.left_context_ms,
            spec.lookahead_ms,
            hop,
            spec.normalize,
        )

    def _delays(self, spec: StreamSpec) -> list[int]:
        """D_0 (the encoder's delay, encoder frames) .. D_n (model frames)."""
        d = [self.inner.delay_frames(self.encoder_spec(spec))]
        for layer in self.adapter.adapter_layers():
            d.append(-(-(d[-1] + layer.kernel_size - PADDING) // layer.stride) - 1)
        return d

    def _buffer_lens(self, spec: StreamSpec) -> list[int]:
        d = self._delays(spec)
        m = [layer.stride * d[i + 1] + PADDING - d[i] for i, layer in enumerate(self.adapter.adapter_layers())]
        if min(m) < 0:
            raise UnsupportedConfigError(
                "adapter_kernel_size", self.config.adapter_kernel_size, "kernels >= adapter_stride in cached mode"
            )
        return m

    def delay_frames(self, spec: StreamSpec) -> int:
        return self._delays(spec)[-1]

    def extra_lookahead_frames(self, spec: StreamSpec) -> int:
        return self.delay_frames(spec)

    def init_cache(self, spec: StreamSpec) -> Any:
        if spec.samples_per_frame != self.samples_per_frame:
            raise StreamUsageError(
                f"spec has {spec.samples_per_frame} samples per frame, model {self.samples_per_frame}"
            )
        es = self.encoder_spec(spec)
        enc = self.inner.init_cache(es)
        p = next(self.parameters())
        out = self.adapter.adapter_layers()[0].conv.in_channels
        buf = torch.zeros(1, sum(self._buffer_lens(spec)), out, dtype=p.dtype, device=p.device)
        nxt = torch.full((1,), -self._delays(spec)[0], dtype=torch.long, device=p.device)
        return _cache_type(type(enc))(*enc, buf, nxt)

    def cached_step(
        self, samples: Tensor, cache: Any, spec: StreamSpec, end_sample: Tensor | None
    ) -> tuple[Tensor, Any]:
        """(B, C * samples_per_frame) samples -> (B, C, D) frames [k*C - D_n, (k+1)*C - D_n)."""
        inner = self.inner
        es = self.encoder_spec(spec)
        enc_cache = type(cache).encoder_type(*tuple(cache)[:-2])
        h, enc_cache = inner.cached_step(samples, enc_cache, es, end_sample)  # (B, Ce, D) frames [a, a + Ce)
        a = cache.ad_next
        n_real = None
        if end_sample is not None:  # real encoder frames of the whole stream
            rf, hop = inner.receptive_field_samples, inner.samples_per_frame
            n_real = torch.where(end_sample >= rf, torch.div(end_sample - rf, hop, rounding_mode="floor") + 1, 0)
        x = self.adapter.project(h)
        idx = a[:, None] + torch.arange(x.shape[1], device=x.device)[None, :]
        first = a
        bufs, off = [], 0
        for layer, m in zip(self.adapter.adapter_layers(), self._buffer_lens(spec)):
            real = idx >= 0 if n_real is None else (idx >= 0) & (idx < n_real[:, None])
            x = x.masked_fill(~real[..., None], 0.0)  # zeros outside the stream: the conv's padding offline
            buf = torch.cat([cache.ad_buf[:, off : off + m], x], dim=1)  # inputs [first - m, first + C_i)
            bufs.append(buf[:, buf.shape[1] - m :])
            conv = layer.conv
            x = F.glu(F.conv1d(buf.transpose(1, 2), conv.weight, conv.bias, stride=layer.stride), dim=1).transpose(1, 2)
            first = torch.div(first - m + PADDING, layer.stride, rounding_mode="floor")  # exact by construction
            idx = first[:, None] + torch.arange(x.shape[1], device=x.device)[None, :]
            if n_real is not None:
                k, s = layer.kernel_size, layer.stride
                n_real = torch.where(n_real > 0, torch.div(n_real + 2 * PADDING - k, s, rounding_mode="floor") + 1, 0)
            off += m
        new = type(cache)(*enc_cache, torch.cat(bufs, dim=1), a + h.shape[1])
        return self.head_frames(x), new


def with_conv_adapter(cls: type, cfg: Any, head: str) -> EngineModule:
    """``cls(cfg, head)``, or, for ``add_adapter=True``, the encoder of ``cls`` under a ConvAdapted."""
    if not getattr(cfg, "add_adapter", False):
        result: EngineModule = cls(cfg, head)
        return result
    if head not in ADAPTER_HEADS:
        raise UnsupportedConfigError(
            "add_adapter", True, [False], f"{cls.__name__} {head} head (transformers refuses it too)"
        )
    return ConvAdapted(cls(cfg, "base"), cfg, head)
