"""The public engine contract: load a checkpoint, run it offline, stream it.

Shape legend (used in every engine docstring and shape comment):
    B: batch (streams)        S: audio samples at 16 kHz
    T: output frames          D: feature dims (hidden size, vocab size, labels ...)
    C: frames per chunk       L: left-context frames      R: lookahead frames

Usage::

    model = load_model("facebook/wav2vec2-base-960h")        # or a local HF-layout directory
    logits = model.forward(audio).frames                       # (B, T, V) for a CTC head

    state = model.init_state("cached", chunk_ms=640, left_context_ms=5120, lookahead_ms=0)
    for chunk in chunks:                                       # 1-D float32 tensors, any length
        out, state = model.step(chunk, state)                  # out.frames (T_new, D), out.start_frame
    last = model.flush(state)
    frames = model.stream(audio[0], "cached", chunk_ms=640)    # the same loop over a whole waveform

    # multilingual (MMS) checkpoints: a stream names its language; the base weights are shared
    state = model.init_state("window", chunk_ms=2000, language="fra")   # model.languages lists the codes

Two layers:

* ``LoadedModel`` (this module) is what callers use. It owns sample buffering, frame
  accounting and the frontend; it holds weights only, never per-stream data. Per-stream data
  lives in the immutable ``StreamState`` that ``init_state`` returns and ``step`` replaces.
* ``EngineModule`` (an ``nn.Module``) is what a family implements: the weights with their HF
  parameter paths, ``forward`` for whole utterances, and ``init_cache``/``cached_step`` for
  cached streaming. Families register themselves with ``register_family(model_type, FamilySpec)``.

Frame timing: output frame ``t`` is computed from input samples
``[t * samples_per_frame, t * samples_per_frame + receptive_field_samples)`` (for the wav2vec2
CNN: 320 and 400, so an utterance of S samples has ``(S - 400) // 320 + 1`` frames).

Streaming modes:

* ``"window"``: every step runs the model on left context + chunk + lookahead samples and
  keeps the chunk's frames; every frame is emitted exactly once. Works for any checkpoint.
* ``"cached"``: KV caches with a bounded left context, convolution caches, and a lookahead of
  R frames (``lookahead_ms``) for the attention: each chunk's C frames and the R after them
  attend to L cache + C + R; only the R lookahead frames are computed again (as central frames)
  by the next chunk (engines.common.streaming states the offline equivalent). Plus whatever
  lookahead a non-causal convolution needs (the module's ``extra_lookahead_frames``).
  Output is delayed by ``StreamState.delay_frames`` frames (fixed lookahead + R).

Choosing a mode (latency = time from a sample arriving to its frame being emitted, at most):

* ``"cached"``: latency chunk + ``delay_frames`` * 20 ms. For wav2vec2/WavLM the delay is
  1 + 63 frames (the kernel-128 positional conv needs 63 future frames): chunk + 1.28 s, + R
  frames with a lookahead (which costs about (C + R) / C times the encoder layers). Cost
  about the offline forward's (each frame computed once; attention over chunk + left context
  only). Exact to the offline forward under a chunk attention mask (layer-norm CNNs; GroupNorm
  CNNs use running statistics, see engines.common.waveform). The model was not trained with
  that mask, so accuracy depends on the left context: give it seconds.
* ``"window"``: latency chunk + lookahead. Exact to the reference model run on each window
  (what the transformers ASR pipeline computes with chunk_length_s / stride_length_s), for any
  checkpoint. Cost about (left + chunk + lookahead) / chunk times the transformer's, plus the
  CNN once for layer-norm CNNs (reused) or (left + chunk + lookahead) / chunk times for
  GroupNorm CNNs and per-window normalisation.

Heads (``LoadedModel.head``): "ctc" (frames are CTC logits), "frame" (frame-classification
logits), "xvector" and "sequence" (utterance-level heads: streaming frames are the hidden
states the head pools; ``LoadedModel.pool(frames)`` applies the head), "base" (hidden states).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from engines.device import resolve_device, resolve_dtype, to_cpu, to_device
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
    "FamilySpec",
    "register_family",
    "get_family",
    "supported_model_types",
    "LoadedModel",
    "load_model",
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

    def use_preprocessor(self, preprocessor: dict | None, source: str) -> None:
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


@dataclass(frozen=True)
class FamilySpec:
    """Registry entry. ``parse_config(raw_config_dict, source) -> config dataclass`` refuses
    unsupported values with UnsupportedConfigError; ``build(config, head) -> EngineModule``;
    ``make_frontend(config, preprocessor_dict_or_None) -> Frontend``;
    ``architectures`` maps HF architecture class names to heads."""

    model_type: str
    parse_config: Callable[[dict, str], Any]
    build: Callable[[Any, str], EngineModule]
    make_frontend: Callable[[Any, dict | None], Frontend]
    architectures: dict[str, str]


_FAMILIES: dict[str, FamilySpec] = {}
_BUILTIN_MODULES = {
    "wav2vec2": "engines.wav2vec2",
    "wavlm": "engines.wavlm",
    "wav2vec2-conformer": "engines.wav2vec2_conformer",
    "wav2vec2-bert": "engines.wav2vec2_bert",
}


def register_family(spec: FamilySpec) -> FamilySpec:
    _FAMILIES[spec.model_type] = spec
    return spec


def supported_model_types() -> list[str]:
    return sorted(_BUILTIN_MODULES)


def get_family(model_type: str, source: str = "") -> FamilySpec:
    if model_type not in _FAMILIES:
        if model_type not in _BUILTIN_MODULES:
            raise UnsupportedConfigError("model_type", model_type, supported_model_types(), source)
        import importlib

        importlib.import_module(_BUILTIN_MODULES[model_type])  # registers itself
        if model_type not in _FAMILIES:
            raise UnsupportedConfigError("model_type", model_type, sorted(_FAMILIES), source)
    return _FAMILIES[model_type]


# ---------------------------------------------------------------------------------------------
# The loaded model: what callers use
# ---------------------------------------------------------------------------------------------


class LoadedModel:
    """A loaded checkpoint: weights (shared by every stream) + the streaming driver."""

    def __init__(
        self,
        module: EngineModule,
        frontend: Frontend,
        model_dir: Path,
        checkpoint: str,
        vocab: dict[str, int] | None = None,
        id2label: dict[int, str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ):
        self.module = module.eval()
        self.frontend = frontend
        self.model_dir = Path(model_dir)
        self.checkpoint = checkpoint
        self.vocab = vocab
        self.id2label = id2label
        # where the weights and the per-stream caches live, and their dtype (engines.device);
        # inputs and outputs are CPU float32 whatever these are
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else next(module.parameters()).dtype

    # multilingual checkpoints (engines.common.languages): a view made by ``for_language`` names its
    # language here and shares every base weight with the model it came from (``_root``)
    language: str | None = None
    _root: LoadedModel | None = None

    family = property(lambda self: self.module.family)
    head = property(lambda self: self.module.head)
    config = property(lambda self: self.module.config)
    samples_per_frame = property(lambda self: self.module.samples_per_frame)
    receptive_field_samples = property(lambda self: self.module.receptive_field_samples)
    vocab_dir = property(lambda self: self.model_dir)

    def num_frames(self, num_samples: int) -> int:
        """Frames an utterance of ``num_samples`` samples has offline."""
        own = getattr(self.module, "num_frames", None)  # modules whose frame count is not a plain conv formula
        if own is not None:
            return own(num_samples)
        if num_samples < self.receptive_field_samples:
            return 0
        return (num_samples - self.receptive_field_samples) // self.samples_per_frame + 1

    # -- languages (MMS adapters) ---------------------------------------------------------
    @property
    def languages(self) -> tuple[str, ...]:
        """Language codes ``for_language`` accepts (empty for a monolingual checkpoint)."""
        root = self._root or self
        if "_languages" not in root.__dict__:
            from engines.common.languages import available_languages

            root._languages = available_languages(root.model_dir, root._adapter_type() is not None)
        return root._languages

    def _adapter_type(self) -> type | None:
        if not getattr(self.config, "adapter_attn_dim", None):
            return None
        from engines.common.waveform import AttnAdapterLayer

        has = any(isinstance(m, AttnAdapterLayer) for m in self.module.modules())
        return AttnAdapterLayer if has else None

    def for_language(self, language: str | None) -> LoadedModel:
        """The model for one language: its adapter weights and vocabulary on the shared base weights.

        ``None`` is the checkpoint as stored. A view is built on first use (the adapter file is read
        then) and cached; the base module is never modified, so views of several languages serve
        streams at the same time. Raises UnknownLanguageError (listing ``languages``) for a code the
        checkpoint does not have."""
        root = self._root or self
        if language is None:
            return root
        if language == self.language:
            return self
        from engines.common import languages as lg
        from engines.errors import UnknownLanguageError

        if language not in root.languages:
            raise UnknownLanguageError(language, root.languages, root.model_dir)
        lock = root.__dict__.setdefault("_views_lock", threading.Lock())
        with lock:
            views = root.__dict__.setdefault("_views", {})
            if language not in views:
                adapter_type = root._adapter_type()
                module = root.module
                file = lg.adapter_files(root.model_dir).get(language) if adapter_type is not None else None
                if file is not None:
                    module = lg.language_view(root.module, file, adapter_type)
                vocab = root.vocab
                if isinstance(vocab, dict) and vocab and all(isinstance(v, dict) for v in vocab.values()):
                    vocab = vocab.get(language)
                view = LoadedModel(
                    module,
                    root.frontend,
                    root.model_dir,
                    str(file or root.checkpoint),
                    vocab=vocab,
                    id2label=root.id2label,
                    device=root.device,
                    dtype=root.dtype,
                )
                view.language, view._root = language, root
                views[language] = view
            return views[language]

    # -- offline --------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, audio: Tensor, lengths: Tensor | None = None, language: str | None = None) -> ForwardOutput:
        """audio: (S,) or (B, S) float in [-1, 1] at 16 kHz; lengths (B,) for padded batches;
        language: a code of ``languages`` (multilingual checkpoints), None for this model's own."""
        if language is not None and language != self.language:
            return self.for_language(language).forward(audio, lengths)
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.dim() == 1:
            audio = audio[None]
        inputs, mask = self.frontend(audio, lengths)
        inputs = to_device(inputs, self.device, self.dtype)
        mask = None if mask is None else to_device(mask, self.device, self.dtype)
        out = self.module(inputs, mask)
        return ForwardOutput(
            to_cpu(out.frames),
            None if out.utterance is None else to_cpu(out.utterance),
            None if out.utterance_logits is None else to_cpu(out.utterance_logits),
            None if out.frame_mask is None else to_cpu(out.frame_mask),
        )

    @torch.inference_mode()
    def pool(self, frames: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Utterance heads on streamed frames: (T, D) or (B, T, D) -> (utterance, logits)."""
        if frames.dim() == 2:
            frames = frames[None]
        utt, logits = self.module.pool(to_device(frames, self.device, self.dtype))
        return (None if utt is None else to_cpu(utt)), (None if logits is None else to_cpu(logits))

    # -- streaming ------------------------------------------------------------------------
    def init_state(
        self,
        mode: str = "cached",
        chunk_ms: int = 640,
        left_context_ms: int = 5120,
        lookahead_ms: int = 0,
        normalize: str = "stream",
        language: str | None = None,
    ) -> StreamState:
        """``language``: the stream's language (multilingual checkpoints: it selects the adapter
        weights and vocabulary every step of this stream uses); None: this model's own."""
        from engines.common import streaming

        if language is not None and language != self.language:
            return self.for_language(language).init_state(mode, chunk_ms, left_context_ms, lookahead_ms, normalize)
        state = streaming.init_state(self, mode, chunk_ms, left_context_ms, lookahead_ms, normalize)
        if self.language is not None:
            state = state.replace(spec=dataclasses.replace(state.spec, language=self.language))
        return state

    def _by_language(self, states: Sequence[StreamState]) -> dict[str | None, list[int]]:
        groups: dict[str | None, list[int]] = {}
        for i, st in enumerate(states):
            groups.setdefault(st.spec.language, []).append(i)
        return groups

    def step(self, chunk: Tensor, state: StreamState) -> tuple[StepOutput, StreamState]:
        """chunk: (S_c,) float32 samples, any length (0 allowed)."""
        outs, states = self.step_batch([chunk], [state])
        return outs[0], states[0]

    def step_batch(
        self, chunks: Sequence[Tensor], states: Sequence[StreamState]
    ) -> tuple[list[StepOutput], list[StreamState]]:
        """Several streams at once, same results as calling ``step`` on each. Cached mode:
        the streams with a chunk due and the same StreamSpec go through one forward (the
        caller bounds the batch and the wait). Window mode steps the streams one by one."""
        from engines.common import streaming

        groups = self._by_language(states)
        if len(groups) == 1:
            (lang,) = groups
            return streaming.step_batch(self._for_state_language(lang), chunks, states)
        # streams of different languages run different adapter weights: one forward per language
        outs: list[Any] = [None] * len(states)
        new: list[Any] = [None] * len(states)
        if len(chunks) != len(states):
            raise StreamUsageError(f"{len(chunks)} chunks for {len(states)} states")
        for lang, idx in groups.items():
            o, s = streaming.step_batch(
                self._for_state_language(lang), [chunks[i] for i in idx], [states[i] for i in idx]
            )
            for j, i in enumerate(idx):
                outs[i], new[i] = o[j], s[j]
        return outs, new

    def _for_state_language(self, language: str | None) -> LoadedModel:
        # a state without a language belongs to the checkpoint as stored (the root model)
        return self.for_language(language) if language is not None else (self._root or self)

    def flush(self, state: StreamState) -> StepOutput:
        """End of stream: emit every frame not emitted yet (the offline utterance's frames)."""
        from engines.common import streaming

        return streaming.flush(self._for_state_language(state.spec.language), state)

    def stream(
        self,
        audio: Tensor,
        mode: str = "cached",
        chunk_ms: int = 640,
        left_context_ms: int = 5120,
        lookahead_ms: int = 0,
        normalize: str = "stream",
        feed_ms: int | None = None,
        language: str | None = None,
    ) -> Tensor:
        """A whole (S,) waveform through ``init_state``/``step``/``flush`` in pieces of ``feed_ms``
        (default: ``chunk_ms``), as a live source would feed it; returns all frames, (T, D)."""
        state = self.init_state(mode, chunk_ms, left_context_ms, lookahead_ms, normalize, language)
        feed = max(1, int((feed_ms or chunk_ms) * SAMPLE_RATE_HZ // 1000))
        outs = []
        for i in range(0, audio.numel(), feed):
            out, state = self.step(audio[i : i + feed], state)
            outs.append(out.frames)
        outs.append(self.flush(state).frames)
        return torch.cat(outs)


def load_model(
    model: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> LoadedModel:
    """A local HF-layout directory, or a hub id resolved offline from the local HF cache.

    ``device``: "auto", "cpu", "cuda" or "cuda:N" (engines.device.resolve_device); ``dtype``: the
    weights' and caches' dtype, None for ``default_dtype(device)`` (float16 on CUDA, float32 on
    CPU). Inputs and outputs stay CPU float32 either way."""
    from engines.common.hf import load_model as _load

    dev = resolve_device(device)
    return _load(model, dev, resolve_dtype(dtype, dev))
