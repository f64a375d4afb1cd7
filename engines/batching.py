"""Cross-stream micro-batching policy: a pure, synchronous state machine.

Chunks from several streams that are ready together go through one forward
(``LoadedModel.step_batch``), bounded by a maximum batch and a maximum wait. The async shell
(stream/) owns the clock and the executor; this module only decides.

    q = BatchQueue()                                   # immutable
    q = q.add(Request(stream_id, chunk, state), now_ms)
    if q.due(policy, now_ms):                          # full, or the oldest waited max_wait_ms
        batch, q = q.take(policy)
        results = run_batch(model, batch)              # [(stream_id, StepOutput, new state)]

A stream appears at most once per batch (its state is the input of its next step), so a second
chunk of a stream already queued waits for the next batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from engines.errors import StreamUsageError

__all__ = ["BatchPolicy", "Request", "BatchQueue", "run_batch"]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch: int = 8
    max_wait_ms: int = 20  # latency a chunk may wait for others; 0 = never wait

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise StreamUsageError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise StreamUsageError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")


class Request(NamedTuple):
    stream_id: Hashable
    chunk: Any  # (S,) float32 samples
    state: Any  # the engine's StreamState (opaque here)


class _Queued(NamedTuple):
    request: Request
    arrived_ms: int


@dataclass(frozen=True)
class BatchQueue:
    items: tuple[_Queued, ...] = ()

    def add(self, request: Request, now_ms: int) -> BatchQueue:
        return BatchQueue(self.items + (_Queued(request, now_ms),))

    def __len__(self) -> int:
        return len(self.items)

    def _eligible(self, policy: BatchPolicy) -> list[int]:
        seen: set[Hashable] = set()
        idx: list[int] = []
        for i, q in enumerate(self.items):
            if q.request.stream_id not in seen:
                seen.add(q.request.stream_id)
                idx.append(i)
            if len(idx) == policy.max_batch:
                break
        return idx

    def due(self, policy: BatchPolicy, now_ms: int) -> bool:
        if not self.items:
            return False
        if len(self._eligible(policy)) >= policy.max_batch:
            return True
        return now_ms - self.items[0].arrived_ms >= policy.max_wait_ms

    def wait_ms(self, policy: BatchPolicy, now_ms: int) -> int | None:
        """How long until ``due`` turns true without new arrivals (None: empty queue)."""
        if not self.items:
            return None
        return max(0, self.items[0].arrived_ms + policy.max_wait_ms - now_ms)

    def take(self, policy: BatchPolicy) -> tuple[list[Request], BatchQueue]:
        idx = self._eligible(policy)
        chosen = set(idx)
        batch = [self.items[i].request for i in idx]
        rest = tuple(q for i, q in enumerate(self.items) if i not in chosen)
        return batch, BatchQueue(rest)


def run_batch(model: Any, batch: Sequence[Request]) -> list[tuple[Hashable, Any, Any]]:
    """One ``step_batch`` call of ``model`` (a ``LoadedModel``) for the batch: (stream id, StepOutput,
    new StreamState) in batch order."""
    ids = [r.stream_id for r in batch]
    if len(set(ids)) != len(ids):
        raise StreamUsageError("a stream may appear once per batch")
    outs, states = model.step_batch([r.chunk for r in batch], [r.state for r in batch])
    return list(zip(ids, outs, states))
