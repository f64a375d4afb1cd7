"""engines.ctc: streaming greedy decoding, partial/final semantics, endpoint rules, bounded state."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engines.ctc import EndpointConfig, SegmentUpdate, StreamingCTCDecoder, greedy_decode
from engines.errors import StreamUsageError, UnsupportedConfigError
from engines.tokenizer import CTCTokenizer, WordSpan

LABELS = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "R", "S"]
TOK = CTCTokenizer(labels=tuple(LABELS))
B, D = 0, 4  # blank, word delimiter
ID = {c: i for i, c in enumerate(LABELS)}


def logits_of(ids: list[int], seed: int = 0) -> np.ndarray:
    """(T, V) logits whose argmax is ``ids``, with some noise so softmax is not trivially one-hot."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=(len(ids), len(LABELS))).astype(np.float32)
    x[np.arange(len(ids)), ids] = 8.0
    return x


def frames_of(text: str, frames_per_char: int = 2, gap: int = 1) -> list[int]:
    """Frame ids spelling ``text`` (spaces -> delimiter), each char held, blanks between chars."""
    out: list[int] = []
    for ch in text:
        out += [D if ch == " " else ID[ch]] * frames_per_char + [B] * gap
    return out


def run(dec: StreamingCTCDecoder, ids: list[int], chunk: int, flush: bool = True) -> list[SegmentUpdate]:
    x = logits_of(ids)
    state = dec.init_state()
    ups: list[SegmentUpdate] = []
    for s in range(0, len(ids), chunk):
        u, state = dec.step(x[s : s + chunk], s, state)
        ups += u
    if flush:
        u, state = dec.flush(state)
        ups += u
    return ups


def check_semantics(ups: list[SegmentUpdate]) -> None:
    """Revisions 0,1,.. per segment; one final per segment, last, with revision = last partial + 1."""
    seen_final: set[int] = set()
    last_rev: dict[int, int] = {}
    order: list[int] = []
    for u in ups:
        assert u.index not in seen_final, f"update after final of segment {u.index}"
        assert u.revision == last_rev.get(u.index, -1) + 1
        last_rev[u.index] = u.revision
        if u.index not in order:
            order.append(u.index)
        if u.is_final:
            seen_final.add(u.index)
            assert u.reason in ("vad", "silence", "max_length", "eos")
    assert order == list(range(len(order)))
    assert seen_final == set(order), "every segment gets a final"


def test_partials_then_final_with_revisions_and_frame_exact_timestamps() -> None:
    dec = StreamingCTCDecoder(TOK, samples_per_frame=320, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=200))
    ids = (
        [B] * 3 + [ID["H"], ID["H"], B, ID["I"], D, D, B, ID["T"], ID["H"], B, ID["E"]] + [B] * 10 + [ID["O"]] + [B] * 3
    )
    ups = run(dec, ids, chunk=4)
    check_semantics(ups)
    seg0 = [u for u in ups if u.index == 0]
    assert [u.is_final for u in seg0] == [False] * (len(seg0) - 1) + [True]
    final = seg0[-1]
    assert final.text == "HI THE" and final.reason == "silence"
    assert final.revision == seg0[-2].revision + 1
    # H: frames 3-4, I: frame 6 -> "HI" = [3, 7); T frame 10, H 11, E 13 -> "THE" = [10, 14)
    assert [(w.text, w.start_sample, w.end_sample) for w in final.words] == [
        ("HI", 3 * 320, 7 * 320),
        ("THE", 10 * 320, 14 * 320),
    ]
    assert (final.start_sample, final.end_sample) == (3 * 320, 14 * 320)
    # rule 2 at 200 ms = 10 frames of trailing silence after frame 13 -> closed at frame 24
    assert final.endpoint_sample == 24 * 320
    assert all(0.0 < w.confidence <= 1.0 for w in final.words)
    seg1 = [u for u in ups if u.index == 1]
    assert seg1[-1].is_final and seg1[-1].text == "O" and seg1[-1].reason == "eos"
    assert seg1[-1].words[0].start_sample == 24 * 320


