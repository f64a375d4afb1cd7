"""Online speaker clustering: pure, synchronous, with explicit immutable state.

Shape legend: D = embedding dimension.

Usage::

    cfg = ClusterConfig(threshold=0.75, max_speakers=4)
    state = init_state(cfg, enrolled={"alice": alice_vec})      # optional named speakers
    for item_id, emb in embeddings:                             # emb: (D,) float
        result, state = assign(state, emb, cfg, item_id=item_id)
        result.label          # "alice", "S1", "S2", ...
        result.relabels       # ((earlier_item_id, new_label), ...): earlier items whose label changed
    state, renamed = merge_close(state, cfg)                    # {"S3": "S1"} when two voices converge

How an embedding is placed (cosine similarity against each centroid):

1. The best speaker scores ``>= threshold``: the embedding joins it and its centroid moves.
2. Otherwise, if the speaker limit is reached, it joins the nearest speaker anyway (``forced``).
3. Otherwise it is *pending*: a new voice is only believed after ``confirm`` consecutive
   unmatched embeddings that agree with each other (one noisy window must not invent a
   speaker).  While pending, an item carries the nearest speaker's label (``provisional``);
   when the new speaker is confirmed, the earlier pending items come back in ``relabels`` so
   the caller can revise what it already emitted.  The very first voice needs no confirmation.

Centroids are the normalised weighted sum of their embeddings, with the total weight capped
at ``max_weight``: past that the sum decays, so a centroid follows a voice that drifts and its
memory is bounded.  At most ``memory`` speakers are remembered; to make room, the least
recently heard anonymous speaker is forgotten.  Anonymous labels ``S1, S2, ...`` are never
reused, so a label always means the same voice.  Enrolled speakers are never forgotten.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.online.config import check_max_speakers

__all__ = [
    "ClusterConfig",
    "Speaker",
    "ClusterState",
    "Assignment",
    "init_state",
    "assign",
    "merge_close",
    "relabel_map",
    "cosine",
]


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    # Cosine similarity at or above which an embedding joins a speaker.  0.75 separates the
    # bundled voice encoder's same-voice windows (~0.85-0.95) from different voices (~0.5-0.75).
    threshold: float = 0.75
    max_speakers: int | None = None  # hard limit; None = only bounded by ``memory``
    memory: int = 32  # speakers remembered at once (least recently heard anonymous one goes)
    max_weight: float = 30.0  # centroid weight cap: beyond it the centroid is a moving average
    confirm: int = 2  # consecutive agreeing unmatched embeddings that create a new speaker
    merge_threshold: float = 0.85  # merge_close() joins two speakers this similar
    enrolled_weight: float = 30.0  # starting weight of an enrolled centroid (moves slowly)
    # An enrolled centroid comes from one clip (other words, maybe another channel), so a voice
    # matches it less closely than a centroid built from the stream: a lower bar (None: threshold).
    enrolled_threshold: float | None = 0.65

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [-1, 1], got {self.threshold}")
        check_max_speakers(self.max_speakers)  # a ConfigError (a ValueError)
        if self.memory < 1:
            raise ValueError(f"memory must be >= 1, got {self.memory}")
        if self.confirm < 1:
            raise ValueError(f"confirm must be >= 1, got {self.confirm}")
        if self.max_weight < 1:
            raise ValueError(f"max_weight must be >= 1, got {self.max_weight}")


def _frozen(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    x = np.array(x, dtype=np.float64, copy=True)
    x.flags.writeable = False
    return x


def _unit(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    n = float(np.linalg.norm(x))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("speaker embedding is zero or not finite")
    return x / n


def cosine(a: npt.NDArray[np.floating[Any]], b: npt.NDArray[np.floating[Any]]) -> float:
    """Cosine similarity of two (D,) vectors."""
    return float(np.dot(_unit(a), _unit(b)))


@dataclass(frozen=True, slots=True)
class Speaker:
    label: str
    vsum: npt.NDArray[np.float64] = field(repr=False)  # (D,) weighted sum of unit embeddings
    weight: float
    last_seen: int  # step counter of the last embedding it took
    enrolled: bool = False

    @property
    def centroid(self) -> npt.NDArray[np.float64]:  # (D,) unit vector
        return self.vsum / np.linalg.norm(self.vsum)


@dataclass(frozen=True, slots=True)
class _Pending:
    item_id: Hashable
    embedding: npt.NDArray[np.float64] = field(repr=False)  # (D,) unit


@dataclass(frozen=True, slots=True)
class ClusterState:
    speakers: tuple[Speaker, ...] = ()
    pending: tuple[_Pending, ...] = ()
    next_anon: int = 1  # the next anonymous label is f"S{next_anon}"
    step: int = 0

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.speakers)

    def matches(self, label: str, similarity: float, config: ClusterConfig) -> bool:
        """Whether ``similarity`` to speaker ``label`` is enough to join it."""
        thr = config.threshold
        if config.enrolled_threshold is not None and any(s.enrolled and s.label == label for s in self.speakers):
            thr = min(thr, config.enrolled_threshold)
        return similarity >= thr

    def best(self, embedding: npt.NDArray[np.floating[Any]]) -> tuple[str | None, float]:
        """The nearest speaker's label and cosine similarity, without changing anything."""
        if not self.speakers:
            return None, -1.0
        sims = _similarities(self, _unit(embedding))
        i = int(np.argmax(sims))
        return self.speakers[i].label, float(sims[i])

    def speaker(self, label: str) -> Speaker:
        for s in self.speakers:
            if s.label == label:
                return s
        raise KeyError(label)


