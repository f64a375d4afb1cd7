"""The engines' shared types: model outputs, the stream spec and state, the frontend and module contracts.

A leaf module: it imports only torch and ``engines.errors`` (itself a leaf), so every part of the
engines (the families, the streaming driver, the loader, the speaker models) can import it without a
circle. ``engines.api`` re-exports all of it; see there for the shape legend and the streaming modes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from engines.errors import StreamUsageError, UnsupportedConfigError

__all__ = [
    "SAMPLE_RATE_HZ",
    "HEADS",
    "MODES",
    "ForwardOutput",
    "StepOutput",
    "StreamSpec",
    "StreamState",
    "Frontend",
    "EngineModule",
]

SAMPLE_RATE_HZ = 16_000
HEADS = ("ctc", "frame", "xvector", "sequence", "base")
MODES = ("window", "cached")


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


class ForwardOutput(NamedTuple):
    """Offline outputs. Always the same four fields; unused ones are None."""

    frames: Tensor  # (B, T, D) CTC logits | frame logits | hidden states (base, xvector, sequence)
    utterance: Tensor | None  # (B, E) x-vector embeddings | sequence-classification logits
    utterance_logits: Tensor | None  # (B, E') x-vector classifier output (no AM-softmax margin)
    frame_mask: Tensor | None  # (B, T) bool, True on frames that come from real samples


class StepOutput(NamedTuple):
    """Frames emitted by one streaming step. ``frames`` may have T_new == 0."""

    frames: Tensor  # (T_new, D)
    start_frame: int  # absolute index of frames[0] in the stream


# ---------------------------------------------------------------------------------------------
# Streaming configuration and state
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamSpec:
    """Streaming geometry, in ms at the edges and in frames inside."""

    mode: str
    chunk_ms: int
    left_context_ms: int
    lookahead_ms: int
    samples_per_frame: int = 320
    normalize: str = "stream"  # waveform normalisation while streaming, see frontends
    # multilingual checkpoints: the language whose adapter weights and vocabulary the stream uses
    # (None: the checkpoint as stored); streams of different languages never share a forward
    language: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UnsupportedConfigError("mode", self.mode, MODES)
        for name in ("chunk_ms", "left_context_ms", "lookahead_ms"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise StreamUsageError(f"{name} must be a non-negative int, got {v!r}")
        if self.chunk_frames < 1:
            raise StreamUsageError(f"chunk_ms={self.chunk_ms} is shorter than one frame ({self.frame_ms} ms)")

    @property
    def frame_ms(self) -> float:
        return self.samples_per_frame * 1000 / SAMPLE_RATE_HZ

    def _frames(self, ms: int) -> int:
        # ms -> whole frames (rounded to nearest, so 1000 ms at 20 ms/frame is exactly 50)
        return int(round(ms * SAMPLE_RATE_HZ / 1000 / self.samples_per_frame))

    @property
    def chunk_frames(self) -> int:  # C
        return self._frames(self.chunk_ms)

    @property
    def left_frames(self) -> int:  # L
        return self._frames(self.left_context_ms)

    @property
    def lookahead_frames(self) -> int:  # R
        return self._frames(self.lookahead_ms)

    @property
    def chunk_samples(self) -> int:
        return self.chunk_frames * self.samples_per_frame


@dataclass(frozen=True)
class StreamState:
    """Everything one stream carries between steps. Immutable: ``step`` returns a new one.

    samples_in:   samples received so far (int, stream time)
    frames_out:   index of the next frame to emit
    steps:        number of model calls made so far (cached mode: chunk index)
    pending:      (S_p,) float32 samples received but not yet given to the model
                  (window mode: also the left-context samples the next window needs)
    cache:        family-specific named tuple of tensors (cached mode), window-mode feature
                  cache (window mode with reuse), or None
    frontend:     frontend streaming state (e.g. running normalisation statistics) or None
    delay_frames: how many frames behind the input the output runs (cached mode)
    """

    spec: StreamSpec
    samples_in: int = 0
    frames_out: int = 0
    steps: int = 0
    pending: Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0))
    cache: Any = None
    frontend: Any = None
    delay_frames: int = 0

    def replace(self, **changes: Any) -> StreamState:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# What a family implements
# ---------------------------------------------------------------------------------------------


class Frontend:
    """Turns raw 16 kHz audio into the module's input.

    Offline: ``__call__(audio (B, S), lengths (B,) | None) -> (inputs, lengths)`` with
    ``Wav2Vec2FeatureExtractor`` / ``SeamlessM4TFeatureExtractor`` semantics.
    Streaming: ``init_state(spec)`` and ``step(samples (S,), fstate) -> (samples (S,), fstate)``
    apply stream-level normalisation to raw samples (the module then computes features).
    """

    def __call__(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def init_state(self, spec: StreamSpec) -> Any:
        return None

    def step(self, samples: Tensor, fstate: Any) -> tuple[Tensor, Any]:
        return samples, fstate

    def step_batch(self, samples: Tensor, fstates: Sequence[Any]) -> tuple[Tensor, list[Any]]:
        """(B, S) samples with one frontend state each; default loops over ``step``."""
        outs, new = [], []
        for i, fs in enumerate(fstates):
            o, f = self.step(samples[i], fs)
            outs.append(o)
            new.append(f)
        return torch.stack(outs), new


class EngineModule(nn.Module):
    """Weights of one family + head, with HF parameter paths (state dicts load 1:1).

    A subclass sets the class attributes and implements the methods below. It holds weights
    and constants only; per-stream tensors travel in the cache named tuple.
    """

    family: str = ""
    samples_per_frame: int = 320  # input samples per output frame
    receptive_field_samples: int = 400  # input samples that make one output frame
    # regexes of checkpoint keys that are training-only (SpecAugment embedding, quantizer,
    # AM-softmax objective) and are dropped at load time; every other key must match exactly
    ignored_checkpoint_keys: tuple[str, ...] = ()
    # prepended to every checkpoint key before the strict check: a bare ``Wav2Vec2Model``
    # checkpoint stores "encoder...." where the module has "wav2vec2.encoder...."
    checkpoint_prefix: str = ""

    def __init__(self, config: Any, head: str):
        super().__init__()
        self.config = config
        self.head = head

    def use_preprocessor(self, preprocessor: dict[str, Any] | None, source: str) -> None:
        """Read streaming constants from the checkpoint's ``preprocessor_config.json`` (None when it
        has none). Default: nothing to read."""

    # -- offline --------------------------------------------------------------------------
    def forward(self, inputs: Tensor, attention_mask: Tensor | None = None) -> ForwardOutput:
        """inputs: frontend output ((B, S) waveform or (B, T_in, F) features);
        attention_mask: (B, S) / (B, T_in) 1 on real input, as in transformers."""
        raise NotImplementedError

    def pool(self, frames: Tensor, frame_mask: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Utterance heads: (B, T, D) head-input frames -> (utterance, utterance_logits)."""
        return None, None

    # -- window mode ----------------------------------------------------------------------
    def window_features(self, samples: Tensor) -> Tensor | None:
        """(B, S) frontend-normalised samples -> (B, T, Df) per-frame features that window mode
        may reuse across window overlaps, or None when a frame's features depend on more
        than its receptive field (group norm over time). Default: None (no reuse)."""
        return None

    def window_from_features(self, features: Tensor) -> Tensor:
        """(B, T, Df) features from ``window_features`` -> (B, T, D) streaming frames."""
        raise NotImplementedError

    def window_forward(self, samples: Tensor) -> Tensor:
        """(B, S) frontend-normalised samples of one window -> (B, T, D) streaming frames
        (head frames; hidden states for utterance heads)."""
        raise NotImplementedError

    # -- cached mode ----------------------------------------------------------------------
    def extra_lookahead_frames(self, spec: StreamSpec) -> int:
        """Frames of lookahead the module needs beyond ``spec.lookahead_frames`` (e.g. half
        the positional conv kernel)."""
        return 0

    def init_cache(self, spec: StreamSpec) -> Any:
        """Named tuple of tensors, each with a leading batch dim of 1, fixed shapes."""
        raise NotImplementedError

    def cached_step(
        self, samples: Tensor, cache: Any, spec: StreamSpec, end_sample: Tensor | None
    ) -> tuple[Tensor, Any]:
        """One chunk: (B, C * samples_per_frame) new normalised samples -> (B, C, D) frames
        for absolute frames ``[k*C - delay, (k+1)*C - delay)`` (k = chunks done before this
        call, delay = ``delay_frames(spec)``), and the new cache. Frames with a negative index
        are dropped by the driver. ``end_sample`` (B,) long, or None mid-stream: the number of
        real samples the whole stream has (the driver zero-pads the last chunks; frames made
        of padding are masked out as in the offline forward and dropped)."""
        raise NotImplementedError

    def delay_frames(self, spec: StreamSpec) -> int:
        """How many frames cached output runs behind the frames the input completes."""
        raise NotImplementedError