@pytest.mark.parametrize("spf", [320, 640])
def test_timestamps_follow_samples_per_frame_and_offset(spf: int) -> None:
    dec = StreamingCTCDecoder(TOK, samples_per_frame=spf, sample_offset=1000)
    ids = [B] * 5 + [ID["A"]] * 3 + [B] * 2 + [ID["N"]]
    (final,) = [u for u in run(dec, ids, chunk=100) if u.is_final]
    assert final.words[0].start_sample == 1000 + 5 * spf and final.words[0].end_sample == 1000 + 11 * spf


def _speechlike(n_utts: int, seed: int, pause: tuple[int, int] = (5, 90)) -> list[int]:
    rng = np.random.default_rng(seed)
    words = ["HE", "SAT", "ON", "THE", "TREE", "IN", "RAIN", "AT", "NOON", "ARE", "SHE"]
    ids: list[int] = []
    for _ in range(n_utts):
        text = " ".join(rng.choice(words, size=int(rng.integers(1, 6))))
        ids += frames_of(text + " ", frames_per_char=int(rng.integers(1, 4)), gap=int(rng.integers(1, 3)))
        ids += [B] * int(rng.integers(*pause))
    return ids


@pytest.mark.parametrize("chunk", [1, 7, 25, 10_000])
def test_finals_do_not_depend_on_chunking_and_equal_offline_greedy(chunk: int) -> None:
    dec = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=1000))
    ids = _speechlike(12, seed=3)
    ups = run(dec, ids, chunk)
    check_semantics(ups)
    finals = [u for u in ups if u.is_final]
    reference = [u for u in run(dec, ids, 10_000) if u.is_final]
    assert [replace(u, revision=0) for u in finals] == [replace(u, revision=0) for u in reference]
    assert " ".join(u.text for u in finals) == greedy_decode(TOK, logits_of(ids))
    # pauses > 50 frames are endpoints, shorter ones are not
    assert 1 < len(finals) < 12
    # the last partial of a segment equals its greedy final
    for f in finals:
        partials = [u for u in ups if u.index == f.index and not u.is_final]
        if partials:
            assert partials[-1].text == f.text


def test_rule1_long_silence_without_speech_emits_nothing_and_resets() -> None:
    dec = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(rule1_min_trailing_silence_ms=1000))
    x = logits_of([B] * 49)
    ups, st = dec.step(x, 0, dec.init_state())
    assert ups == () and st.seg_start == 0
    ups, st = dec.step(logits_of([B]), 49, st)
    assert ups == () and st.seg_start == 50 and st.trailing == 0
    # delimiter frames count as silence too
    ups, st = dec.step(logits_of([D] * 50), 50, st)
    assert ups == () and st.seg_start == 100


def test_rule2_trailing_silence_after_speech_exact_frame() -> None:
    dec = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=300))  # 15 frames
    ids = [ID["A"], ID["T"]] + [B] * 14
    ups, st = dec.step(logits_of(ids), 0, dec.init_state())
    assert [u.is_final for u in ups] == [False]
    ups, st = dec.step(logits_of([B, B]), 16, st)
    assert len(ups) == 1 and ups[0].is_final and ups[0].reason == "silence"
    assert ups[0].endpoint_sample == 17 * 320 and ups[0].text == "AT"
    assert st.seg_start == 17 and st.spans == ()


