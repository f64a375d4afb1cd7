"""Frame-level diarization through an HF ``*ForAudioFrameClassification`` checkpoint.

Shape legend: S = samples at 16 kHz, T = output frames (20 ms), K = speaker classes.

A frame-classification diarization model (e.g. a wav2vec2 / WavLM fine-tune with
``num_labels`` = speaker slots) gives per-frame logits; a slot is active where
``sigmoid(logit) >= threshold`` (multi-label, so overlap is representable).  Its labels come
from the checkpoint's ``id2label``.  Frame ``t`` covers samples ``[t * 320, (t + 1) * 320)``.

Streaming goes through ``engines.api`` (``init_state`` / ``step``): each slot's active run is a
turn that grows while it lasts; ``FrameTurns`` keeps that state immutable and reports
``TurnUpdate``s with the same revision rules as ``engines.speakers.online`` (revision 0 when a
run starts, +1 each time its end moves by ``update_ms`` and when it closes).

    fd = FrameDiarizer.load("path/to/wavlm-frame-diarization")
    segments = fd.segments(audio)                     # offline: [(start, end, label), ...]
    st = fd.init_state(chunk_ms=320, left_context_ms=2000)
    ups, st = fd.step(chunk, st)                      # streaming: TurnUpdates
    ups, st = fd.flush(st)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from engines.errors import CheckpointError
from engines.speakers.online import TurnUpdate

if TYPE_CHECKING:
    from engines.model import LoadedModel
    from engines.types import StreamState

__all__ = ["FrameDiarizer", "FrameState", "runs_to_segments"]


def runs_to_segments(
    active: npt.NDArray[np.bool_], labels: tuple[str, ...], samples_per_frame: int, start_frame: int = 0
) -> list[tuple[int, int, str]]:
    """(T, K) bool -> [(start_sample, end_sample, label)] of every maximal active run."""
    out: list[tuple[int, int, str]] = []
    T, K = active.shape
    for k in range(K):
        a = np.concatenate([[False], active[:, k], [False]])
        edges = np.flatnonzero(a[1:] != a[:-1])  # run starts and ends, alternating
        for s, e in zip(edges[::2], edges[1::2]):
            out.append(((start_frame + s) * samples_per_frame, (start_frame + e) * samples_per_frame, labels[k]))
    return sorted(out)


@dataclass(frozen=True)
class _Run:
    turn_id: int
    start: int
    end: int
    revision: int
    emitted_end: int


@dataclass(frozen=True)
class FrameState:
    engine: StreamState
    runs: tuple[_Run | None, ...]  # open run per slot
    next_turn: int = 0


@dataclass(frozen=True)
class FrameDiarizer:
    model: LoadedModel  # with head "frame"
    labels: tuple[str, ...]
    threshold: float = 0.5
    update_ms: int = 250

    @classmethod
    def load(cls, model: str | Path, threshold: float = 0.5) -> FrameDiarizer:
        from engines.model import load_model

        loaded = load_model(model)
        if loaded.head != "frame":
            raise CheckpointError(
                f"{model} has a {loaded.head!r} head; frame-level diarization needs a *ForAudioFrameClassification checkpoint"
            )
        # read_model gives int keys; a str key is looked up as well
        id2label: dict[int | str, str] = {k: v for k, v in (loaded.id2label or {}).items()}
        n = len(id2label) or int(getattr(loaded.config, "num_labels", 0))
        if n < 1:
            raise CheckpointError(f"{model}: a frame-classification checkpoint without labels")
        labels = tuple(str(id2label.get(i, id2label.get(str(i), f"S{i + 1}"))) for i in range(n))
        # HF's default names ("LABEL_0") mean "unnamed": use the anonymous speaker labels instead.
        labels = tuple(f"S{i + 1}" if lab == f"LABEL_{i}" else lab for i, lab in enumerate(labels))
        return cls(loaded, labels, threshold)

    @property
    def samples_per_frame(self) -> int:
        return int(self.model.samples_per_frame)

    def activity(self, audio: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        """(S,) -> (T, K) speaker-slot probabilities."""
        with torch.inference_mode():
            logits = self.model.forward(torch.from_numpy(np.array(audio, dtype=np.float32))[None]).frames[0]  # (T, K)
        probs: npt.NDArray[np.float32] = torch.sigmoid(logits).numpy()
        return probs

    def segments(self, audio: npt.NDArray[np.floating[Any]]) -> list[tuple[int, int, str]]:
        return runs_to_segments(self.activity(audio) >= self.threshold, self.labels, self.samples_per_frame)

    # -- streaming ---------------------------------------------------------------------------

    def init_state(
        self, mode: str = "window", chunk_ms: int = 320, left_context_ms: int = 2000, lookahead_ms: int = 0
    ) -> FrameState:
        engine = self.model.init_state(
            mode, chunk_ms=chunk_ms, left_context_ms=left_context_ms, lookahead_ms=lookahead_ms
        )
        return FrameState(engine, (None,) * len(self.labels))

    def _advance(
        self, st: FrameState, frames: torch.Tensor, start_frame: int, final: bool
    ) -> tuple[list[TurnUpdate], FrameState]:
        out: list[TurnUpdate] = []
        spf = self.samples_per_frame
        upd = self.update_ms * 16
        active = (torch.sigmoid(frames) >= self.threshold).numpy()  # (T_new, K)
        runs = list(st.runs)
        nxt = st.next_turn
        for t in range(active.shape[0]):
            f0, f1 = (start_frame + t) * spf, (start_frame + t + 1) * spf
            for k, on in enumerate(active[t]):
                r = runs[k]
                if on and r is None:
                    r = _Run(nxt, f0, f1, 0, f1)
                    nxt += 1
                    out.append(TurnUpdate(r.turn_id, r.start, r.end, self.labels[k], 0))
                elif on and r is not None:
                    r = replace(r, end=f1)
                    if r.end - r.emitted_end >= upd:
                        r = replace(r, revision=r.revision + 1, emitted_end=r.end)
                        out.append(TurnUpdate(r.turn_id, r.start, r.end, self.labels[k], r.revision))
                elif r is not None:
                    if r.end != r.emitted_end:
                        out.append(TurnUpdate(r.turn_id, r.start, r.end, self.labels[k], r.revision + 1))
                    r = None
                runs[k] = r
        if final:
            for k, r in enumerate(runs):
                if r is not None and r.end != r.emitted_end:
                    out.append(TurnUpdate(r.turn_id, r.start, r.end, self.labels[k], r.revision + 1))
            runs = [None] * len(runs)
        return out, replace(st, runs=tuple(runs), next_turn=nxt)

    def step(self, chunk: npt.NDArray[np.floating[Any]], st: FrameState) -> tuple[list[TurnUpdate], FrameState]:
        with torch.inference_mode():
            o, engine = self.model.step(
                torch.from_numpy(np.array(chunk, dtype=np.float32)), st.engine
            )  # copy: frames are read-only
        return self._advance(replace(st, engine=engine), o.frames, o.start_frame, final=False)

    def flush(self, st: FrameState) -> tuple[list[TurnUpdate], FrameState]:
        with torch.inference_mode():
            o = self.model.flush(st.engine)
        return self._advance(st, o.frames, o.start_frame, final=True)