@dataclass(frozen=True, slots=True)
class Assignment:
    label: str
    similarity: float  # to the chosen speaker's centroid (1.0 for a brand-new speaker)
    new_speaker: bool = False  # this embedding created (confirmed) a speaker
    provisional: bool = False  # pending a possible new speaker; may come back in relabels
    forced: bool = False  # below threshold, but the speaker limit allowed no new one
    relabels: tuple[tuple[Hashable, str], ...] = ()  # earlier items whose label changed
    forgotten: tuple[str, ...] = ()  # speakers dropped from memory to make room


def init_state(
    config: ClusterConfig, enrolled: Mapping[str, npt.NDArray[np.floating[Any]]] | None = None
) -> ClusterState:
    """A fresh state, optionally seeded with named (enrolled) speakers."""
    speakers = []
    for name, vec in (enrolled or {}).items():
        if not name:
            raise ValueError("an enrolled speaker needs a non-empty name")
        speakers.append(Speaker(name, _frozen(_unit(vec) * config.enrolled_weight), config.enrolled_weight, 0, True))
    if len({s.label for s in speakers}) != len(speakers):
        raise ValueError("enrolled speaker names must be distinct")
    check_max_speakers(config.max_speakers, enrolled=len(speakers))
    return ClusterState(speakers=tuple(speakers))


def _update(s: Speaker, e: npt.NDArray[np.float64], w: float, step: int, cap: float) -> Speaker:
    keep = 1.0 if s.weight + w <= cap else max(cap - w, 0.0) / s.weight
    return replace(s, vsum=_frozen(s.vsum * keep + e * w), weight=s.weight * keep + w, last_seen=step)