def test_rule3_max_utterance_cuts_before_the_open_word() -> None:
    dec = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(max_utterance_ms=1000))  # 50 frames
    ids = frames_of("THE RAIN IN THE TREE HE SAT ON THE TREE", frames_per_char=1, gap=1)
    ups = run(dec, ids, chunk=10)
    check_semantics(ups)
    finals = [u for u in ups if u.is_final]
    assert len(finals) >= 2
    assert [f.reason for f in finals[:-1]] == ["max_length"] * (len(finals) - 1)
    # no word is split: the segments' words concatenate to the sentence
    assert " ".join(f.text for f in finals) == "THE RAIN IN THE TREE HE SAT ON THE TREE"
    for f in finals[:-1]:
        assert f.endpoint_sample - (f.words[0].start_sample // 320) * 320 <= 50 * 320


def test_vad_endpoint_pending_and_past() -> None:
    dec = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=None))
    st = dec.init_state()
    ups, st = dec.step(logits_of([ID["H"], ID["E"], B, B]), 0, st)
    # VAD says speech ended at sample 5*320+1 -> frames 0..5 belong to the segment, cut at frame 6
    ups, st = dec.request_endpoint(st, 5 * 320 + 1)
    assert ups == () and st.pending_cuts == (6,)
    ups, st = dec.step(logits_of([B, B, ID["A"], ID["T"]]), 4, st)
    finals = [u for u in ups if u.is_final]
    assert len(finals) == 1 and finals[0].text == "HE" and finals[0].reason == "vad"
    assert finals[0].endpoint_sample == 6 * 320
    assert [u.text for u in ups if not u.is_final][-1] == "AT" and ups[-1].index == 1
    # a cut already behind the decoder closes at once
    ups, st = dec.request_endpoint(st, 7 * 320)
    assert len(ups) == 1 and ups[0].is_final and ups[0].text == "AT" and ups[0].endpoint_sample == 8 * 320
    # and a second request for a closed segment does nothing
    assert dec.request_endpoint(st, 7 * 320) == ((), st)


def test_flush_closes_with_eos_and_empty_flush_is_silent() -> None:
    dec = StreamingCTCDecoder(TOK)
    assert dec.flush(dec.init_state())[0] == ()
    ups, st = dec.step(logits_of([ID["N"], ID["O"]]), 0, dec.init_state())
    ups, st = dec.flush(st)
    assert len(ups) == 1 and ups[0].is_final and ups[0].reason == "eos" and ups[0].text == "NO"
    assert ups[0].revision == 1
    assert dec.flush(st)[0] == ()


def test_unchanged_partials_are_skipped_unless_asked() -> None:
    ids = [ID["A"]] + [B] * 9
    quiet = StreamingCTCDecoder(TOK)
    loud = StreamingCTCDecoder(TOK, emit_unchanged_partials=True)
    assert len([u for u in run(quiet, ids, 2, flush=False)]) == 1
    assert len([u for u in run(loud, ids, 2, flush=False)]) == 5


def test_state_is_bounded_on_a_very_long_stream() -> None:
    """One hour of frames (180k at 20 ms) with and without pauses: state size never grows."""

    class Echo:  # a re-decoder forces the decoder to keep the segment's log-probs
        def decode_segment(self, lp: np.ndarray) -> tuple[str, tuple[WordSpan, ...]]:
            return "X", (WordSpan("X", 0, lp.shape[0]),)

    cfg = EndpointConfig(max_utterance_ms=4000)  # 200 frames
    dec = StreamingCTCDecoder(TOK, endpoint=cfg, final_decoder=Echo())
    block = np.concatenate([logits_of(frames_of("THE RAIN IN THE TREE " * 8)), logits_of(_speechlike(20, 1))])
    st = dec.init_state()
    frame, finals, peak_spans, peak_lp = 0, 0, 0, 0
    while frame < 180_000:
        for s in range(0, block.shape[0], 25):
            x = block[s : s + 25]
            ups, st = dec.step(x, frame, st)
            frame += x.shape[0]
            finals += sum(u.is_final for u in ups)
            peak_spans = max(peak_spans, len(st.spans))
            peak_lp = max(peak_lp, sum(a.shape[0] for a in st.log_probs))
            assert len(st.log_probs) <= 1 and len(st.pending_cuts) == 0
    assert finals > 500
    assert peak_lp <= 200 + 25 and peak_spans <= 200
    assert st.frame == frame


def test_final_decoder_words_are_placed_in_stream_frames() -> None:
    class Fixed:
        def decode_segment(self, lp: np.ndarray) -> tuple[str, tuple[WordSpan, ...]]:
            return "THERE", (WordSpan("THERE", 1, 3),)

    dec = StreamingCTCDecoder(TOK, final_decoder=Fixed(), endpoint=EndpointConfig(rule2_min_trailing_silence_ms=100))
    ids = [ID["T"]] * 30 + [B] * 5 + [ID["H"], ID["E"]] + [B] * 5
    ups = run(dec, ids, chunk=8)
    check_semantics(ups)
    f = [u for u in ups if u.is_final][1]
    assert f.text == "THERE" and f.words[0].start_sample == (35 + 1) * 320 and f.words[0].end_sample == (35 + 3) * 320


