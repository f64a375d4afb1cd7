"""The Hugging Face heads and their pooling, shared by all four families (and the conv adapter).

Shape legend: B batch, T frames, D hidden size, V vocab / labels, P projector size, E x-vector size.

Heads (transformers' parameter names, direct children of the engine module, so checkpoints load
with a strict key check):

- ``"ctc"``: ``lm_head`` Linear(D_out, V) on every frame (``*ForCTC``).
- ``"frame"``: ``classifier`` Linear(D, V) on every frame (``*ForAudioFrameClassification``).
- ``"sequence"``: ``projector`` Linear(D, P), mean over the real frames, ``classifier`` Linear(P, V)
  (``*ForSequenceClassification``).
- ``"xvector"``: ``projector`` Linear(D, tdnn_dim[0]), the TDNN stack, mean and std over the real
  TDNN frames, ``feature_extractor`` Linear(2 tdnn_dim[-1], E), ``classifier`` Linear(E, E)
  (``*ForXVector``; the embedding is ``feature_extractor``'s output).
- ``"base"``: no head (hidden states).

The utterance heads (sequence, x-vector) may read a softmax-weighted sum of all hidden states
(``use_weighted_layer_sum``: ``layer_weights``, one weight per layer output, embeddings included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.errors import UnsupportedConfigError
from engines.types import EngineModule

__all__ = ["HeadConfig", "TDNNLayer", "HeadedEngine"]


class HeadConfig(Protocol):
    """The config fields the heads read (every family's config dataclass has them)."""

    @property
    def vocab_size(self) -> int | None: ...
    @property
    def num_labels(self) -> int: ...
    @property
    def num_hidden_layers(self) -> int: ...
    @property
    def use_weighted_layer_sum(self) -> bool: ...
    @property
    def classifier_proj_size(self) -> int: ...
    @property
    def tdnn_dim(self) -> Sequence[int]: ...
    @property
    def tdnn_kernel(self) -> Sequence[int]: ...
    @property
    def tdnn_dilation(self) -> Sequence[int]: ...
    @property
    def xvector_output_dim(self) -> int: ...


class TDNNLayer(nn.Module):
    """HF's TDNN layer: a dilated conv stored as a Linear over (kernel * C_in) inputs, then ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int):
        super().__init__()
        self.c_in, self.c_out, self.kernel_size, self.dilation = c_in, c_out, kernel, dilation
        self.kernel = nn.Linear(c_in * kernel, c_out)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C_in) -> (B, T - dilation*(kernel-1), C_out)
        w = self.kernel.weight.view(self.c_out, self.kernel_size, self.c_in).transpose(1, 2)  # (C_out, C_in, k)
        y = F.conv1d(x.transpose(1, 2), w, self.kernel.bias, dilation=self.dilation)
        return F.relu(y.transpose(1, 2))


class HeadedEngine(EngineModule):
    """An engine module with one of the HF heads. A family calls ``build_head`` in its
    ``__init__`` (after its backbone) and gets ``head_frames``, ``pool`` and ``layer_sum``."""

    lm_head: nn.Linear
    classifier: nn.Linear
    projector: nn.Linear
    tdnn: nn.ModuleList
    feature_extractor: nn.Linear
    layer_weights: nn.Parameter

    def build_head(self, cfg: HeadConfig, hidden_size: int, ctc_input_size: int | None = None) -> None:
        """Create the head's parameters for ``self.head``. ``hidden_size``: the encoder's width (what
        the frame, sequence and x-vector heads read); ``ctc_input_size``: what ``lm_head`` reads
        (default ``hidden_size``; an adapter may change it)."""
        head = self.head
        if head not in ("ctc", "base") and cfg.use_weighted_layer_sum:
            num_states = cfg.num_hidden_layers + 1
            self.layer_weights = nn.Parameter(torch.ones(num_states) / num_states)
        if head == "ctc":
            if cfg.vocab_size is None:
                raise UnsupportedConfigError("vocab_size", None, "an int for a CTC head")
            self.lm_head = nn.Linear(ctc_input_size or hidden_size, cfg.vocab_size)
        elif head == "frame":
            self.classifier = nn.Linear(hidden_size, cfg.num_labels)
        elif head == "sequence":
            self.projector = nn.Linear(hidden_size, cfg.classifier_proj_size)
            self.classifier = nn.Linear(cfg.classifier_proj_size, cfg.num_labels)
        elif head == "xvector":
            dims = tuple(cfg.tdnn_dim)
            self.projector = nn.Linear(hidden_size, dims[0])
            self._tdnn_kernels = tuple(cfg.tdnn_kernel)
            self.tdnn = nn.ModuleList(
                TDNNLayer(dims[i - 1] if i > 0 else dims[0], dims[i], cfg.tdnn_kernel[i], cfg.tdnn_dilation[i])
                for i in range(len(dims))
            )
            self.feature_extractor = nn.Linear(dims[-1] * 2, cfg.xvector_output_dim)
            self.classifier = nn.Linear(cfg.xvector_output_dim, cfg.xvector_output_dim)

    @property
    def weighted(self) -> bool:
        """Whether the head reads the weighted layer sum (``layer_sum``) instead of the last state."""
        return "layer_weights" in self._parameters

    def layer_sum(self, states: Sequence[Tensor]) -> Tensor:
        """N + 1 hidden states (B, T, D) each -> their softmax(``layer_weights``)-weighted sum (B, T, D)."""
        w = torch.softmax(self.layer_weights, dim=-1)
        return (torch.stack(list(states), dim=1) * w.view(1, -1, 1, 1)).sum(dim=1)

    def head_frames(self, x: Tensor) -> Tensor:
        """Per-frame part of the head: (B, T, D) -> (B, T, V) for ctc/frame, identity otherwise."""
        result: Tensor = x
        if self.head == "ctc":
            result = self.lm_head(x)
        elif self.head == "frame":
            result = self.classifier(x)
        return result

    def pool(self, frames: Tensor, frame_mask: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Utterance heads: (B, T, D) head-input frames, (B, T) bool real frames ->
        (utterance (B, V) logits or (B, E) embedding, x-vector classifier logits (B, E) or None)."""
        if self.head == "sequence":
            x = self.projector(frames)  # (B, T, P)
            if frame_mask is None:
                pooled = x.mean(dim=1)
            else:
                x = x.masked_fill(~frame_mask[..., None], 0.0)
                pooled = x.sum(dim=1) / frame_mask.sum(dim=1, keepdim=True)
            return self.classifier(pooled), None
        if self.head == "xvector":
            x = self.projector(frames)
            for layer in self.tdnn:
                x = layer(x)  # (B, T', C)
            if frame_mask is None:
                mean, std = x.mean(dim=1), x.std(dim=1)
            else:
                # HF: valid TDNN frames = valid encoder frames minus each kernel's (k - 1)
                # (dilation ignored there, and so here, for parity)
                lengths = frame_mask.sum(dim=1)
                for k in self._tdnn_kernels:
                    lengths = lengths - (k - 1)
                means, stds = [], []
                for i in range(x.shape[0]):
                    n = int(lengths[i])  # utterance head, offline only: not the per-chunk path
                    means.append(x[i, :n].mean(dim=0))
                    stds.append(x[i, :n].std(dim=0))
                mean, std = torch.stack(means), torch.stack(stds)
            emb = self.feature_extractor(torch.cat([mean, std], dim=-1))  # (B, E)
            return emb, self.classifier(emb)
        return None, None