def _similarities(state: ClusterState, e: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if not state.speakers:
        return np.zeros(0)
    cents = np.stack([s.centroid for s in state.speakers])  # (N, D)
    return cents @ e  # (N,)


def _new_speaker(
    state: ClusterState, vsum: npt.NDArray[np.float64], weight: float, config: ClusterConfig
) -> tuple[ClusterState, str, tuple[str, ...]]:
    """Append an anonymous speaker, forgetting the stalest anonymous one if memory is full."""
    speakers = list(state.speakers)
    forgotten: list[str] = []
    while len(speakers) >= config.memory:
        anon = [s for s in speakers if not s.enrolled]
        if not anon:
            raise ValueError(f"memory={config.memory} is full of enrolled speakers")
        stalest = min(anon, key=lambda s: s.last_seen)
        speakers.remove(stalest)
        forgotten.append(stalest.label)
    label = f"S{state.next_anon}"
    speakers.append(Speaker(label, _frozen(vsum), weight, state.step))
    return replace(state, speakers=tuple(speakers), next_anon=state.next_anon + 1), label, tuple(forgotten)


def assign(
    state: ClusterState,
    embedding: npt.NDArray[np.floating[Any]],
    config: ClusterConfig,
    *,
    item_id: Hashable = None,
    weight: float = 1.0,
    allow_new: bool = True,
) -> tuple[Assignment, ClusterState]:
    """Place one (D,) embedding; returns the assignment and the next state.

    ``allow_new=False`` never opens a speaker (an unmatched embedding joins the nearest one,
    ``forced``), e.g. for audio too short to trust as a new voice.
    """
    e = _unit(embedding)
    state = replace(state, step=state.step + 1)
    sims = _similarities(state, e)

    if not state.speakers:  # the first voice is believed at once
        state, label, _ = _new_speaker(state, e * weight, weight, config)
        return Assignment(label, 1.0, new_speaker=True), state

    best = int(np.argmax(sims))
    best_sim = float(sims[best])
    nearest = state.speakers[best]

    def join(forced: bool) -> tuple[Assignment, ClusterState]:
        speakers = list(state.speakers)
        speakers[best] = _update(nearest, e, weight, state.step, config.max_weight)
        nxt = replace(state, speakers=tuple(speakers), pending=())
        return Assignment(nearest.label, best_sim, forced=forced), nxt

    if state.matches(nearest.label, best_sim, config):
        return join(False)
    full = config.max_speakers is not None and len(state.speakers) >= config.max_speakers
    if full or not allow_new:
        return join(True)

    # Unmatched: pending until `confirm` consecutive unmatched embeddings agree.
    pending = state.pending
    if pending:
        pend_mean = _unit(np.sum([p.embedding for p in pending], axis=0))
        if float(pend_mean @ e) < config.threshold:
            pending = ()  # a different unknown voice: start over (old items keep their labels)
    pending = pending + (_Pending(item_id, _frozen(e)),)
    if len(pending) < config.confirm:
        nxt = replace(state, pending=pending)
        return Assignment(nearest.label, best_sim, provisional=True), nxt

    vsum = np.sum([p.embedding for p in pending], axis=0) * weight
    nxt, label, forgotten = _new_speaker(replace(state, pending=()), vsum, weight * len(pending), config)
    relabels = tuple((p.item_id, label) for p in pending[:-1])
    return Assignment(label, 1.0, new_speaker=True, relabels=relabels, forgotten=forgotten), nxt


def merge_close(state: ClusterState, config: ClusterConfig) -> tuple[ClusterState, dict[str, str]]:
    """Join speakers whose centroids reach ``merge_threshold``.

    The anonymous speaker merges into the other (an enrolled one, else the older label).
    Returns the new state and ``{old_label: surviving_label}`` (empty when nothing merged).
    Two enrolled speakers are never merged.
    """
    renamed: dict[str, str] = {}
    speakers = list(state.speakers)
    changed = True
    while changed:
        changed = False
        for i in range(len(speakers)):
            for j in range(i + 1, len(speakers)):
                a, b = speakers[i], speakers[j]
                if a.enrolled and b.enrolled:
                    continue
                if float(a.centroid @ b.centroid) < config.merge_threshold:
                    continue
                keep, drop = (b, a) if (a.enrolled is False and b.enrolled) else (a, b)
                merged = replace(
                    keep,
                    vsum=_frozen(keep.vsum + drop.vsum),
                    weight=keep.weight + drop.weight,
                    last_seen=max(keep.last_seen, drop.last_seen),
                )
                if merged.weight > config.max_weight:
                    f = config.max_weight / merged.weight
                    merged = replace(merged, vsum=_frozen(merged.vsum * f), weight=config.max_weight)
                speakers[speakers.index(keep)] = merged
                speakers.remove(drop)
                renamed = {k: (keep.label if v == drop.label else v) for k, v in renamed.items()}
                renamed[drop.label] = keep.label
                changed = True
                break
            if changed:
                break
    if not renamed:
        return state, {}
    return replace(state, speakers=tuple(speakers)), renamed


def relabel_map(renamed: Mapping[str, str], label: str) -> str:
    """Follow a ``merge_close`` renaming for one label."""
    return renamed.get(label, label)
