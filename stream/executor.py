"""Run synchronous engine work off the event loop, with bounded concurrency.

Model and VAD steps are plain sync functions (``engines`` knows no asyncio). A
node hands them to an :class:`Executor`, so the loop keeps serving capture,
edges and sinks while the work runs in a worker thread::

    class Recognizer(Node):
        async def start(self):
            self.pool = Executor(max_workers=1, name="asr")

        async def process(self, event):
            out, state = await self.pool.run(engine.step, event.samples, self.states[sid])
            ...

        async def stop(self):
            await self.pool.aclose()

``max_workers`` threads run at most that many calls at once; further calls wait
in the loop (not in the pool), so cancelling a waiting caller costs nothing.
A call already running in a thread cannot be interrupted: cancelling its caller
returns at once and the thread finishes in the background; ``aclose`` waits for it.
torch releases the GIL in its kernels, so one worker per model overlaps well with
the loop; more workers only help when the engine itself is single-threaded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["Executor"]

P = ParamSpec("P")
R = TypeVar("R")


class Executor:
    """A bounded thread pool for sync work, awaited from the loop."""

    def __init__(self, max_workers: int = 1, *, name: str = "engine"):
        if max_workers < 1:
            raise ValueError(f"Executor max_workers must be >= 1, got {max_workers}")
        self.name = name
        self.max_workers = max_workers
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix=f"ss-{name}")
        self._slots = asyncio.Semaphore(max_workers)
        self._closed = False

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await`` ``fn(*args, **kwargs)`` run in a worker thread."""
        if self._closed:
            raise RuntimeError(f"executor {self.name!r} is closed")
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        async with self._slots:
            return await loop.run_in_executor(self._pool, call)

    async def aclose(self) -> None:
        """Refuse new work, drop queued work, wait (in a thread) for running calls."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    def close(self) -> None:
        """Sync variant of :meth:`aclose` (blocks the caller until running calls end)."""
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