def test_misuse_is_refused() -> None:
    dec = StreamingCTCDecoder(TOK)
    st = dec.init_state()
    with pytest.raises(StreamUsageError, match="contiguous"):
        dec.step(logits_of([B]), 3, st)
    with pytest.raises(StreamUsageError, match="labels"):
        dec.step(np.zeros((2, 5), np.float32), 0, st)
    with pytest.raises(UnsupportedConfigError, match="max_utterance_ms"):
        EndpointConfig(max_utterance_ms=0)
    with pytest.raises(UnsupportedConfigError, match="rule2"):
        EndpointConfig(rule2_min_trailing_silence_ms=-5)


def test_vad_cut_at_a_chunk_boundary_closes_without_waiting_for_the_next_chunk() -> None:
    dec = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=None))
    ups, st = dec.step(logits_of([ID["N"], ID["O"], B, B]), 0, dec.init_state())
    ups, st = dec.request_endpoint(st, 8 * 320)  # speech ends where the next chunk ends
    assert ups == ()
    ups, st = dec.step(logits_of([B, B, B, B]), 4, st)
    assert [(u.is_final, u.reason, u.endpoint_sample) for u in ups] == [(True, "vad", 8 * 320)]
    assert st.pending_cuts == () and st.seg_start == 8


def test_final_and_partial_text_is_single_spaced_and_trimmed() -> None:
    """Greedy text with a doubled word delimiter ("A AS  NOG") comes out single-spaced."""
    dec = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=None))
    ids = [D, B, ID["A"], D, ID["A"], ID["S"], D, B, D, ID["N"], ID["O"], B, D, B]
    ups = run(dec, ids, chunk=4)
    assert ups and all(u.text == " ".join(u.text.split()) for u in ups)
    assert [u.text for u in ups if u.is_final] == ["A AS NO"]


def spell(words_and_gaps: list[tuple[str, int]]) -> list[int]:
    """Frame ids: each word's letters one frame apart (blank between), a delimiter, then ``gap`` blanks."""
    out: list[int] = []
    for word, gap in words_and_gaps:
        for ch in word:
            out += [ID[ch], B]
        out += [D] + [B] * gap
    return out


def test_max_length_cuts_at_the_longest_pause_in_its_last_seconds() -> None:
    """Rule 3 cuts in the longest word gap of the segment's last second, not just before the open word."""
    dec = StreamingCTCDecoder(
        TOK, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=None, max_utterance_ms=2000)
    )  # 100 frames
    ids = spell(
        [
            ("THE", 2),
            ("RAIN", 2),
            ("IN", 2),
            ("THE", 2),
            ("TREE", 2),
            ("HE", 2),
            ("SAT", 2),
            ("ON", 12),
            ("THE", 2),
            ("STAIR", 2),
            ("AT", 2),
            ("NOON", 2),
            ("TO", 40),
        ]
    )
    ups = run(dec, ids, chunk=7)
    check_semantics(ups)
    finals = [u for u in ups if u.is_final]
    assert finals[0].reason == "max_length"
    assert finals[0].text == "THE RAIN IN THE TREE HE SAT ON", finals[0].text  # the 12-frame pause, not before "STAIR"
    assert " ".join(f.text for f in finals) == "THE RAIN IN THE TREE HE SAT ON THE STAIR AT NOON TO"


def test_max_length_never_cuts_inside_a_word() -> None:
    """A word still open at the maximum length (no earlier word boundary) is waited for, then cut after it."""
    dec = StreamingCTCDecoder(
        TOK, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=None, max_utterance_ms=1000)
    )  # 50 frames
    long_word = "TATATATATATATATATATATATATATATA"  # 60 frames with its blanks
    ids = spell([(long_word, 3), ("NO", 30)])
    ups = run(dec, ids, chunk=5)
    check_semantics(ups)
    finals = [u for u in ups if u.is_final]
    assert [f.text for f in finals] == [long_word, "NO"]
    assert finals[0].reason == "max_length"


