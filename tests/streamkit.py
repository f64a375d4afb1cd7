"""Helpers shared by the per-family streaming tests (tests/streaming/test_*stream*.py)."""

from __future__ import annotations

import numpy as np
import torch


def step_through(model, audio, state, sizes: list[int]):
    """Feed ``audio`` to ``model.step`` in pieces of ``sizes`` (repeated while audio remains; 0 is a
    valid size), then ``flush``. Asserts that every frame is emitted exactly once, in order.
    Returns (all frames, the final state)."""
    outs: list[torch.Tensor] = []
    total = 0

    def keep(out) -> None:
        nonlocal total
        if out.frames.shape[0]:
            assert out.start_frame == total
            total += out.frames.shape[0]
            outs.append(out.frames)

    pos, i = 0, 0
    while pos < len(audio):
        n = sizes[i % len(sizes)]
        out, state = model.step(audio[pos : pos + n], state)
        keep(out)
        pos, i = pos + n, i + 1
    keep(model.flush(state))
    return torch.cat(outs), state


def window_plan(S: int, C: int, L: int, R: int, hop: int, rf: int, T: int | None = None):
    """The windows of window mode, written out independently of the engine (the driver's grid, the
    transformers pipeline's): (first frame, frames, window start sample, window end sample).
    First chunk [0, L + C), then chunks at L + k*C; window = left + chunk + lookahead of audio (at
    least the chunk's receptive field); the window reaching the end emits the rest. ``T``: frames
    of the utterance (default: the CNN's ``(S - rf) // hop + 1``)."""
    T = (S - rf) // hop + 1 if T is None else T
    plan, f = [], 0
    while f < T:
        c = L + C if f == 0 else C
        end = max(hop * (f + c + R), hop * (f + c - 1) + rf)
        a = max(0, f - L)
        if end >= S:
            plan.append((f, T - f, hop * a, S))
            break
        plan.append((f, c, hop * a, end))
        f += c
    return plan


def gated_tones(seed: int, seconds: float) -> np.ndarray:
    """A speech-like test signal: a tone (pitch set by ``seed``) switched on and off at 1.5 Hz, plus noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    x = 0.3 * np.sin(2 * np.pi * (150 + 50 * seed) * t) * (np.sin(2 * np.pi * 1.5 * t) > -0.3)
    return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)
