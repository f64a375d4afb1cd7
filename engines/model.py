"""``LoadedModel`` (weights shared by every stream + the streaming driver) and ``load_model``.

See :mod:`engines.api` for the contract: shapes, streaming modes and their latency and cost.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from engines.device import resolve_device, resolve_dtype, to_cpu, to_device
from engines.errors import StreamUsageError
from engines.online.config import DEFAULT_CHUNK_MS, DEFAULT_LEFT_CONTEXT_MS
from engines.types import SAMPLE_RATE_HZ, EngineModule, ForwardOutput, Frontend, StepOutput, StreamState

__all__ = ["LoadedModel", "load_model"]


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
        vocab: dict[str, Any] | None = None,  # {token: id}, or {language: {token: id}} (multilingual)
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
    _languages: tuple[str, ...]  # set on the root by ``languages`` on first use

    @property
    def family(self) -> str:
        return self.module.family

    @property
    def head(self) -> str:
        return self.module.head

    @property
    def config(self) -> Any:
        return self.module.config

    @property
    def samples_per_frame(self) -> int:
        return self.module.samples_per_frame

    @property
    def receptive_field_samples(self) -> int:
        return self.module.receptive_field_samples

    @property
    def vocab_dir(self) -> Path:
        return self.model_dir

    def num_frames(self, num_samples: int) -> int:
        """Frames an utterance of ``num_samples`` samples has offline."""
        own = getattr(self.module, "num_frames", None)  # modules whose frame count is not a plain conv formula
        if own is not None:
            frames: int = own(num_samples)
            return frames
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
            views: dict[str, LoadedModel] = root.__dict__.setdefault("_views", {})
            if language not in views:
                adapter_type = root._adapter_type()
                module = root.module
                file = lg.adapter_files(root.model_dir).get(language) if adapter_type is not None else None
                if file is not None:
                    assert adapter_type is not None  # there is an adapter file only with adapter layers
                    view_module = lg.language_view(root.module, file, adapter_type)
                    assert isinstance(view_module, EngineModule)  # a shallow copy of root.module
                    module = view_module
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
        chunk_ms: int = DEFAULT_CHUNK_MS,
        left_context_ms: int = DEFAULT_LEFT_CONTEXT_MS,
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
        chunk_ms: int = DEFAULT_CHUNK_MS,
        left_context_ms: int = DEFAULT_LEFT_CONTEXT_MS,
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
    from engines.common.hf import read_model

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    parts = read_model(model, dev, dt)
    return LoadedModel(
        parts.module,
        parts.frontend,
        parts.model_dir,
        parts.checkpoint,
        vocab=parts.vocab,
        id2label=parts.id2label,
        device=dev,
        dtype=dt,
    )
