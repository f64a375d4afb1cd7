"""Streaming CTC decoding: greedy partials, finals per segment, endpointing, word timestamps.

Pure and synchronous.  A ``StreamingCTCDecoder`` holds constants only (tokenizer, frame
geometry, endpoint rules, optional re-decoders); every stream carries its own immutable
``DecoderState``::

    dec = StreamingCTCDecoder(tokenizer, samples_per_frame=320)
    state = dec.init_state()
    for out in engine_outputs:                         # StepOutput(frames (T, V), start_frame)
        updates, state = dec.step(out.frames, out.start_frame, state)
    updates, state = dec.flush(state)                  # end of stream: closes the open segment

``updates`` is a tuple of ``SegmentUpdate`` in stream order: partials (``is_final=False``) and
finals.  Segment ``index`` counts the segments of the stream that produced text (0, 1, ...);
``revision`` increases by one per update of a segment and the final carries the next one.

Greedy decoding is frame by frame (argmax, collapse repeats, drop the blank), so a token's frames
``[start_frame, end_frame)`` are exact and the result does not depend on the chunking: the
concatenated finals of any chunking equal the greedy decode of the whole stream.

Endpointing (WeNet / sherpa-onnx style), checked after every frame; "silence" frames are frames
whose argmax is the blank or the word delimiter:

- rule 1: ``rule1_min_trailing_silence_ms`` of silence and no token yet -> the empty segment is
  dropped (nothing is emitted; this bounds leading silence);
- rule 2: ``rule2_min_trailing_silence_ms`` of trailing silence after speech -> final (reason
  ``"silence"``);
- rule 3: ``max_utterance_ms`` since the segment started -> final (reason ``"max_length"``); the
  cut falls in the longest pause between words of the segment's last quarter (at most 5 s), and the
  words after it start the next segment; while no word is complete the segment waits for the open
  word to end (a single "word" of more than 1.5x the maximum is cut, to bound the state);
- ``request_endpoint(state, sample)`` (VAD speech end) closes the segment once the frames up to
  ``sample`` have been decoded (reason ``"vad"``); with ``lookahead`` (frames the engine still
  buffers, peeked at) it closes at once. A cut that falls between two letters of one word (no
  delimiter between them, within 60 ms on either side) waits for the word's end (at most 1 s).
  ``flush`` closes the segment with reason ``"eos"``.

Text: finals and partials are single-spaced and trimmed (a doubled delimiter is one space).

State is bounded: a segment never outlives ``max_utterance_ms``, so its token spans (and, when a
re-decoder needs them, its log-probs) are bounded whatever the stream length.

Frame timing: frame ``f`` starts at sample ``sample_offset + f * samples_per_frame`` (320 for the
waveform families and for W2V-BERT's fbank: 10 ms hop x stride-2 stacking); a word spans
``[first token start_frame, last token end_frame)``, as HF's ``output_word_offsets``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, overload

import numpy as np
import numpy.typing as npt

from engines.errors import StreamUsageError, UnsupportedConfigError
from engines.tokenizer import CTCTokenizer, TokenSpan, WordSpan

__all__ = [
    "EndpointConfig",
    "TimedWord",
    "SegmentUpdate",
    "DecoderState",
    "SegmentDecoder",
    "StreamingCTCDecoder",
    "log_softmax",
    "greedy_decode",
]

SAMPLE_RATE_HZ = 16_000
EndReason = Literal["vad", "silence", "max_length", "eos"]


@dataclass(frozen=True)
class EndpointConfig:
    """CTC endpoint rules, in ms. ``None`` disables rules 1 and 2; rule 3 is always on (it bounds state)."""

    rule1_min_trailing_silence_ms: int | None = 2400  # sherpa-onnx default
    rule2_min_trailing_silence_ms: int | None = 1200  # sherpa-onnx default
    max_utterance_ms: int = 20_000  # sherpa-onnx rule 3 default

    def __post_init__(self) -> None:
        for name in ("rule1_min_trailing_silence_ms", "rule2_min_trailing_silence_ms"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise UnsupportedConfigError(name, v, "a positive int (ms) or None")
        if not isinstance(self.max_utterance_ms, int) or self.max_utterance_ms <= 0:
            raise UnsupportedConfigError("max_utterance_ms", self.max_utterance_ms, "a positive int (ms)")

    @overload
    def frames(self, ms: int, samples_per_frame: int) -> int: ...
    @overload
    def frames(self, ms: int | None, samples_per_frame: int) -> int | None: ...
    def frames(self, ms: int | None, samples_per_frame: int) -> int | None:
        if ms is None:
            return None
        return max(1, int(round(ms * SAMPLE_RATE_HZ / 1000 / samples_per_frame)))


@dataclass(frozen=True, slots=True)
class TimedWord:
    """A word in stream samples; ``confidence`` is the mean max-probability of its token frames."""

    text: str
    start_sample: int
    end_sample: int
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class SegmentUpdate:
    """A partial or final hypothesis of segment ``index``.

    ``start_sample``/``end_sample`` span its words (the segment's frames when it has none);
    ``endpoint_sample`` (finals) is where the segment was closed, ``reason`` why.
    """

    index: int
    revision: int
    is_final: bool
    text: str
    words: tuple[TimedWord, ...]
    start_sample: int
    end_sample: int
    reason: EndReason | None = None
    endpoint_sample: int | None = None


class SegmentDecoder(Protocol):
    """Re-decodes a segment's log-probs (beam search, LM): ``(T, V) -> (text, words in frames of the slice)``."""

    def decode_segment(self, log_probs: npt.NDArray[np.floating[Any]]) -> tuple[str, tuple[WordSpan, ...]]: ...


@dataclass(frozen=True)
class DecoderState:
    """One stream's decoder state (immutable; ``step`` returns a new one).

    frame:          index of the next frame expected
    prev_id:        argmax of the previous frame (-1 before the first), for the CTC collapse
    next_index:     index the next segment with text gets
    seg_start:      first frame of the open segment
    spans:          tokens of the open segment; ``span_conf`` their mean max-probability
    trailing:       frames of trailing silence in the open segment
    revision:       last revision emitted for the open segment (-1: none yet)
    last_partial:   (text, words) of the last partial, to skip unchanged ones
    log_probs:      (T_seg, V) log-probs of the open segment, kept only when a re-decoder needs them
    pending_cuts:   frames at which requested (VAD) endpoints close the segment
    replay_from, replay_until: frames in this range were decoded ahead from a peek
                    (``request_endpoint(lookahead=)``); sent again by the engine, they are skipped
    cut_wait:       frames a requested cut has waited for the open word to end
    """

    frame: int = 0
    prev_id: int = -1
    next_index: int = 0
    seg_start: int = 0
    spans: tuple[TokenSpan, ...] = ()
    span_conf: tuple[float, ...] = ()
    trailing: int = 0
    revision: int = -1
    last_partial: tuple[str, tuple[TimedWord, ...]] | None = None
    log_probs: tuple[npt.NDArray[np.float32], ...] = field(default=(), repr=False)
    pending_cuts: tuple[int, ...] = ()
    replay_from: int = 0
    replay_until: int = 0
    cut_wait: int = 0


def log_softmax(logits: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    """Row-wise log-softmax of (T, V) float logits (float32)."""
    x = np.asarray(logits, dtype=np.float32)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    out: npt.NDArray[np.float32] = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return out


def greedy_decode(tokenizer: CTCTokenizer, logits: npt.NDArray[np.floating[Any]]) -> str:
    """Offline greedy text of (T, V) logits (the reference the streaming decoder is tested against)."""
    return tokenizer.decode(np.asarray(logits).argmax(axis=-1).tolist())


def _tidy(text: str) -> str:
    """Single-spaced and trimmed: a doubled word delimiter (``A AS  NOG``) never shows as two spaces."""
    return " ".join(text.split())


def _to_numpy(frames: object) -> npt.NDArray[np.float32]:
    if hasattr(frames, "detach"):
        frames = frames.detach().to("cpu").float().numpy()
    arr = np.asarray(frames, dtype=np.float32)
    if arr.ndim != 2:
        raise StreamUsageError(f"CTC frames must be (T, V), got shape {arr.shape}")
    return arr


class StreamingCTCDecoder:
    """Greedy streaming CTC decoder with endpointing; optional re-decoders for finals and partials."""

    def __init__(
        self,
        tokenizer: CTCTokenizer,
        samples_per_frame: int = 320,
        endpoint: EndpointConfig = EndpointConfig(),
        final_decoder: SegmentDecoder | None = None,
        partial_decoder: SegmentDecoder | None = None,
        emit_unchanged_partials: bool = False,
        sample_offset: int = 0,
    ):
        if samples_per_frame <= 0:
            raise UnsupportedConfigError("samples_per_frame", samples_per_frame, "a positive int")
        self.tokenizer = tokenizer
        self.samples_per_frame = samples_per_frame
        self.endpoint = endpoint
        self.final_decoder = final_decoder
        self.partial_decoder = partial_decoder
        self.emit_unchanged_partials = emit_unchanged_partials
        self.sample_offset = sample_offset
        self.blank = tokenizer.blank_id
        delim = tokenizer.word_delimiter_id
        self.silence_ids = frozenset({self.blank} | ({delim} if delim is not None else set()))
        self.delimiter = delim
        self.rule1 = endpoint.frames(endpoint.rule1_min_trailing_silence_ms, samples_per_frame)
        self.rule2 = endpoint.frames(endpoint.rule2_min_trailing_silence_ms, samples_per_frame)
        self.rule3 = endpoint.frames(endpoint.max_utterance_ms, samples_per_frame)
        # rule 3 looks for its pause in the segment's last quarter (at most 5 s)
        self.cut_window = min(self.rule3 // 4, endpoint.frames(5000, samples_per_frame) or 1)
        self.word_guard_frames = (
            endpoint.frames(60, samples_per_frame) or 1
        )  # VAD cut inside a word: letters this close
        self.max_cut_wait = endpoint.frames(1000, samples_per_frame) or 1  # a VAD cut waits at most 1 s for a word end
        self.peek_slack = endpoint.frames(80, samples_per_frame) or 1  # a peeked cut may move this far back
        self.keep_log_probs = final_decoder is not None or partial_decoder is not None

    # ------------------------------------------------------------------ public API

    def init_state(self, start_frame: int = 0) -> DecoderState:
        return DecoderState(frame=start_frame, seg_start=start_frame)

    def frame_to_sample(self, frame: int) -> int:
        return self.sample_offset + frame * self.samples_per_frame

    def sample_to_frame(self, sample: int) -> int:
        """First frame starting at or after ``sample`` (frames before it start before ``sample``)."""
        return -(-(sample - self.sample_offset) // self.samples_per_frame)

    def step(
        self, frames: object, start_frame: int, state: DecoderState
    ) -> tuple[tuple[SegmentUpdate, ...], DecoderState]:
        """Decode (T, V) CTC logits whose first frame is ``start_frame`` (must follow the previous step)."""
        logits = _to_numpy(frames)
        if state.replay_from <= start_frame < state.frame <= state.replay_until:
            # frames decoded ahead from a peek come again from the engine: skip those
            logits = logits[state.frame - start_frame :]
            start_frame = state.frame
            if not logits.shape[0]:
                return (), state
        if start_frame != state.frame:
            raise StreamUsageError(
                f"CTC frames start at {start_frame}, expected {state.frame} (frames must be contiguous)"
            )
        if logits.shape[0] and logits.shape[1] != self.tokenizer.vocab_size:
            raise StreamUsageError(
                f"CTC frames have {logits.shape[1]} labels but the vocabulary has {self.tokenizer.vocab_size}"
            )
        return _Run(self, state).frames(logits).finish()

    def request_endpoint(
        self, state: DecoderState, sample: int, lookahead: tuple[object, int] | None = None
    ) -> tuple[tuple[SegmentUpdate, ...], DecoderState]:
        """VAD speech end at ``sample``: close the open segment once frames before it are decoded.

        ``lookahead = (frames, start_frame)``: frames the engine has not emitted yet but can be
        peeked at now (``LoadedModel.flush`` on a copy of its state). They are decoded at once, so
        the segment closes now instead of when the engine's chunk is complete; when the engine
        sends the same frames again they are skipped (the peeked ones stand).
        """
        cut = self.sample_to_frame(sample)
        if cut <= state.seg_start:
            return (), state  # that segment is already closed
        if cut <= state.frame and lookahead is None:
            run = _Run(self, state)
            run.close("vad", state.frame)
            return run.finish(partial=False)
        st = replace(state, pending_cuts=tuple(sorted({*state.pending_cuts, cut})))
        if lookahead is None:
            return (), st
        frames, start = lookahead
        arr = _to_numpy(frames)
        end = start + arr.shape[0]
        if start == state.frame and end < cut <= end + self.peek_slack:
            # the engine's last frames need audio past its input (the frontend's window): the cut
            # moves back onto the last peeked frame, inside the hangover's silence
            cut = max(end, state.seg_start + 1)
            st = replace(state, pending_cuts=tuple(sorted({*state.pending_cuts, cut})))
        if start != state.frame or not arr.shape[0]:
            if cut <= state.frame:
                run = _Run(self, state)
                run.close("vad", state.frame)
                return run.finish(partial=False)
            return (), st
        ups, new = self.step(arr, start, st)
        active = state.replay_from <= state.frame <= state.replay_until and state.replay_until > state.replay_from
        return ups, replace(new, replay_from=state.replay_from if active else start, replay_until=new.frame)

    def flush(self, state: DecoderState) -> tuple[tuple[SegmentUpdate, ...], DecoderState]:
        """End of stream: close the open segment (reason ``"eos"``)."""
        run = _Run(self, state)
        run.close("eos", state.frame)
        updates, new = run.finish(partial=False)
        return updates, replace(new, pending_cuts=())


class _Run:
    """Mutable scratch for one call; the inputs are never mutated, the result is a new state."""

    def __init__(self, dec: StreamingCTCDecoder, s: DecoderState):
        self.d = dec
        self.frame = s.frame
        self.prev_id = s.prev_id
        self.next_index = s.next_index
        self.seg_start = s.seg_start
        self.spans = list(s.spans)
        self.conf = list(s.span_conf)
        self.trailing = s.trailing
        self.revision = s.revision
        self.last_partial = s.last_partial
        self.log_probs: list[npt.NDArray[np.float32]] = list(s.log_probs)
        self.pending = list(s.pending_cuts)
        self.replay = (s.replay_from, s.replay_until)
        self.cut_wait = s.cut_wait
        self.updates: list[SegmentUpdate] = []

    # -- frame loop ----------------------------------------------------------------------

    def frames(self, logits: npt.NDArray[np.float32]) -> _Run:
        d = self.d
        n = logits.shape[0]
        if n == 0:
            return self
        lp = log_softmax(logits)
        ids = lp.argmax(axis=-1)
        probs = np.exp(lp[np.arange(n), ids]).tolist()
        ids = ids.tolist()
        if d.keep_log_probs:
            self.log_probs.append(lp)
        base = self.frame
        silence, blank = d.silence_ids, d.blank
        has_text = self._has_text()
        r1, r2, r3 = d.rule1, d.rule2, d.rule3
        for i in range(n):
            f = base + i
            while self.pending and self.pending[0] <= f:
                if self.cut_wait < d.max_cut_wait and self._inside_word(f, ids, i):
                    self.cut_wait += 1  # a VAD end between two letters of a word: try again next frame
                    break
                cut = self.pending.pop(0)
                self.cut_wait = 0
                if cut > self.seg_start:
                    self.close("vad", f)
                    has_text = self._has_text()
            tok = ids[i]
            if tok != blank:
                if tok == self.prev_id:
                    last = self.spans[-1] if self.spans else None
                    if last is not None and last.end_frame == f:  # extend the run (not across a cut)
                        k = last.end_frame - last.start_frame
                        self.spans[-1] = TokenSpan(tok, last.start_frame, f + 1)
                        self.conf[-1] = (self.conf[-1] * k + probs[i]) / (k + 1)
                else:
                    self.spans.append(TokenSpan(tok, f, f + 1))
                    self.conf.append(probs[i])
                    has_text = has_text or tok not in silence
            self.prev_id = tok
            self.trailing = self.trailing + 1 if tok in silence else 0
            self.frame = f + 1
            if not has_text:
                if (r1 is not None and self.trailing >= r1) or self.frame - self.seg_start >= r3:
                    self.drop_empty(self.frame)
            elif r2 is not None and self.trailing >= r2:
                self.close("silence", self.frame)
                has_text = self._has_text()
            elif self.frame - self.seg_start >= r3:
                length_cut = self._max_length_cut()
                if length_cut is None and self.frame - self.seg_start >= r3 + r3 // 2:
                    length_cut = self.frame  # one "word" of more than half the maximum: cut (bounded state)
                if length_cut is not None:
                    self.close("max_length", length_cut)
                    has_text = self._has_text()
        # a requested cut at the frame after this chunk closes now, not one chunk later
        while self.pending and self.pending[0] <= self.frame:
            cut = self.pending.pop(0)
            if cut > self.seg_start:
                self.close("vad", self.frame)
        return self

    def _has_text(self) -> bool:
        return any(sp.token_id not in self.d.silence_ids for sp in self.spans)

    def _inside_word(self, f: int, ids: list[int], i: int) -> bool:
        """A cut at frame ``f`` would split a word: a letter ended just before it and another of
        the same word (no delimiter in between) starts just after it, in the frames at hand."""
        d = self.d
        guard = d.word_guard_frames
        last = next((sp for sp in reversed(self.spans) if sp.token_id != d.blank), None)
        if last is None or last.token_id in d.silence_ids or f - last.end_frame > guard:
            return False
        for tok in ids[i : i + guard]:
            if tok == d.blank:
                continue
            return tok not in d.silence_ids
        return False

    def _max_length_cut(self) -> int | None:
        """Rule 3's cut: at the longest pause between words in the segment's last ``cut_window``
        frames (the next word starts the next segment), else at the latest word boundary; None
        when no word is complete yet (wait for the open word to end: never cut inside a word)."""
        d = self.d
        words = d.tokenizer.words_of_spans(self.spans)
        closed_last = bool(self.spans) and self.spans[-1].token_id == d.delimiter
        # (gap length, cut frame) for each boundary: between words, and after the last one if it is closed
        gaps = [(b.start_frame - a.end_frame, b.start_frame) for a, b in zip(words, words[1:])]
        if words and closed_last:
            gaps.append((self.frame - words[-1].end_frame, self.frame))
        gaps = [g for g in gaps if g[1] > self.seg_start]
        if not gaps:
            return None
        recent = [g for g in gaps if g[1] >= self.frame - d.cut_window]
        best = max(recent or gaps[-1:], key=lambda g: (g[0], g[1]))
        return best[1]

    # -- segment boundaries ----------------------------------------------------------------

    def _split(self, cut: int) -> tuple[list[TokenSpan], list[float], list[TokenSpan], list[float]]:
        k = next((j for j, sp in enumerate(self.spans) if sp.start_frame >= cut), len(self.spans))
        return self.spans[:k], self.conf[:k], self.spans[k:], self.conf[k:]

    def _split_log_probs(self, cut: int) -> tuple[npt.NDArray[np.float32] | None, list[npt.NDArray[np.float32]]]:
        if not self.d.keep_log_probs:
            return None, []
        allp = np.concatenate(self.log_probs, axis=0) if self.log_probs else np.zeros((0, 0), np.float32)
        k = cut - self.seg_start
        rest = [allp[k:]] if allp.shape[0] > k else []
        return allp[:k], rest

    def drop_empty(self, cut: int) -> None:
        _, _, self.spans, self.conf = self._split(cut)
        _, self.log_probs = self._split_log_probs(cut)
        self.seg_start = cut
        self.trailing = 0

    def close(self, reason: EndReason, cut: int) -> None:
        d = self.d
        spans, conf, rest_spans, rest_conf = self._split(cut)
        seg_lp, rest_lp = self._split_log_probs(cut)
        has_text = any(sp.token_id not in d.silence_ids for sp in spans)
        if has_text or self.revision >= 0:
            if d.final_decoder is not None and seg_lp is not None:
                text, wspans = d.final_decoder.decode_segment(seg_lp)
                words = self._timed(wspans, self.seg_start, spans, conf)
            else:
                text = d.tokenizer.text_of_spans(spans)
                words = self._timed(d.tokenizer.words_of_spans(spans), 0, spans, conf)
            start, end = self._extent(words, self.seg_start, cut)
            self.updates.append(
                SegmentUpdate(
                    index=self.next_index,
                    revision=self.revision + 1,
                    is_final=True,
                    text=_tidy(text),
                    words=words,
                    start_sample=start,
                    end_sample=end,
                    reason=reason,
                    endpoint_sample=d.frame_to_sample(cut),
                )
            )
            self.next_index += 1
        self.spans, self.conf, self.log_probs = rest_spans, rest_conf, rest_lp
        self.seg_start = cut
        self.trailing = self.trailing if rest_spans else 0
        self.revision = -1
        self.last_partial = None

    # -- hypotheses ------------------------------------------------------------------------

    def _timed(
        self, wspans: Sequence[WordSpan], frame_offset: int, spans: Sequence[TokenSpan], conf: Sequence[float]
    ) -> tuple[TimedWord, ...]:
        d = self.d
        out = []
        j = 0  # spans and words are both in frame order: one pass
        for w in wspans:
            a, b = w.start_frame + frame_offset, w.end_frame + frame_offset
            while j < len(spans) and spans[j].start_frame < a:
                j += 1
            cs = []
            while j < len(spans) and spans[j].end_frame <= b:
                cs.append(conf[j])
                j += 1
            out.append(
                TimedWord(
                    text=w.text,
                    start_sample=d.frame_to_sample(a),
                    end_sample=d.frame_to_sample(b),
                    confidence=round(float(sum(cs) / len(cs)), 4) if cs else None,
                )
            )
        return tuple(out)

    def _extent(self, words: Sequence[TimedWord], seg_start: int, seg_end: int) -> tuple[int, int]:
        if words:
            return words[0].start_sample, words[-1].end_sample
        return self.d.frame_to_sample(seg_start), self.d.frame_to_sample(seg_end)

    def _partial(self) -> None:
        d = self.d
        if not any(sp.token_id not in d.silence_ids for sp in self.spans):
            return
        if d.partial_decoder is not None:
            _, lp = self._split_log_probs(self.seg_start)  # the whole open segment
            text, wspans = d.partial_decoder.decode_segment(lp[0] if lp else np.zeros((0, d.tokenizer.vocab_size)))
            words = self._timed(wspans, self.seg_start, self.spans, self.conf)
        else:
            text = d.tokenizer.text_of_spans(self.spans)
            words = self._timed(d.tokenizer.words_of_spans(self.spans), 0, self.spans, self.conf)
        text = _tidy(text)
        if not d.emit_unchanged_partials and self.last_partial == (text, words):
            return
        start, end = self._extent(words, self.seg_start, self.frame)
        self.revision += 1
        self.last_partial = (text, words)
        self.updates.append(SegmentUpdate(self.next_index, self.revision, False, text, words, start, end))

    def finish(self, partial: bool = True) -> tuple[tuple[SegmentUpdate, ...], DecoderState]:
        if partial:
            self._partial()
        lp = self.log_probs
        if len(lp) > 1:  # keep one array: bounded tuple length, concatenation cost paid once per chunk
            lp = [np.concatenate(lp, axis=0)]
        state = DecoderState(
            frame=self.frame,
            prev_id=self.prev_id,
            next_index=self.next_index,
            seg_start=self.seg_start,
            spans=tuple(self.spans),
            span_conf=tuple(self.conf),
            trailing=self.trailing,
            revision=self.revision,
            last_partial=self.last_partial,
            log_probs=tuple(lp),
            pending_cuts=tuple(self.pending),
            replay_from=self.replay[0],
            replay_until=self.replay[1],
            cut_wait=self.cut_wait if self.pending else 0,
        )
        return tuple(self.updates), state
