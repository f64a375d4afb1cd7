"""Caption timing shared by the SRT and WebVTT sinks: one final transcript -> caption-sized cues.

A long final is split into cues of at most ``max_lines`` lines of ``max_chars_per_line``
characters, each lasting at most ``max_duration_ms``, cut between words. Cue times come from
the word timestamps (``Word.start_sample`` / ``end_sample``). Without word timestamps the
segment's span is shared among the words in proportion to their length, which is what a
reader would expect of evenly paced speech. A change of ``Word.speaker`` also starts a new cue.

Times stay integer samples until they are formatted (:func:`format_timestamp`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stream.events import FinalTranscript, Word

__all__ = ["CaptionLimits", "Cue", "cues_for_final", "cue_times_ms", "format_timestamp", "samples_to_ms", "wrap_words"]


@dataclass(frozen=True, slots=True)
class CaptionLimits:
    # 42 characters x 2 lines and at most 7 s on screen: common broadcast subtitle guidance.
    max_chars_per_line: int = 42
    max_lines: int = 2
    max_duration_ms: int = 7000

    def __post_init__(self) -> None:
        if self.max_chars_per_line < 1 or self.max_lines < 1 or self.max_duration_ms < 1:
            raise ValueError(f"caption limits must be positive: {self!r}")


@dataclass(frozen=True, slots=True)
class Cue:
    """One caption: ``lines`` shown from ``start_sample`` to ``end_sample`` (stream time)."""

    start_sample: int
    end_sample: int
    lines: tuple[str, ...]
    speaker: str | None = None
    ident: str = ""


def samples_to_ms(sample: int, sample_rate_hz: int) -> int:
    """Integer milliseconds, rounded half up."""
    return (sample * 1000 + sample_rate_hz // 2) // sample_rate_hz


def format_timestamp(ms: int, decimal_sep: str) -> str:
    """``HH:MM:SS<sep>mmm``: ``,`` for SRT, ``.`` for WebVTT. Hours may exceed 99."""
    if ms < 0:
        raise ValueError(f"negative timestamp: {ms} ms")
    s, milli = divmod(ms, 1000)
    m, sec = divmod(s, 60)
    h, minute = divmod(m, 60)
    return f"{h:02d}:{minute:02d}:{sec:02d}{decimal_sep}{milli:03d}"


def wrap_words(words: list[str], width: int, first_line_indent: int = 0) -> list[str]:
    """Greedy line wrap; a word longer than ``width`` gets a line of its own.

    ``first_line_indent`` reserves room on the first line (an SRT speaker prefix).
    """
    lines: list[str] = []
    current = ""
    room = width - first_line_indent
    for w in words:
        if not current:
            current = w
        elif len(current) + 1 + len(w) <= room:
            current = f"{current} {w}"
        else:
            lines.append(current)
            current = w
            room = width
    if current:
        lines.append(current)
    return lines


def _clean(text: str) -> str:
    # Cue text is one logical line: no blank lines, no "-->", which would end or confuse a cue.
    return " ".join(text.replace("-->", "->").split())


def _timed_words(final: FinalTranscript) -> list[Word]:
    """The final's words with times, clamped into the segment; synthesised from text if absent."""
    seg_start, seg_end = final.sample, max(final.end_sample, final.sample)
    words = [w for w in final.words if _clean(w.text)]
    if words:
        bounded = seg_end > seg_start  # a final without an end keeps its words' own times
        out = []
        for w in words:
            start = min(max(w.start_sample, seg_start), seg_end) if bounded else w.start_sample
            end = min(max(w.end_sample, seg_start), seg_end) if bounded else w.end_sample
            out.append(Word(_clean(w.text), start, max(end, start), w.confidence, w.speaker))
        return out
    tokens = _clean(final.text).split()
    if not tokens:
        return []
    # No word times: share the span by character count (a space counts with its word).
    weights = [len(t) + 1 for t in tokens]
    total = sum(weights)
    span = seg_end - seg_start
    out, acc = [], 0
    for t, wgt in zip(tokens, weights):
        start = seg_start + span * acc // total
        acc += wgt
        end = seg_start + span * acc // total
        out.append(Word(t, start, end))
    return out


