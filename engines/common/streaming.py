"""The streaming driver behind ``LoadedModel.init_state/step/step_batch/flush``.

Shape legend: S samples, T frames, C chunk frames, L left-context frames, R lookahead frames,
D output dims, B streams in one batched call.

It owns what every family shares: sample buffering, the frontend's running normalisation,
frame accounting (``StepOutput.start_frame``) and, in cached mode, batching the streams that are
due for a model call together. Everything it keeps per stream lives in the ``StreamState`` it
returns; all bookkeeping is in Python ints, and no tensor is read back (no ``.item()``).

Window mode (``spec.mode == "window"``), per chunk of frames [f, f + C):
    the model runs on the samples [hop * max(0, f - L), hop * (f + C + R)) -- exactly
    left + chunk + lookahead ms of audio, as the transformers ASR pipeline's chunk -- and keeps
    frames [f, f + C). The grid is the pipeline's: the first chunk is frames [0, L + C) (there is
    no left context to take yet), then chunks start at L + k*C; the window that reaches the end
    of the stream (at flush) emits every frame left (also when the stream ends exactly where a
    window already run ended: its frames after the chunk are kept until the next step). With lookahead 0 the window is extended to
    the chunk's last frame's receptive field (80 samples more).
    When the module can reuse per-frame features (``window_features`` is not None: layer-norm
    CNNs) and normalisation is not per window, the CNN + projection output of the overlap is
    kept in the state and only new frames go through the CNN. Otherwise each window is
    recomputed from its samples (GroupNorm CNNs: the window's statistics decide every frame).

Cached mode: see the module (e.g. engines.common.waveform). Each call gives the module exactly
C * hop new samples; the module returns C frames for [k*C - delay, (k+1)*C - delay).

Cached mode with a lookahead of R = lookahead_ms / 20 frames (every family; Emformer's right
context). Call k's central block is the encoder frames [s, s + C), s = k*C - delay, with
``delay = D + R`` (D: the family's fixed lookahead -- the CNN/fbank overhang of 1 frame, plus
63 frames of positional conv for wav2vec2/WavLM with K = 128, plus N*(K-1)/2 for the Conformer's
symmetric depthwise convs). The encoder runs on the C central frames and the R frames after them:

- the encoder input of all C + R frames is exact (the CNN/fbank output is computed once per frame;
  the R lookahead frames' input is kept in the cache until they become central);
- in every attention layer, every query of the C + R frames attends to the L central frames
  before s (the KV cache), the C central frames and the R lookahead frames;
- only central frames enter the caches (keys/values, depthwise-conv inputs, pending frames); the
  lookahead frames' layer states are dropped at the end of the call and computed again, as
  central frames with their own lookahead, by the next call; they are never emitted from the
  call that saw them as lookahead.

The offline computation this equals (tests/streaming/test_cached_lookahead.py, atol 1e-4) is
Emformer's training form: the forward over the augmented sequence "T central frames + for each
chunk a copy of the R frames after it", in which a central or copy frame of chunk n attends to the
central frames [s_n - L, s_n + C) and to chunk n's copies, and a depthwise conv reads, for a copy,
the central frames before s_n + C followed by the copies. For one layer this is the plain mask
"chunk n sees [s_n - L, s_n + C + R)"; in deeper encoders the lookahead keys of layers 2.. are the
states computed with context up to s_n + C + R only (as in Emformer), not the states those frames
later get as central frames. Latency: a frame waits at most chunk + lookahead + D frames. Cost:
the encoder layers run on C + R frames per C emitted, so about (C + R) / C times the
no-lookahead cached cost for the layers (front end unchanged); caches grow by R input frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from engines.device import to_cpu, to_device
from engines.errors import StreamUsageError
from engines.frontend_waveform import normalize as normalize_window
from engines.types import EngineModule, Frontend, StepOutput, StreamSpec, StreamState

__all__ = ["init_state", "step_batch", "flush", "WindowCache", "as_chunk"]


class StreamedModel(Protocol):
    """What the driver reads of a loaded model (``engines.model.LoadedModel``)."""

    @property
    def module(self) -> EngineModule: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def frontend(self) -> Frontend: ...
    @property
    def head(self) -> str: ...
    @property
    def config(self) -> Any: ...
    @property
    def samples_per_frame(self) -> int: ...
    @property
    def receptive_field_samples(self) -> int: ...
    def num_frames(self, num_samples: int) -> int: ...


class WindowCache(NamedTuple):
    """Window mode: where ``StreamState.pending`` starts, and reusable features.

    buf_start:  absolute sample index of pending[0]
    feats:      (T_f, D) per-frame features of frames [feat_start, feat_start + T_f), or None
    feat_start: absolute frame index of feats[0]
    rest:       (R', D) the last window's frames after its chunk, or None
    rest_end:   the last window's end sample: if the stream ends exactly there, that window was
                the last one (as the pipeline sees it) and flush emits ``rest`` from it
    """

    buf_start: int
    feats: Tensor | None
    feat_start: int
    rest: Tensor | None = None
    rest_end: int = -1


def as_chunk(chunk: Any) -> Tensor:
    """Accept a 1-D float tensor / numpy array; int16 PCM is scaled to [-1, 1)."""
    if isinstance(chunk, np.ndarray):
        if chunk.dtype == np.int16:
            chunk = chunk.astype(np.float32) / 32768.0
        chunk = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
    if not isinstance(chunk, Tensor):
        raise StreamUsageError(f"a chunk must be a 1-D float tensor or array, got {type(chunk).__name__}")
    if chunk.dtype == torch.int16:
        chunk = chunk.to(torch.float32) / 32768.0
    if chunk.dim() != 1 or not chunk.is_floating_point():
        raise StreamUsageError(f"a chunk must be 1-D float audio, got shape {tuple(chunk.shape)} {chunk.dtype}")
    result: Tensor = chunk.to(torch.float32)
    return result


def init_state(
    model: StreamedModel, mode: str, chunk_ms: int, left_context_ms: int, lookahead_ms: int, normalize: str
) -> StreamState:
    if normalize not in ("stream", "window", "none"):
        raise StreamUsageError(f"normalize={normalize!r}; supported: 'stream', 'window', 'none'")
    if normalize == "window" and mode != "window":
        raise StreamUsageError("normalize='window' needs mode='window'")
    spec = StreamSpec(mode, chunk_ms, left_context_ms, lookahead_ms, model.samples_per_frame, normalize)
    if mode == "cached" and spec.lookahead_frames * spec.samples_per_frame * 1000 != lookahead_ms * 16000:
        raise StreamUsageError(
            f"lookahead_ms={lookahead_ms} is not a whole number of the model's {spec.frame_ms:g} ms frames"
        )
    module = model.module
    fstate = model.frontend.init_state(spec)
    if mode == "cached":
        return StreamState(
            spec=spec, cache=module.init_cache(spec), frontend=fstate, delay_frames=module.delay_frames(spec)
        )
    return StreamState(spec=spec, cache=WindowCache(0, None, 0), frontend=fstate, delay_frames=spec.lookahead_frames)


def _receive(model: StreamedModel, chunk: Any, state: StreamState) -> StreamState:
    x = as_chunk(chunk)
    if state.spec.normalize == "stream":
        x, fstate = model.frontend.step(x, state.frontend)
    else:
        fstate = state.frontend
    pending = torch.cat([state.pending, x]) if state.pending.numel() else x
    return state.replace(samples_in=state.samples_in + x.numel(), pending=pending, frontend=fstate)


def _empty(model: StreamedModel, state: StreamState) -> StepOutput:
    d = _out_dim(model)
    return StepOutput(torch.zeros(0, d), state.frames_out)


def _out_dim(model: StreamedModel) -> int:
    cfg = model.config
    dim: int
    if model.head == "ctc":
        dim = cfg.vocab_size
    elif model.head == "frame":
        dim = cfg.num_labels
    else:
        dim = getattr(cfg, "output_hidden_size", None) or cfg.hidden_size
    return dim


# ---------------------------------------------------------------------------------------------
# cached mode
# ---------------------------------------------------------------------------------------------


def _stack_caches(caches: Sequence[Any]) -> Any:
    if len(caches) == 1:
        return caches[0]
    return type(caches[0])(*[torch.cat(fields, dim=0) for fields in zip(*caches)])


def _split_cache(cache: Any, n: int) -> list[Any]:
    if n == 1:
        return [cache]
    parts = [torch.split(f, 1, dim=0) for f in cache]
    return [type(cache)(*[p[i] for p in parts]) for i in range(n)]


def _input_dtype(model: StreamedModel) -> torch.dtype:
    """The dtype chunks cross to the device in: the weights' dtype, or float32 for a module that
    computes features (an fbank) from the raw samples itself (``samples_in_float32``)."""
    weights: torch.dtype = model.dtype
    return torch.float32 if getattr(model.module, "samples_in_float32", False) else weights


@torch.inference_mode()
def _cached_round(
    model: StreamedModel, items: list[tuple[int, Tensor, StreamState, int | None]]
) -> tuple[Tensor, list[Any]]:
    """One model call for several streams. items: (index, samples (C*hop,), state, end_sample)."""
    module = model.module
    samples = to_device(torch.stack([s for _, s, _, _ in items]), model.device, _input_dtype(model))
    cache = _stack_caches([st.cache for _, _, st, _ in items])
    ends = [e for _, _, _, e in items]
    end = (
        None
        if all(e is None for e in ends)
        else torch.tensor([e if e is not None else 2**62 for e in ends], device=model.device)
    )
    spec = items[0][2].spec
    frames, cache = module.cached_step(samples, cache, spec, end)
    return to_cpu(frames), _split_cache(cache, len(items))  # one transfer for the batch


def _emit(state: StreamState, frames: Tensor, end_frame: int | None) -> tuple[Tensor, int, StreamState]:
    """frames (C, D) for [k*C - delay, ...): keep indices >= 0 (and < end_frame)."""
    C = state.spec.chunk_frames
    first = state.steps * C - state.delay_frames
    lo = max(0, -first)
    hi = C if end_frame is None else max(lo, min(C, end_frame - first))
    kept = frames[lo:hi]
    new = state.replace(steps=state.steps + 1, frames_out=first + hi if hi > lo else state.frames_out)
    return kept, first + lo, new


def _cached_step_batch(
    model: StreamedModel, states: list[StreamState], final: list[bool]
) -> tuple[list[StepOutput], list[StreamState]]:
    n = len(states)
    outs: list[list[Tensor]] = [[] for _ in range(n)]
    starts: dict[int, int] = {}  # stream index -> first emitted frame of this call
    while True:
        due = []
        for i, st in enumerate(states):
            cs = st.spec.chunk_samples
            end_frame = model.num_frames(st.samples_in) if final[i] else None
            if st.pending.numel() >= cs:
                due.append((i, st.pending[:cs], st, st.samples_in if final[i] else None))
            elif end_frame is not None and st.steps * st.spec.chunk_frames - st.delay_frames < end_frame:
                pad = torch.zeros(cs - st.pending.numel())
                due.append((i, torch.cat([st.pending, pad]), st, st.samples_in))
        if not due:
            break
        # one forward per group of streams with the same spec
        groups: dict[StreamSpec, list[tuple[int, Tensor, StreamState, int | None]]] = {}
        for item in due:
            groups.setdefault(item[2].spec, []).append(item)
        for items in groups.values():
            frames, caches = _cached_round(model, items)
            for j, (i, _, st, end_sample) in enumerate(items):
                st = st.replace(pending=st.pending[st.spec.chunk_samples :], cache=caches[j])
                end_frame = model.num_frames(end_sample) if end_sample is not None else None
                kept, start, st = _emit(st, frames[j], end_frame)
                if kept.shape[0]:
                    starts.setdefault(i, start)
                    outs[i].append(kept)
                states[i] = st
    results = []
    for i, st in enumerate(states):
        if outs[i]:
            results.append(StepOutput(torch.cat(outs[i]), starts[i]))
        else:
            results.append(_empty(model, st))
    return results, states


# ---------------------------------------------------------------------------------------------
# window mode
# ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def _window_steps(model: StreamedModel, st: StreamState, final: bool) -> tuple[list[Tensor], int, StreamState]:
    spec, module = st.spec, model.module
    hop, rf = model.samples_per_frame, model.receptive_field_samples
    C, L, R = spec.chunk_frames, spec.left_frames, spec.lookahead_frames
    total = model.num_frames(st.samples_in)
    reuse = spec.normalize != "window"
    outs, start = [], st.frames_out
    while True:
        f = st.frames_out
        if final and f >= total:
            break
        # the first chunk has no left context to take, so it takes L + C frames (the grid of
        # the transformers pipeline: chunks then start at L + k*C)
        wc: WindowCache = st.cache
        if final and wc.rest is not None and wc.rest_end == st.samples_in and f + wc.rest.shape[0] == total:
            # the stream ended exactly at the last window's end: its frames are the last ones
            outs.append(wc.rest)
            st = st.replace(frames_out=total, cache=wc._replace(rest=None), steps=st.steps + 1)
            break
        c = L + C if f == 0 else C
        # window = exactly left + chunk + lookahead of audio (as the pipeline's chunk_length_s),
        # but never less than the chunk's own frames need (lookahead 0)
        x_end = max(hop * (f + c + R), hop * (f + c - 1) + rf)
        if st.samples_in >= x_end and not (final and x_end >= st.samples_in):
            n_emit = c
        elif final:
            x_end = st.samples_in  # the window that reaches the end emits every frame left
            n_emit = total - f
        else:
            break
        a = max(0, f - L)
        nf = model.num_frames(x_end - hop * a)  # window frames [a, a + nf)
        buf = st.pending
        feats = None
        if reuse:
            old = wc.feats
            first_new = max((wc.feat_start + old.shape[0]) if old is not None else a, a)
            new = None
            if first_new < a + nf:
                xs = buf[hop * first_new - wc.buf_start : x_end - wc.buf_start]
                new = module.window_features(to_device(xs[None], model.device, model.dtype))
            if new is not None or (old is not None and first_new >= a + nf):
                parts = []
                if old is not None:
                    parts.append(old[max(0, a - wc.feat_start) : max(0, a + nf - wc.feat_start)])
                if new is not None:
                    parts.append(new[0])
                feats = torch.cat(parts) if len(parts) > 1 else parts[0]
        if feats is not None:
            frames = to_cpu(module.window_from_features(feats[None])[0])  # (nf, D)
            keep_from = max(a, f + n_emit - L)
            wc = WindowCache(wc.buf_start, feats[keep_from - a :], keep_from)
            drop_to = hop * (a + nf)  # the next new frame's samples start here
        else:
            xs = buf[hop * a - wc.buf_start : x_end - wc.buf_start]
            if spec.normalize == "window":
                xs = normalize_window(xs)
            frames = to_cpu(module.window_forward(to_device(xs[None], model.device, _input_dtype(model)))[0])  # (nf, D)
            drop_to = hop * max(0, f + n_emit - L)
        outs.append(frames[f - a : f - a + n_emit])
        drop = max(0, min(drop_to, st.samples_in) - wc.buf_start)
        wc = WindowCache(wc.buf_start + drop, wc.feats, wc.feat_start, frames[f - a + n_emit :], x_end)
        st = st.replace(frames_out=f + n_emit, pending=buf[drop:], cache=wc, steps=st.steps + 1)
    return outs, start, st


def _window_step_batch(
    model: StreamedModel, states: list[StreamState], final: list[bool]
) -> tuple[list[StepOutput], list[StreamState]]:
    results = []
    for i, st in enumerate(states):
        outs, start, st = _window_steps(model, st, final[i])
        states[i] = st
        results.append(StepOutput(torch.cat(outs), start) if outs else _empty(model, st))
    return results, states


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------


def step_batch(
    model: StreamedModel, chunks: Sequence[Any], states: Sequence[StreamState]
) -> tuple[list[StepOutput], list[StreamState]]:
    if len(chunks) != len(states):
        raise StreamUsageError(f"{len(chunks)} chunks for {len(states)} states")
    states = [_receive(model, c, s) for c, s in zip(chunks, states)]
    final = [False] * len(states)
    modes = {s.spec.mode for s in states}
    if modes == {"cached"}:
        return _cached_step_batch(model, states, final)
    if modes == {"window"}:
        return _window_step_batch(model, states, final)
    outs: dict[int, StepOutput] = {}
    new: dict[int, StreamState] = {}
    for mode, fn in (("cached", _cached_step_batch), ("window", _window_step_batch)):
        idx = [i for i, s in enumerate(states) if s.spec.mode == mode]
        o, s = fn(model, [states[i] for i in idx], [False] * len(idx))
        for j, i in enumerate(idx):
            outs[i], new[i] = o[j], s[j]
    return [outs[i] for i in range(len(states))], [new[i] for i in range(len(states))]


def flush(model: StreamedModel, state: StreamState) -> StepOutput:
    if state.spec.mode == "cached":
        outs, _ = _cached_step_batch(model, [state], [True])
    else:
        outs, _ = _window_step_batch(model, [state], [True])
    result: StepOutput = outs[0]
    return result
