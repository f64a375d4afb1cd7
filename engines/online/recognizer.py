"""The online recogniser: a loaded CTC model, its streaming decoder and the endpoint rules, without asyncio.

::

    rec = OnlineRecognizer.from_pretrained("path/to/model", chunk_ms=640)
    s = rec.create_stream()
    for block in blocks:                          # any sample rate, any block length
        s.accept_waveform(44_100, block)
        print(s.partial)                          # the open segment's text ("" between segments)
        for final in s.finals():                  # segments closed since the last call
            print(final.text)
    s.close()                                     # end of stream: the last finals
    rest = s.finals()

    # several streams, one forward per step (cross-stream batching, engines.batching):
    rec.accept_waveforms([(s1, 16_000, x1), (s2, 16_000, x2)])

The functional core underneath (what ``stream.recognizer.Recognizer``, the async node, calls on its
executor): ``init_state`` / ``step`` / ``step_many`` / ``finish`` over an immutable
:class:`OnlineState`, returning ``engines.ctc.SegmentUpdate`` tuples (partials and finals, sample times
relative to the state's ``origin``). ``decode_segment`` recognises a whole segment (offline mode).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.batching import Request, run_batch
from engines.ctc import EndReason, SegmentUpdate, StreamingCTCDecoder
from engines.errors import ConfigError, EngineError, StreamUsageError
from engines.online.config import RecognizerConfig, resolve_compute_device
from engines.online.decoder import build_decoder, check_model_language

__all__ = ["OnlineRecognizer", "OnlineState", "OnlineStream", "RecognizerStats", "SAMPLE_RATE_HZ"]

SAMPLE_RATE_HZ = 16_000
Samples = npt.NDArray[np.float32]
Updates = tuple[SegmentUpdate, ...]


@dataclass
class RecognizerStats:
    """Counters for benchmarks and metrics (not per-stream state): compute seconds and audio seen."""

    compute_s: float = 0.0
    audio_samples: int = 0
    steps: int = 0
    batches: int = 0  # step_batch forwards of more than one stream
    largest_batch: int = 1
    peeks: int = 0  # VAD ends closed at once on the engine's buffered frames
    ahead: int = 0  # VAD ends decoded ahead, during the pause (the node's SpeechPausing)
    ahead_used: int = 0  # of which the pause became the segment's end (the others: speech resumed)

    @property
    def rtf(self) -> float:
        return self.compute_s / max(self.audio_samples / SAMPLE_RATE_HZ, 1e-9)


@dataclass(frozen=True)
class OnlineState:
    """One stream: the engine's and the decoder's immutable states, and its stream time."""

    engine: Any  # engines.types.StreamState
    decoder: Any  # engines.ctc.DecoderState
    next_sample: int  # stream time of the next sample the engine expects
    origin: int  # stream time of the engine's sample 0
    language: str | None = None  # the engine's adapter view and the decoder (vocabulary)


class OnlineRecognizer:
    """Model + decoder + endpointing for any number of streams (their states are the callers')."""

    def __init__(
        self,
        model: Any,
        config: RecognizerConfig = RecognizerConfig(),
        *,
        decoder: StreamingCTCDecoder | None = None,
        stats: RecognizerStats | None = None,
    ):
        c = config
        if c.mode not in ("cached", "window", "offline"):
            raise ConfigError(f"recogniser mode must be cached, window or offline, not {c.mode!r}")
        try:  # geometry errors are configuration errors, raised when the recogniser is built
            if c.mode != "offline":
                model.init_state(c.mode, c.chunk_ms, c.left_context_ms, c.lookahead_ms)
        except EngineError as exc:
            raise ConfigError(f"streaming geometry: {exc}") from exc
        self.model = model
        self.config = config
        self.stats = stats if stats is not None else RecognizerStats()
        self._decoders: dict[str | None, StreamingCTCDecoder] = {
            getattr(model, "language", None): decoder if decoder is not None else build_decoder(model, config)
        }

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | Any,
        config: RecognizerConfig | None = None,
        *,
        decoder: StreamingCTCDecoder | None = None,
        stats: RecognizerStats | None = None,
        **overrides: Any,
    ) -> OnlineRecognizer:
        """Load ``model`` (a local HF-layout directory, a hub id in the local cache, or a ``LoadedModel``)
        with ``config`` and any ``RecognizerConfig`` field as a keyword (``mode="cached", chunk_ms=640``).
        ConfigError, naming the file, for a model that cannot be loaded."""
        from engines.model import load_model

        cfg = dataclasses.replace(config or RecognizerConfig(), **overrides)
        loaded: Any = model
        if isinstance(model, (str, Path)):
            try:
                loaded = load_model(model, device=resolve_compute_device(cfg.compute_device))
            except EngineError as exc:
                text = str(exc)  # most name the file already (DIR/config.json: field ...)
                raise ConfigError(text if str(model) in text else f"cannot load model {model}: {text}") from exc
        if cfg.language is not None:  # an unknown code: UnknownLanguageError listing the available ones
            loaded = loaded.for_language(cfg.language)
        return cls(loaded, cfg, decoder=decoder, stats=stats)

    # ------------------------------------------------------------------ languages

    @property
    def language(self) -> str | None:
        return getattr(self.model, "language", None)

    def check_language(self, language: str) -> None:
        """UnknownLanguageError (a ConfigError), listing the codes, for a language the model lacks."""
        check_model_language(self.model, language)

    def prepare_language(self, language: str | None) -> StreamingCTCDecoder:
        """The decoder of ``language``, building the engine's view of it first (reads its adapter file)."""
        if language not in self._decoders:
            self._decoders[language] = build_decoder(self.model.for_language(language), self.config)
        return self._decoders[language]

    def has_language(self, language: str | None) -> bool:
        return language in self._decoders

    def decoder_for(self, state: OnlineState) -> StreamingCTCDecoder:
        return self._decoders.get(state.language, self._decoders[self.language])

    # ------------------------------------------------------------------ streaming core

    def _streaming(self) -> None:
        if self.config.mode == "offline":
            raise StreamUsageError("an offline recogniser has no stream steps; use decode_segment")

    def init_state(self, first_sample: int = 0, language: str | None = None) -> OnlineState:
        """A new stream whose first sample is at stream time ``first_sample``."""
        self._streaming()
        c = self.config
        decoder = self.prepare_language(language) if language is not None else self._decoders[self.language]
        return OnlineState(
            engine=self.model.init_state(c.mode, c.chunk_ms, c.left_context_ms, c.lookahead_ms, language=language),
            decoder=decoder.init_state(),
            next_sample=first_sample,
            origin=first_sample,
            language=language,
        )

    @staticmethod
    def align(samples: Samples, state: OnlineState, sample: int) -> Samples:
        """``samples`` starting at stream time ``sample``, made contiguous with the state: a gap (audio
        dropped upstream) is filled with zeros, so word times stay exact; an overlap is skipped."""
        gap = sample - state.next_sample
        if gap > 0:
            return np.concatenate([np.zeros(gap, np.float32), samples])
        return samples[-gap:] if gap < 0 else samples

    def step(self, samples: Samples, state: OnlineState, *, end: bool = False) -> tuple[Updates, OnlineState]:
        """Feed 16 kHz mono float32 ``samples``; ``end=True`` also flushes the engine and the decoder."""
        import torch

        self._streaming()
        t0 = time.perf_counter()
        x = torch.from_numpy(np.array(samples, dtype=np.float32))  # a copy: callers' arrays may be read-only
        out, engine = self.model.step(x, state.engine)
        decoder = self.decoder_for(state)
        updates, dec = decoder.step(out.frames, out.start_frame, state.decoder)
        if end:
            last = self.model.flush(engine)
            more, dec = decoder.step(last.frames, last.start_frame, dec)
            fin, dec = decoder.flush(dec)
            updates = updates + more + fin
        self.stats.compute_s += time.perf_counter() - t0
        self.stats.audio_samples += int(samples.shape[0])
        self.stats.steps += 1
        return updates, dataclasses.replace(
            state, engine=engine, decoder=dec, next_sample=state.next_sample + int(samples.shape[0])
        )

    def step_many(self, items: Sequence[tuple[Samples, OnlineState]]) -> list[tuple[Updates, OnlineState]]:
        """One batched forward (``engines.batching.run_batch``) for chunks of distinct streams, then each
        stream's decoder. Results equal ``step`` on each item alone (tested)."""
        import torch

        self._streaming()
        t0 = time.perf_counter()
        batch = [
            Request(i, torch.from_numpy(np.array(x, dtype=np.float32)), st.engine) for i, (x, st) in enumerate(items)
        ]
        results = []
        for (x, st), (_, out, engine) in zip(items, run_batch(self.model, batch)):
            updates, dec = self.decoder_for(st).step(out.frames, out.start_frame, st.decoder)
            st = dataclasses.replace(st, engine=engine, decoder=dec, next_sample=st.next_sample + int(x.shape[0]))
            results.append((updates, st))
        self.stats.compute_s += time.perf_counter() - t0
        self.stats.audio_samples += sum(int(x.shape[0]) for x, _ in items)
        self.stats.steps += len(items)
        if len(items) > 1:
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(items))
        return results

    def finish(self, state: OnlineState) -> tuple[Updates, OnlineState]:
        """End of stream: the engine's buffered audio, then the decoder's last finals."""
        return self.step(np.zeros(0, np.float32), state, end=True)

    def close_segment(self, state: OnlineState) -> tuple[Updates, OnlineState]:
        """Close the open segment now (decoder only: the engine keeps its buffered audio)."""
        updates, dec = self.decoder_for(state).flush(state.decoder)
        return updates, dataclasses.replace(state, decoder=dec)

    def endpoint_at(self, state: OnlineState, sample: int) -> tuple[Updates, OnlineState]:
        """Close the segment at stream time ``sample`` (a VAD's speech end). When the engine still
        buffers audio before the cut, peek at those frames (``flush`` on the immutable engine state,
        which goes on unchanged) so the final comes now, not when the chunk is complete."""
        t0 = time.perf_counter()
        at = sample - state.origin
        lookahead = None
        decoder = self.decoder_for(state)
        if self.config.peek_at_vad_end and decoder.sample_to_frame(at) > state.decoder.frame:
            peek = self.model.flush(state.engine)
            lookahead = (peek.frames, peek.start_frame)
            self.stats.peeks += 1
        updates, dec = decoder.request_endpoint(state.decoder, at, lookahead=lookahead)
        self.stats.compute_s += time.perf_counter() - t0
        return updates, dataclasses.replace(state, decoder=dec)

    # ------------------------------------------------------------------ whole segments

    def decode_segment(
        self, samples: Samples, *, reason: EndReason, language: str | None = None, next_index: int = 0
    ) -> tuple[Updates, int]:
        """The model's offline forward on one segment, decoded with the endpoint rules: its finals
        (revision 0, the last one carrying ``reason``) and the next segment index."""
        import torch

        t0 = time.perf_counter()
        decoder = self.prepare_language(language)
        x = np.asarray(samples, dtype=np.float32)
        logits = self.model.forward(torch.from_numpy(x), language=language).frames[0] if x.shape[0] else None
        st = dataclasses.replace(decoder.init_state(), next_index=next_index)
        ups: Updates = ()
        if logits is not None and logits.shape[0]:
            ups, st = decoder.step(logits, 0, st)
        fin, st = decoder.flush(st)
        finals = tuple(u for u in ups + fin if u.is_final)
        if finals:  # the segment's own end reason on its last final
            finals = finals[:-1] + (dataclasses.replace(finals[-1], reason=reason, endpoint_sample=int(x.shape[0])),)
        self.stats.compute_s += time.perf_counter() - t0
        self.stats.audio_samples += int(x.shape[0])
        self.stats.steps += 1
        return tuple(dataclasses.replace(u, revision=0) for u in finals), st.next_index

    # ------------------------------------------------------------------ convenience streams

    def create_stream(self, language: str | None = None) -> OnlineStream:
        """A stream object that keeps its own state (see the module docstring)."""
        if language is not None:
            self.check_language(language)
        return OnlineStream(self, language)

    def accept_waveforms(self, items: Sequence[tuple[OnlineStream, int, Any]]) -> None:
        """``accept_waveform`` for several distinct streams, their chunks in one batched forward."""
        streams = [s for s, _, _ in items]
        if len({id(s) for s in streams}) != len(streams):
            raise StreamUsageError("a stream may appear once per accept_waveforms call")
        ready = [(s, s._prepare(rate, x)) for s, rate, x in items]
        ready = [(s, x) for s, x in ready if x.shape[0]]
        for (s, _), (updates, st) in zip(ready, self.step_many([(x, s._state_for()) for s, x in ready])):
            s._apply(updates, st)


