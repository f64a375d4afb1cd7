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

* ``LoadedModel`` (engines.model) is what callers use. It owns sample buffering, frame
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

The top of the engines package: it re-exports the contract from the modules below it
(engines.types, engines.registry, engines.model) and nothing inside ``engines`` imports it
(tests/unit/test_layering.py checks this).
"""

from __future__ import annotations

from engines.model import LoadedModel, load_model
from engines.registry import FamilySpec, get_family, register_family, supported_model_types
from engines.types import (
    HEADS,
    MODES,
    SAMPLE_RATE_HZ,
    EngineModule,
    ForwardOutput,
    Frontend,
    StepOutput,
    StreamSpec,
    StreamState,
)

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