def test_vad_endpoint_with_lookahead_frames_closes_now_and_skips_them_when_they_come_again() -> None:
    """The recogniser peeks at frames its engine still buffers: the final comes at once, and the same
    frames sent again later are skipped, so the finals equal those of a decoder that waited."""
    dec = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=None))
    ids = spell([("THE", 1), ("RAIN", 8), ("HE", 1), ("SAT", 20)])
    x = logits_of(ids)
    cut = 21 * 320  # after "RAIN" and 3 blanks, inside the 8-frame pause
    # reference: the cut waits for frames in order
    ref_st = dec.init_state()
    ref: list[SegmentUpdate] = []
    u, ref_st = dec.step(x[:16], 0, ref_st)
    ref += u
    u, ref_st = dec.request_endpoint(ref_st, cut)
    ref += u
    u, ref_st = dec.step(x[16:32], 16, ref_st)
    ref += u
    u, ref_st = dec.step(x[32:], 32, ref_st)
    ref += u
    ref += dec.flush(ref_st)[0]
    # peek: frames 16..24 are known now (the engine's buffered audio), sent again later as 16..32
    st = dec.init_state()
    ups, st = dec.step(x[:16], 0, st)
    now, st = dec.request_endpoint(st, cut, lookahead=(x[16:24], 16))
    assert [(f.text, f.reason, f.endpoint_sample) for f in now if f.is_final] == [("THE RAIN", "vad", cut)]
    later, st = dec.step(x[16:32], 16, st)
    assert not [u for u in later if u.is_final]
    later2, st = dec.step(x[32:], 32, st)
    fin = dec.flush(st)[0]
    got = [u for u in (*ups, *now, *later, *later2, *fin) if u.is_final]
    assert [(f.text, f.endpoint_sample, f.words) for f in got] == [
        (f.text, f.endpoint_sample, f.words) for f in ref if f.is_final
    ]
    with pytest.raises(StreamUsageError):  # frames before the peeked ones are still refused
        dec.step(x[10:20], 10, st)


def test_vad_cut_inside_a_word_waits_for_the_word_to_end() -> None:
    """A VAD end that falls between two letters of one word (a stop closure) closes after the word."""
    dec = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=None))
    ids = [ID["S"], B, ID["T"], B, B, B, ID["O"], B, ID["R"], D, B, B, B, B, B, B, ID["N"], ID["O"], D, B, B]
    st = dec.init_state()
    ups, st = dec.step(logits_of(ids[:3]), 0, st)
    ups, st = dec.request_endpoint(st, 4 * 320)  # the VAD thinks speech ended inside "STOR"
    u2, st = dec.step(logits_of(ids[3:]), 3, st)
    finals = [u for u in ups + u2 if u.is_final]
    assert [f.text for f in finals] == ["STOR"] and finals[0].reason == "vad"
    assert 9 * 320 <= finals[0].endpoint_sample <= 16 * 320


def test_peeked_cut_just_past_the_engines_last_frame_closes_on_that_frame() -> None:
    """The engine's last frame or two need audio beyond its input (the frontend's window): a VAD cut
    up to 80 ms past the peeked frames closes now, on the last peeked frame; further, it waits."""
    dec = StreamingCTCDecoder(TOK, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=None))
    x = logits_of(spell([("NO", 12)]))
    st = dec.init_state()
    _, st = dec.step(x[:4], 0, st)
    now, st2 = dec.request_endpoint(st, 12 * 320, lookahead=(x[4:10], 4))  # peeked frames end at 10, cut at 12
    assert [(u.text, u.endpoint_sample) for u in now if u.is_final] == [("NO", 10 * 320)]
    later, st3 = dec.request_endpoint(st, 16 * 320, lookahead=(x[4:10], 4))  # 120 ms past: pending
    assert not [u for u in later if u.is_final] and st3.pending_cuts == (16,)