class OnlineStream:
    """One stream of an :class:`OnlineRecognizer`: feed audio, read the partial and the finals."""

    def __init__(self, recognizer: OnlineRecognizer, language: str | None = None):
        self.recognizer = recognizer
        self.language = language
        self.partial = ""  # the open segment's latest text
        self._state: OnlineState | None = None
        self._finals: list[SegmentUpdate] = []
        self._rate: int | None = None
        self._resampler: Any = None
        self.closed = False

    def _prepare(self, sample_rate: int, samples: Any) -> Samples:
        """Mono float32 at 16 kHz: int16 scaled, (frames, channels) averaged, other rates resampled (soxr)."""
        if self.closed:
            raise StreamUsageError("this stream is closed")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise StreamUsageError(f"sample_rate must be a positive whole number of Hz, not {sample_rate!r}")
        if self._rate is not None and sample_rate != self._rate:
            raise StreamUsageError(f"the sample rate changed mid-stream ({self._rate} -> {sample_rate} Hz)")
        x = np.asarray(samples)
        if x.dtype == np.int16:
            x = x.astype(np.float32) / 32768.0
        if x.ndim == 2:
            x = x.mean(axis=1)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise StreamUsageError(
                f"samples must be 1-D (or frames x channels) float or int16, got {x.dtype} {x.shape}"
            )
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise StreamUsageError(f"{int((~np.isfinite(x)).sum())} non-finite samples (NaN or inf)")
        self._rate = sample_rate
        if sample_rate != SAMPLE_RATE_HZ:
            import soxr

            if self._resampler is None:
                self._resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE_HZ, 1, dtype="float32")
            x = self._resampler.resample_chunk(x)
        return np.asarray(x, dtype=np.float32)

    def _state_for(self) -> OnlineState:
        if self._state is None:
            self._state = self.recognizer.init_state(0, self.language)
        return self._state

    def _apply(self, updates: Updates, state: OnlineState) -> None:
        self._state = state
        for u in updates:
            if u.is_final:
                self._finals.append(u)
                self.partial = ""
            else:
                self.partial = u.text

    def accept_waveform(self, sample_rate: int, samples: Any) -> None:
        """Feed a block of audio (float in [-1, 1] or int16; mono, or frames x channels; any rate)."""
        x = self._prepare(sample_rate, samples)
        if x.shape[0]:
            self._apply(*self.recognizer.step(x, self._state_for()))

    def finals(self) -> list[SegmentUpdate]:
        """The finals closed since the last call (text, ``start_sample``/``end_sample`` at 16 kHz, words)."""
        out, self._finals = self._finals, []
        return out

    def close(self) -> None:
        """End of stream: the resampler's tail and the engine's buffered audio are decoded into finals."""
        if self.closed:
            return
        tail = np.zeros(0, np.float32)
        if self._resampler is not None:
            tail = np.asarray(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32)
        st = self._state_for()
        self._apply(*self.recognizer.step(tail, st, end=True))
        self.partial = ""
        self.closed = True

    def __enter__(self) -> OnlineStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