def _split_points(
    words: list[Word], limits: CaptionLimits, indent: Callable[[str | None], int], rate: int
) -> list[int]:
    """Where to cut ``words`` into cues: fewest cues, then the most even fill (least squared slack).

    A cue ``words[i:j]`` is allowed when it wraps into ``max_lines`` lines, lasts at most
    ``max_duration_ms`` (a single word is always allowed) and has one speaker. A small dynamic
    programme over cut points (O(n^2) in words per final) avoids the greedy split's orphan word
    on the last cue.
    """
    n = len(words)
    max_dur = limits.max_duration_ms * rate // 1000
    capacity = limits.max_chars_per_line * limits.max_lines
    best: list[tuple[int, int] | None] = [None] * (n + 1)  # (cues, cost) for words[:i]
    back = [0] * (n + 1)
    best[0] = (0, 0)
    for j in range(1, n + 1):
        chars = -1
        for i in range(j - 1, -1, -1):  # cue = words[i:j], grown leftwards
            w = words[i]
            chars += len(w.text) + 1
            if i < j - 1:
                if w.speaker != words[j - 1].speaker:
                    break
                if words[j - 1].end_sample - w.start_sample > max_dur:
                    break
                texts = [x.text for x in words[i:j]]
                if len(wrap_words(texts, limits.max_chars_per_line, indent(w.speaker))) > limits.max_lines:
                    break
            prev = best[i]
            if prev is None:
                continue
            slack = max(capacity - chars - indent(w.speaker), 0)
            cand = (prev[0] + 1, prev[1] + slack * slack)
            cur = best[j]
            if cur is None or cand < cur:
                best[j], back[j] = cand, i
    cuts = []
    j = n
    while j > 0:
        cuts.append(back[j])
        j = back[j]
    return sorted(cuts)[1:] + [n] if n else []


def cues_for_final(
    final: FinalTranscript,
    limits: CaptionLimits = CaptionLimits(),
    speaker_prefix: str = "",
) -> list[Cue]:
    """Split one final into cues within ``limits``; ``[]`` for an empty final.

    ``speaker_prefix`` (e.g. ``"{speaker}: "``) is not added to the lines, only counted against
    the first line's width when the cue has a speaker, for formats that prefix it (SRT).
    """
    words = _timed_words(final)
    if not words:
        return []
    words = [w if w.speaker else Word(w.text, w.start_sample, w.end_sample, w.confidence, final.speaker) for w in words]

    def indent(speaker: str | None) -> int:
        return len(speaker_prefix.format(speaker=speaker)) if speaker and speaker_prefix else 0

    cues, start_idx = [], 0
    for k, end_idx in enumerate(_split_points(words, limits, indent, final.sample_rate_hz)):
        group = words[start_idx:end_idx]
        start_idx = end_idx
        speaker = group[0].speaker
        cues.append(
            Cue(
                start_sample=group[0].start_sample,
                end_sample=max(group[-1].end_sample, group[0].start_sample),
                lines=tuple(wrap_words([w.text for w in group], limits.max_chars_per_line, indent(speaker))),
                speaker=speaker,
                ident=f"{final.segment_id}.{k}" if final.segment_id else "",
            )
        )
    return cues


def cue_times_ms(cue: Cue, sample_rate_hz: int) -> tuple[int, int]:
    """Start and end in ms; the end is at least 1 ms after the start (parsers reject empty cues)."""
    start = samples_to_ms(cue.start_sample, sample_rate_hz)
    end = max(samples_to_ms(cue.end_sample, sample_rate_hz), start + 1)
    return start, end
