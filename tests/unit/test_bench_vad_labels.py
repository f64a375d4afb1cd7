"""bench/bench_vad_labels.py: the comparison of energy pause labels with Whisper's words, on constructed labels
(10 ms frames) and word lists; and the clear exit when the teacher is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from bench import bench_vad_labels as bl


def frames(*runs: tuple[bool, int]) -> np.ndarray:
    """Labels from (speech?, ms) runs."""
    return np.concatenate([np.full(ms // 10, v, bool) for v, ms in runs])


def flat(pairs: list[tuple[float, float]]) -> list[float]:
    return [v for p in pairs for v in p]


# speech 100-400 ms, a 250 ms pause, speech 650-900 ms, a 150 ms silence, speech 1050-1300 ms
LABELS = frames((False, 100), (True, 300), (False, 250), (True, 250), (False, 150), (True, 250), (False, 200))


def test_label_pauses_are_inner_silences_of_200_ms_or_more():
    assert flat(bl.label_pauses(LABELS)) == pytest.approx([0.40, 0.65])
    assert flat(bl.label_pauses(LABELS, min_ms=150)) == pytest.approx([0.40, 0.65, 0.90, 1.05])
    assert bl.speech_span(LABELS) == pytest.approx((0.10, 1.30))
    assert bl.speech_span(np.zeros(20, bool)) is None
    # leading and trailing silence are silences, not pauses
    assert bl.silences(LABELS)[0] == pytest.approx((0.0, 0.10))
    assert bl.silences(LABELS)[-1] == pytest.approx((1.30, 1.50))


@pytest.mark.parametrize(
    ("next_start", "tol", "between"),
    [
        (0.65, 0.06, True),  # the word starts where the pause ends
        (0.60, 0.06, True),  # 50 ms early: inside the tolerance
        (0.58, 0.06, False),  # 70 ms early: over the middle
        (0.58, 0.10, True),  # the same with 100 ms of tolerance
        (0.45, 0.06, False),
    ],
)
def test_a_pause_is_between_words_unless_a_word_reaches_its_middle(next_start, tol, between):
    words = [(0.10, 0.40, "one"), (next_start, 0.90, "two")]
    (c,) = bl.check_pauses(bl.label_pauses(LABELS), words, tol)
    assert c.between is between
    assert c.before == words[0]
    if between:
        assert c.over == () and c.after == words[1]
    else:
        assert c.over == (words[1],) and c.after is None
    assert c.free_s == pytest.approx(min(next_start, 0.65) - 0.40)


def test_a_word_stretched_over_the_whole_pause():
    words = [(0.10, 0.30, "so"), (0.30, 0.70, "then"), (0.70, 0.90, "went")]
    (c,) = bl.check_pauses([(0.40, 0.65)], words, 0.06)
    assert not c.between and c.over == (words[1],)
    assert c.before == words[0] and c.after == words[2]
    assert c.free_s == 0.0
    # a pause too short for two tolerances is judged at its midpoint
    (c,) = bl.check_pauses([(0.40, 0.50)], [(0.10, 0.44, "a"), (0.46, 0.9, "b")], 0.06)
    assert c.between
    (c,) = bl.check_pauses([(0.40, 0.50)], [(0.10, 0.46, "a"), (0.46, 0.9, "b")], 0.06)
    assert not c.between


def test_word_free_stretch():
    assert bl.word_free(0.0, 1.0, []) == pytest.approx(1.0)
    assert bl.word_free(0.0, 1.0, [(0.2, 0.3, "a"), (0.5, 0.6, "b")]) == pytest.approx(0.4)
    assert bl.word_free(0.0, 1.0, [(-1.0, 2.0, "a")]) == 0.0
    assert bl.word_free(0.4, 0.65, [(0.1, 0.45, "a"), (0.6, 0.9, "b"), (2.0, 3.0, "c")]) == pytest.approx(0.15)


def test_whisper_gaps_against_the_labels():
    raw = frames((False, 100), (True, 300), (False, 250), (True, 250), (False, 150), (True, 250), (False, 200))
    words = [
        (0.10, 0.42, "one"),
        (0.62, 0.90, "two"),  # a 200 ms gap over the labelled pause
        (1.10, 1.30, "three"),  # a 200 ms gap where the labels have only a 150 ms silence
        (1.35, 1.45, "four"),  # 50 ms: not a gap
    ]
    assert [(p[2], n[2]) for p, n in bl.word_gaps(words)] == [("one", "two"), ("two", "three")]
    assert len(bl.word_gaps([(0.0, 0.1, "a"), (0.3, 0.5, "b")])) == 1  # 0.3 - 0.1 < 0.2 in floats
    g = bl.check_gaps(words, bl.label_pauses(LABELS), 0.06, bl.silences(raw))
    assert [x.found for x in g] == [True, False]
    assert g[1].longest_silence_s == pytest.approx(0.15)
    assert g[0].longest_silence_s == pytest.approx(0.25)
    assert bl.check_gaps(words, [], 0.06)[0].longest_silence_s == 0.0


def test_edge_differences():
    assert bl.edge_diffs(LABELS, [(0.0, 0.5, "a"), (0.6, 1.2, "b")]) == pytest.approx((0.10, 0.10))
    assert bl.edge_diffs(LABELS, []) is None
    assert bl.edge_diffs(np.zeros(10, bool), [(0.0, 0.5, "a")]) is None


def test_transcript_changes():
    words = [(0.0, 0.1, "The"), (0.1, 0.5, "chapel,"), (0.5, 0.8, "isn't"), (0.8, 0.9, "here.")]
    assert bl.norm_words(words) == ["the", "chapel", "isn't", "here"]
    assert bl.changes(words, words) == []
    # punctuation and case are not changes; a word-less token is left out
    assert bl.changes(words, [(0.0, 0.1, "the"), (0.1, 0.4, "Chapel"), (0.4, 0.45, "--"), *words[2:]]) == []
    assert bl.changes(words, [words[0], words[1], words[3]]) == [([words[2]], [])]
    other = [(0.0, 0.1, "A"), *words[1:], (1.0, 1.2, "now")]
    assert bl.changes(words, other) == [([words[0]], [other[0]]), ([], [other[-1]])]


def test_a_missing_teacher_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.delenv("TEACHER_PYTHON", raising=False)
    with pytest.raises(SystemExit, match=r"python -m examples\.train\.teacher install"):
        bl.main(["--teacher-dir", str(tmp_path / "none")])
    # a venv without the model is not a teacher either
    (tmp_path / "t" / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "t" / "venv" / "bin" / "python").write_text("")
    with pytest.raises(SystemExit, match="not installed"):
        bl.find_teacher(tmp_path / "t")


def test_control_spans_lie_inside_speech():
    # speech runs: 100-400 (300 ms), 650-900 (250 ms), 1050-1300 (250 ms)
    spans = bl.control_spans(LABELS, [0.25, 0.2])
    # the longest length to the longest run, the next to the longest run left (the later of two equal ones)
    assert flat(spans) == pytest.approx([0.125, 0.375, 1.075, 1.275])
    for a, b in spans:
        assert LABELS[int(round(a / 0.01)) : int(round(b / 0.01))].all()
    assert bl.control_spans(LABELS, [0.5]) == []  # no speech run holds it
    assert len(bl.control_spans(LABELS, [0.1] * 5)) == 3  # one per run
