"""Online clustering on constructed embeddings: new / returning speaker, revision, limits."""

import numpy as np
import pytest

from engines.speakers.clustering import ClusterConfig, assign, cosine, init_state, merge_close

D = 64


def voices(n: int, seed: int = 0) -> np.ndarray:
    """n mutually orthogonal unit directions (cosine 0 between voices)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((D, n)))
    return q.T  # (n, D)


def near(v: np.ndarray, rng: np.random.Generator, noise: float = 0.15) -> np.ndarray:
    x = v + noise * rng.standard_normal(D) / np.sqrt(D)
    return x / np.linalg.norm(x)


def run(cfg, seq, state=None, enrolled=None):
    state = state or init_state(cfg, enrolled)
    out = []
    for i, e in enumerate(seq):
        a, state = assign(state, e, cfg, item_id=i)
        out.append(a)
    return out, state


def test_new_and_returning_speaker():
    rng = np.random.default_rng(1)
    a, b = voices(2)
    cfg = ClusterConfig(threshold=0.7, confirm=1)
    seq = [near(a, rng), near(a, rng), near(b, rng), near(b, rng), near(a, rng)]
    out, state = run(cfg, seq)
    assert [x.label for x in out] == ["S1", "S1", "S2", "S2", "S1"]
    assert [x.new_speaker for x in out] == [True, False, True, False, False]
    assert state.labels == ("S1", "S2")
    assert out[4].similarity > 0.9


def test_new_speaker_needs_confirmation_and_revises_earlier_items():
    rng = np.random.default_rng(2)
    a, b = voices(2)
    cfg = ClusterConfig(threshold=0.7, confirm=2)
    out, state = run(cfg, [near(a, rng), near(b, rng), near(b, rng)])
    assert out[1].label == "S1" and out[1].provisional  # one window is not a new voice yet
    assert out[2].label == "S2" and out[2].new_speaker
    assert out[2].relabels == ((1, "S2"),)  # the provisional item is revised, not left silent


def test_single_outlier_does_not_create_a_speaker():
    rng = np.random.default_rng(3)
    a, b, c = voices(3)
    cfg = ClusterConfig(threshold=0.7, confirm=2)
    out, state = run(cfg, [near(a, rng), near(b, rng), near(c, rng), near(a, rng)])
    assert state.labels == ("S1",)
    assert all(x.relabels == () for x in out)


def test_max_speakers_forces_nearest():
    rng = np.random.default_rng(4)
    a, b, c = voices(3)
    c_like_b = near(0.6 * b + 0.4 * c, rng, 0.0)
    cfg = ClusterConfig(threshold=0.9, confirm=1, max_speakers=2)
    out, state = run(cfg, [near(a, rng), near(b, rng), c_like_b])
    assert state.labels == ("S1", "S2")
    assert out[2].label == "S2" and out[2].forced


def test_memory_forgets_stalest_anonymous_and_never_reuses_labels():
    rng = np.random.default_rng(5)
    vs = voices(4)
    cfg = ClusterConfig(threshold=0.7, confirm=1, memory=2)
    out, state = run(cfg, [near(vs[0], rng), near(vs[1], rng), near(vs[1], rng), near(vs[2], rng)])
    assert out[3].label == "S3" and out[3].forgotten == ("S1",)
    assert state.labels == ("S2", "S3")
    out, state = run(cfg, [near(vs[0], rng)], state=state)
    assert out[0].label == "S4"  # S1 was forgotten; its label is not recycled


def test_centroid_follows_a_drifting_voice_with_bounded_weight():
    a, b = voices(2)
    cfg = ClusterConfig(threshold=0.5, confirm=1, max_weight=5)
    seq = [np.cos(t) * a + np.sin(t) * b for t in np.linspace(0, 0.9, 40)]
    out, state = run(cfg, seq)
    assert {x.label for x in out} == {"S1"}
    s1 = state.speaker("S1")
    assert s1.weight <= 5 + 1e-9
    assert cosine(s1.centroid, seq[-1]) > 0.97  # tracks the recent voice, not the first one


def test_enrolled_names_and_anonymous_labels():
    rng = np.random.default_rng(6)
    a, b, c = voices(3)
    cfg = ClusterConfig(threshold=0.7, confirm=1)
    out, state = run(cfg, [near(b, rng), near(c, rng), near(a, rng)], enrolled={"alice": a, "bob": b})
    assert [x.label for x in out] == ["bob", "S1", "alice"]


def test_merge_close_renames_the_younger_anonymous_speaker():
    rng = np.random.default_rng(7)
    a, b = voices(2)
    cfg = ClusterConfig(threshold=0.95, confirm=1, merge_threshold=0.8)
    # two noisy views of one voice, far enough apart to open two clusters at threshold 0.95
    x1 = near(0.95 * a + 0.31 * b, rng, 0.0)
    x2 = near(0.95 * a - 0.31 * b, rng, 0.0)
    out, state = run(cfg, [x1, x2])
    assert state.labels == ("S1", "S2")
    state, renamed = merge_close(state, cfg)
    assert renamed == {"S2": "S1"} and state.labels == ("S1",)
    assert merge_close(state, cfg)[1] == {}


def test_bad_inputs_raise():
    cfg = ClusterConfig()
    with pytest.raises(ValueError, match="zero"):
        assign(init_state(cfg), np.zeros(D), cfg)
    with pytest.raises(ValueError, match="max.speakers"):
        init_state(ClusterConfig(max_speakers=1), {"a": np.ones(D), "b": -np.ones(D)})
    with pytest.raises(ValueError, match="threshold"):
        ClusterConfig(threshold=2.0)


def test_public_names():
    import engines.speakers as sp

    assert sorted(sp.__all__) == sorted(n for n in sp.__all__ if hasattr(sp, n))
    assert {"SpeakerEmbedder", "ClusterConfig", "assign", "enroll", "DiarizerConfig", "load_embedder"} <= set(
        sp.__all__
    )


def test_enrolled_voices_match_at_a_lower_bar():
    a, b, c = voices(3)
    x = 0.7 * a + np.sqrt(1 - 0.49) * b  # cosine 0.7 to a
    cfg = ClusterConfig(threshold=0.75, enrolled_threshold=0.65, confirm=1)
    got, _ = assign(init_state(cfg, {"alice": a}), x, cfg)
    assert got.label == "alice" and not got.new_speaker
    anon = init_state(cfg)
    _, anon = assign(anon, a, cfg)  # S1 built from the stream, not enrolled
    got, _ = assign(anon, x, cfg)
    assert got.label == "S2" and got.new_speaker
