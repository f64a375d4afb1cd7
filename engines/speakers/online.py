"""Online diarization: speech segments -> speaker turns, with bounded latency and revisions.

Pure and synchronous: ``step``-style functions take an immutable ``DiarizerState`` and return
``(updates, new_state)``; the shared embedder holds weights only.  The async node in
``stream.diarize`` feeds it audio and VAD boundaries.

Time is integer samples at 16 kHz.  Within every VAD speech segment the audio is cut into hops
of ``hop_ms``.  Hop ``[h, h + hop)`` is decided once the audio up to ``centre + right_ms`` has
arrived (or the segment has ended): its window ``[centre - left_ms, centre + right_ms]``, clipped
to the segment, is embedded.  So every sample gets its first label at most
``right_ms + hop_ms / 2`` (+ one 10 ms frame) after it was heard, plus compute: 0.885 s with the defaults.

Turns: consecutive hops of one segment belong to the open turn while their windows resemble
the turn's mean embedding; ``change_hops`` consecutive windows below ``change_threshold``
split the turn where the deviation began (a speaker change inside a segment, e.g. overlapped
turn-taking).  A segment end closes the turn.

Labels: the open turn's mean embedding is compared with the speaker centroids
(``engines.speakers.clustering``).  Matched -> that speaker.  Unmatched -> provisionally the
nearest speaker until the turn holds ``new_speaker_ms`` of audio, then a new speaker.  A closed
turn is committed to the clustering (its centroid moves), then close speakers are merged.

Updates (``TurnUpdate``) are emitted: when a turn is first labelled (revision 0); when its label
changes (revision + 1, never silent); when its end has grown by ``update_ms`` since the last
update; when it closes with a different end; and for recent closed turns whose speaker was
merged into another (bounded by ``history_turns``).  The highest revision of a ``turn_id`` is
the current truth; the first one is what a live viewer saw within the latency bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import webrtcvad

from engines.speakers.clustering import ClusterConfig, ClusterState, assign, merge_close
from engines.speakers.clustering import init_state as init_clusters
from engines.speakers.embedding import SpeakerEmbedder

__all__ = [
    "DiarizerConfig",
    "DiarizerState",
    "TurnUpdate",
    "init_state",
    "feed_audio",
    "speech_start",
    "speech_end",
    "decide",
    "flush",
    "latency_samples",
]

SR = 16_000


def _ms(ms: int) -> int:
    return int(ms) * SR // 1000


@dataclass(frozen=True)
class DiarizerConfig:
    hop_ms: int = 250
    left_ms: int = 750  # context before the hop centre
    right_ms: int = 750  # lookahead after the hop centre; sets the latency
    change_threshold: float = 0.8  # window vs open-turn similarity below which a change is suspected
    change_margin: float = 0.1  # ... or a known speaker beats the turn's speaker by this much
    change_hops: int = 2  # consecutive suspicious windows that split a turn
    new_speaker_ms: int = 1000  # an unmatched turn becomes a new speaker once it holds this much audio
    update_ms: int = 250  # re-emit an open turn's growing end at most this often (latency of its end)
    history_turns: int = 64  # closed turns kept so a speaker merge can revise them
    pause_ms: int = 150  # a pause this long inside a VAD segment ends the turn (turn-taking gap)
    pad_ms: int = 30  # kept around the voiced frames at a turn's start and end
    activity_mode: int = 3  # webrtc aggressiveness of the 10 ms voiced-frame detector (0-3)
    # True: only audio inside upstream VAD segments (speech_start/speech_end) is diarized;
    # False: no VAD upstream, the voiced-frame detector alone finds the speech.
    use_vad_events: bool = True
    cluster: ClusterConfig = field(
        default_factory=lambda: ClusterConfig(threshold=0.75, confirm=1, merge_threshold=0.88)
    )

    def __post_init__(self) -> None:
        for name in ("hop_ms", "left_ms", "right_ms", "new_speaker_ms", "update_ms"):
            if getattr(self, name) < 0 or (name == "hop_ms" and self.hop_ms <= 0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.change_hops < 1:
            raise ValueError(f"change_hops must be >= 1, got {self.change_hops}")


def latency_samples(config: DiarizerConfig) -> int:
    """Worst-case delay (excluding compute and input chunking) between a sample and its first
    label: a hop is decided once the audio reaches its centre + ``right_ms``, on a 10 ms frame."""
    return _ms(config.right_ms) + _ms(config.hop_ms) // 2 + FRAME


class TurnUpdate(NamedTuple):
    turn_id: int
    start: int  # samples
    end: int  # samples (exclusive)
    speaker: str
    revision: int


@dataclass(frozen=True)
class _Turn:
    turn_id: int
    start: int
    end: int
    vsum: npt.NDArray[np.float64] = field(repr=False)  # (D,) sum of the unit window embeddings of its hops
    label: str | None = None
    own_speaker: bool = False  # this turn created its speaker (already committed in part)
    committed: float = 0.0  # seconds of this turn already added to its speaker's centroid
    revision: int = -1  # last emitted revision (-1: never emitted)
    emitted_label: str | None = None
    emitted_end: int = 0
    cand_start: int | None = None  # start of a suspected change
    cand_vsum: npt.NDArray[np.float64] | None = field(default=None, repr=False)  # set with cand_start
    cand_count: int = 0


@dataclass(frozen=True)
class _Closed:
    turn_id: int
    start: int
    end: int
    label: str
    revision: int


FRAME = 160  # 10 ms voiced-frame detector


class _VoicedFrames(Protocol):
    """What ``DiarizerState.activity`` is used for (``webrtcvad.Vad``, which has no type stubs)."""

    def is_speech(self, buf: bytes, sample_rate: int) -> bool: ...


@dataclass(frozen=True)
class DiarizerState:
    cluster: ClusterState
    buf: npt.NDArray[np.float32] = field(repr=False)  # read-only audio from buf_start
    activity: _VoicedFrames = field(repr=False)  # webrtcvad.Vad: per-stream handle, use each state once
    buf_start: int = 0
    audio_end: int = 0  # samples received so far
    frames_end: int = 0  # audio classified voiced / unvoiced up to here (10 ms frames)
    vad_open: bool = False  # inside a segment of the upstream VAD
    last_voiced: int = -1  # end sample of the last voiced frame in the VAD segment
    seg_start: int | None = None  # open sub-segment (voiced run inside a VAD segment)
    next_hop: int = 0  # start of the next undecided hop of the open segment
    turn: _Turn | None = None
    closed: tuple[_Closed, ...] = ()
    next_turn: int = 0


def _ro(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    a.flags.writeable = False
    return a


def _unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def init_state(
    config: DiarizerConfig, enrolled: Mapping[str, npt.NDArray[np.floating[Any]]] | None = None
) -> DiarizerState:
    return DiarizerState(
        cluster=init_clusters(config.cluster, enrolled),
        buf=_ro(np.zeros(0, np.float32)),
        activity=webrtcvad.Vad(config.activity_mode),
        vad_open=not config.use_vad_events,
    )


def feed_audio(
    state: DiarizerState, samples: npt.NDArray[np.floating[Any]], start: int, config: DiarizerConfig
) -> DiarizerState:
    """Append 16 kHz mono samples that begin at stream sample ``start``."""
    samples = np.asarray(samples, dtype=np.float32)
    if start > state.audio_end:  # a gap in the stream: fill with silence so times stay exact
        samples = np.concatenate([np.zeros(start - state.audio_end, np.float32), samples])
    elif start < state.audio_end:
        samples = samples[state.audio_end - start :]
    buf = np.concatenate([state.buf, samples])
    end = state.audio_end + len(samples)
    # Keep what a window may still need: the open segment (capped) or the last left+hop+right.
    keep_from = end - _ms(config.left_ms + config.hop_ms + config.right_ms) - _ms(1000)
    if state.seg_start is not None:
        keep_from = min(keep_from, max(state.next_hop - _ms(config.left_ms) - _ms(config.hop_ms), state.seg_start))
    keep_from = max(min(keep_from, state.frames_end), state.buf_start)
    buf = buf[keep_from - state.buf_start :].copy()
    return replace(state, buf=_ro(buf), buf_start=keep_from, audio_end=end)


def speech_start(state: DiarizerState, sample: int) -> DiarizerState:
    """The upstream VAD opened a segment at ``sample``: voiced runs from here on are turns."""
    return replace(state, vad_open=True, last_voiced=-1)


def _open_sub(state: DiarizerState, sample: int) -> DiarizerState:
    sample = max(sample, state.buf_start)
    return replace(state, seg_start=sample, next_hop=sample, turn=None)


def _audio(state: DiarizerState, a: int, b: int) -> npt.NDArray[np.float32]:
    return state.buf[max(a - state.buf_start, 0) : max(b - state.buf_start, 0)]


def _emit(t: _Turn, out: list[TurnUpdate]) -> _Turn:
    rev = t.revision + 1
    out.append(TurnUpdate(t.turn_id, t.start, t.end, t.label or "", rev))
    return replace(t, revision=rev, emitted_label=t.label, emitted_end=t.end)


def _label_turn(state: DiarizerState, t: _Turn, config: DiarizerConfig) -> tuple[_Turn, ClusterState]:
    cl = state.cluster
    mean = _unit(t.vsum)
    if t.own_speaker:
        return t, cl
    label, sim = cl.best(mean)
    if label is not None and cl.matches(label, sim, config.cluster):
        return replace(t, label=label), cl
    full = config.cluster.max_speakers is not None and len(cl.speakers) >= config.cluster.max_speakers
    dur = t.end - t.start
    if label is None or (dur >= _ms(config.new_speaker_ms) and not full):
        secs = dur / SR
        a, cl = assign(cl, mean, config.cluster, weight=secs)
        return replace(t, label=a.label, own_speaker=a.new_speaker, committed=secs), cl
    return replace(t, label=label), cl  # provisional: the nearest voice, until proven new


def _after_hop(state: DiarizerState, t: _Turn, config: DiarizerConfig, out: list[TurnUpdate]) -> DiarizerState:
    t, cl = _label_turn(state, t, config)
    if t.revision < 0 or t.label != t.emitted_label or t.end - t.emitted_end >= _ms(config.update_ms):
        t = _emit(t, out)
    return replace(state, turn=t, cluster=cl)


def _close_turn(state: DiarizerState, config: DiarizerConfig, out: list[TurnUpdate]) -> DiarizerState:
    t = state.turn
    if t is None:
        return state
    cl = state.cluster
    secs = (t.end - t.start) / SR
    if secs - t.committed > 0:
        a, cl = assign(
            cl,
            _unit(t.vsum),
            config.cluster,
            weight=secs - t.committed,
            allow_new=t.end - t.start >= _ms(config.new_speaker_ms),
        )
        if not t.own_speaker:
            t = replace(t, label=a.label)
    if t.revision < 0 or t.label != t.emitted_label or t.end != t.emitted_end:
        t = _emit(t, out)
    closed = state.closed + (_Closed(t.turn_id, t.start, t.end, t.label or "", t.revision),)
    cl, renamed = merge_close(cl, config.cluster)
    if renamed:
        fixed = []
        for c in closed:
            if c.label in renamed:
                c = replace(c, label=renamed[c.label], revision=c.revision + 1)
                out.append(TurnUpdate(c.turn_id, c.start, c.end, c.label, c.revision))
            fixed.append(c)
        closed = tuple(fixed)
    return replace(state, turn=None, cluster=cl, closed=closed[-config.history_turns :])


def _hop(
    state: DiarizerState,
    h: int,
    h_end: int,
    seg_end: int,
    embedder: SpeakerEmbedder,
    config: DiarizerConfig,
    out: list[TurnUpdate],
) -> DiarizerState:
    c = (h + h_end) // 2
    a = max(state.seg_start or 0, c - _ms(config.left_ms))
    b = min(seg_end, c + _ms(config.right_ms))
    window = _audio(state, a, b)
    t = state.turn
    if len(window) < embedder.min_samples:
        if t is not None:  # too little audio to judge: the hop stays with the open turn
            return _after_hop(state, replace(t, end=h_end), config, out)
        return state  # a blip too short to embed opens no turn
    x = embedder.embed(window).astype(np.float64)  # (D,) unit
    # A window clipped by a segment start / end saw less audio: it counts less in the turn's mean.
    xw = x * min(1.0, len(window) / _ms(config.left_ms + config.right_ms)) ** 2
    if t is None:
        t = _Turn(state.next_turn, h, h_end, xw)
        return _after_hop(replace(state, next_turn=state.next_turn + 1), t, config, out)
    sim = float(_unit(t.vsum) @ x)
    other, other_sim = state.cluster.best(x)
    if other is not None and other != t.label and other_sim >= config.cluster.threshold:
        own = state.cluster.speaker(t.label).centroid @ x if t.label in state.cluster.labels else -1.0
        if other_sim > own + config.change_margin:
            sim = -1.0  # the window clearly sounds like another known speaker
    if sim >= config.change_threshold:
        vsum = t.vsum + xw + (t.cand_vsum if t.cand_vsum is not None else 0.0)  # a blip: fold it back
        t = replace(t, end=h_end, vsum=vsum, cand_start=None, cand_vsum=None, cand_count=0)
        return _after_hop(state, t, config, out)
    if t.cand_start is None:
        t = replace(t, end=h_end, cand_start=h, cand_vsum=xw, cand_count=1)
    else:
        assert t.cand_vsum is not None  # set together with cand_start
        t = replace(t, end=h_end, cand_vsum=t.cand_vsum + xw, cand_count=t.cand_count + 1)
    cand_start, cand_vsum = t.cand_start, t.cand_vsum
    assert cand_start is not None and cand_vsum is not None  # both branches set them
    if t.cand_count < config.change_hops:
        return _after_hop(state, t, config, out)
    cand_label, cand_sim = state.cluster.best(cand_vsum)
    if cand_label is not None and cand_label == t.label and cand_sim >= config.cluster.threshold:
        # The windows drifted from the turn's early mean but still sound like its speaker
        # (e.g. the short clipped windows at a segment start): no change, fold them in.
        t = replace(t, vsum=t.vsum + cand_vsum, cand_start=None, cand_vsum=None, cand_count=0)
        return _after_hop(state, t, config, out)
    # A speaker change inside the segment: the old turn ends where the deviation began.
    new = _Turn(state.next_turn, cand_start, h_end, cand_vsum)
    old = replace(t, end=cand_start, cand_start=None, cand_vsum=None, cand_count=0)
    state = _close_turn(replace(state, turn=old), config, out)
    return _after_hop(replace(state, next_turn=state.next_turn + 1), new, config, out)


def _decide_hops(
    state: DiarizerState, embedder: SpeakerEmbedder, config: DiarizerConfig, out: list[TurnUpdate]
) -> DiarizerState:
    hop = _ms(config.hop_ms)
    while state.seg_start is not None:
        h = state.next_hop
        if (h + hop // 2) + _ms(config.right_ms) > state.frames_end:
            break
        state = _hop(state, h, h + hop, state.frames_end, embedder, config, out)
        state = replace(state, next_hop=h + hop)
    return state


def _end_sub(
    state: DiarizerState, end: int, embedder: SpeakerEmbedder, config: DiarizerConfig, out: list[TurnUpdate]
) -> DiarizerState:
    """Close the open sub-segment at ``end``: decide its last hops, close its turn."""
    if state.seg_start is None:
        return state
    hop = _ms(config.hop_ms)
    while state.next_hop < end:
        h = state.next_hop
        state = _hop(state, h, min(h + hop, end), end, embedder, config, out)
        state = replace(state, next_hop=h + hop)
    state = _close_turn(state, config, out)
    return replace(state, seg_start=None)


def decide(
    state: DiarizerState, embedder: SpeakerEmbedder, config: DiarizerConfig
) -> tuple[list[TurnUpdate], DiarizerState]:
    """Classify the new 10 ms frames, open / close sub-segments at voiced runs and pauses, and
    label every hop whose lookahead has arrived."""
    out: list[TurnUpdate] = []
    pad, pause = _ms(config.pad_ms), _ms(config.pause_ms)
    f = state.frames_end
    while f + FRAME <= state.audio_end:
        if state.vad_open:
            pcm = (np.clip(_audio(state, f, f + FRAME), -1, 1) * 32767).astype("<i2").tobytes()
            if state.activity.is_speech(pcm, SR):
                if state.seg_start is None:
                    state = replace(state, frames_end=f)
                    state = _open_sub(state, max(f - pad, state.last_voiced))
                state = replace(state, last_voiced=f + FRAME)
            elif state.seg_start is not None and f + FRAME - state.last_voiced >= pause:
                state = replace(state, frames_end=f + FRAME)
                state = _end_sub(state, min(state.last_voiced + pad, f + FRAME), embedder, config, out)
        f += FRAME
        state = replace(state, frames_end=f)
        if state.seg_start is not None and (f - state.next_hop) >= _ms(config.hop_ms // 2 + config.right_ms):
            state = _decide_hops(state, embedder, config, out)
    return out, state


def speech_end(
    state: DiarizerState, sample: int, embedder: SpeakerEmbedder, config: DiarizerConfig
) -> tuple[list[TurnUpdate], DiarizerState]:
    """The upstream VAD closed its segment at ``sample``: close the open turn there."""
    out, state = decide(state, embedder, config)
    if state.seg_start is not None:
        end = min(sample, state.audio_end, state.last_voiced + _ms(config.pad_ms))
        state = _end_sub(state, max(end, state.seg_start), embedder, config, out)
    return out, replace(state, vad_open=False)


def flush(
    state: DiarizerState, embedder: SpeakerEmbedder, config: DiarizerConfig
) -> tuple[list[TurnUpdate], DiarizerState]:
    """End of input: close an open segment at the last sample received."""
    return speech_end(state, state.audio_end, embedder, config)
