"""engines.lm (pyctcdecode + KenLM beam search) and examples.lm.lm_build (Kneser-Ney ARPA writer)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engines.ctc import EndpointConfig, StreamingCTCDecoder
from engines.errors import CheckpointError
from engines.lm import BeamDecoder, LMConfig, read_arpa_unigrams
from engines.tokenizer import CTCTokenizer
from examples.lm.lm_build import build_arpa, write_arpa
from examples.lm.lm_build import main as lm_build_main

kenlm = pytest.importorskip("kenlm")

LABELS = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
TOK = CTCTokenizer(labels=tuple(LABELS))
ID = {c: i for i, c in enumerate(LABELS)}
TEXT = [
    "THE MEN RAN IN THE RAIN",
    "TEN MEN SAT ON THE MAT",
    "I SAW TEN CATS",
    "TEN DOGS RAN",
    "THE DOG SAT IN THE RAIN",
    "WE HAVE TEN",
] * 5


@pytest.fixture(scope="module")
def arpa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    probs, backoffs = build_arpa([s.split() for s in TEXT], order=3)
    return write_arpa(probs, backoffs, tmp_path_factory.mktemp("lm") / "lm.arpa")


def frames(spec: list[dict[str, float] | str]) -> np.ndarray:
    """Log-probs: each item is a char (p=0.9 for it) or a dict of char -> prob; rest spread evenly."""
    out = np.full((len(spec), len(LABELS)), 0.0, np.float32)
    for t, item in enumerate(spec):
        dist = {item: 0.9} if isinstance(item, str) else dict(item)
        rest = (1.0 - sum(dist.values())) / (len(LABELS) - len(dist))
        out[t, :] = rest
        for ch, p in dist.items():
            out[t, ID[ch] if ch != "_" else 0] = p
    return np.log(out)


def spell(word_frames: list) -> list:
    """Each char followed by a blank; words separated by the delimiter."""
    out: list = []
    for item in word_frames:
        out += [item, "_"]
    return out


# "I SAW T?N CATS": acoustically A (0.5) beats E (0.4); the LM has only seen "TEN".
AMBIGUOUS = spell(["I", "|", "S", "A", "W", "|", "T", {"A": 0.5, "E": 0.4}, "N", "|", "C", "A", "T", "S"])


def test_kneser_ney_arpa_normalises_through_kenlm(arpa: Path) -> None:
    m = kenlm.Model(str(arpa))
    vocab = [w for w in read_arpa_unigrams(arpa)] + ["</s>", "<unk>"]
    for history, bos in (([], True), ([], False), (["TEN"], True), (["THE", "MEN"], True), (["SAW", "ZEBRA"], False)):
        state = kenlm.State()
        (m.BeginSentenceWrite if bos else m.NullContextWrite)(state)
        for w in history:
            nxt = kenlm.State()
            m.BaseScore(state, w, nxt)
            state = nxt
        total = sum(10 ** m.BaseScore(state, w, kenlm.State()) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-4), history
    # seen continuations are more likely than unseen ones
    assert m.score("I SAW TEN CATS") > m.score("I SAW TAN CATS")


def test_arpa_with_four_decimals_scores_like_six(arpa: Path, tmp_path: Path) -> None:
    """write_arpa(decimals=4), as the bundled LM is written to fit the budget: smaller, same scores to 1e-4 per n-gram."""
    probs, backoffs = build_arpa([s.split() for s in TEXT], order=3)
    short = write_arpa(probs, backoffs, tmp_path / "lm4.arpa", decimals=4)
    assert short.stat().st_size < arpa.stat().st_size
    values = [line.split("\t")[0] for line in short.read_text().splitlines() if "\t" in line]
    assert values and all(len(v.split(".")[-1]) == 4 for v in values)
    full, four = kenlm.Model(str(arpa)), kenlm.Model(str(short))
    for sentence in ("I SAW TEN CATS", "THE DOG SAT IN THE RAIN", "WE HAVE TEN DOGS", "ZEBRA"):
        n = len(sentence.split()) + 1
        assert four.score(sentence) == pytest.approx(full.score(sentence), abs=2e-4 * n)


def test_lm_changes_the_beam_result_where_it_should(arpa: Path) -> None:
    lp = frames(AMBIGUOUS)
    greedy = TOK.decode(lp.argmax(-1).tolist())
    assert greedy == "I SAW TAN CATS"
    no_lm = BeamDecoder(TOK, LMConfig(beam_width=16))
    assert no_lm.decode_segment(lp)[0] == "I SAW TAN CATS"
    with_lm = BeamDecoder(TOK, LMConfig(lm_path=str(arpa), alpha=0.5, beta=1.0, beam_width=16))
    text, words = with_lm.decode_segment(lp)
    assert text == "I SAW TEN CATS"
    # alpha = 0 switches the LM off again
    assert (
        BeamDecoder(TOK, LMConfig(lm_path=str(arpa), alpha=0.0, beta=0.0, beam_width=16)).decode_segment(lp)[0]
        == greedy
    )
    # and a clear acoustic signal is not overridden: "TAN" at p=0.9 stays
    clear = frames(spell(["I", "|", "S", "A", "W", "|", "T", "A", "N"]))
    assert with_lm.decode_segment(clear)[0] == "I SAW TAN"
    # word offsets: frames of the slice, first char start to last char end
    assert [w.text for w in words] == ["I", "SAW", "TEN", "CATS"]
    assert (words[0].start_frame, words[1].start_frame, words[2].start_frame) == (0, 4, 12)
    assert all(a < b for a, b in ((w.start_frame, w.end_frame) for w in words))


def test_hotwords_pull_the_beam(arpa: Path) -> None:
    lp = frames(spell(["I", "|", "S", "A", "W", "|", "T", {"E": 0.5, "A": 0.4}, "N"]))
    plain = BeamDecoder(TOK, LMConfig(beam_width=16))
    assert plain.decode_segment(lp)[0] == "I SAW TEN"
    hot = BeamDecoder(TOK, LMConfig(beam_width=16, hotwords=("TAN",), hotword_weight=10.0))
    assert hot.decode_segment(lp)[0] == "I SAW TAN"


def test_streaming_decoder_uses_the_lm_for_finals_only(arpa: Path) -> None:
    beam = BeamDecoder(TOK, LMConfig(lm_path=str(arpa), beam_width=16))
    dec = StreamingCTCDecoder(TOK, final_decoder=beam, endpoint=EndpointConfig(rule2_min_trailing_silence_ms=200))
    lp = frames(AMBIGUOUS + ["_"] * 12 + spell(["T", "E", "N"]))
    st = dec.init_state()
    ups: list = []
    for s in range(0, lp.shape[0], 5):
        u, st = dec.step(lp[s : s + 5], s, st)
        ups += u
    u, st = dec.flush(st)
    ups += u
    partials = [u for u in ups if not u.is_final and u.index == 0]
    finals = [u for u in ups if u.is_final]
    assert partials[-1].text == "I SAW TAN CATS"  # greedy
    assert [f.text for f in finals] == ["I SAW TEN CATS", "TEN"]
    assert finals[1].words[0].start_sample == (len(AMBIGUOUS) + 12) * 320


def test_bad_lms_are_refused_with_a_clear_message(tmp_path: Path, arpa: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        BeamDecoder(TOK, LMConfig(lm_path=str(tmp_path / "nope.arpa")))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(CheckpointError, match="neither an ARPA"):
        BeamDecoder(TOK, LMConfig(lm_path=str(junk)))
    broken = tmp_path / "broken.arpa"
    broken.write_text(arpa.read_text()[: len(arpa.read_text()) // 2])
    with pytest.raises(CheckpointError, match="KenLM cannot load"):
        BeamDecoder(TOK, LMConfig(lm_path=str(broken)))
    lower = tmp_path / "lower.arpa"
    probs, backoffs = build_arpa([s.lower().split() for s in TEXT], order=2)
    write_arpa(probs, backoffs, lower)
    with pytest.raises(CheckpointError, match="does not match the model's vocabulary"):
        BeamDecoder(TOK, LMConfig(lm_path=str(lower)))
    with pytest.raises(CheckpointError, match="unigram list not found"):
        BeamDecoder(TOK, LMConfig(lm_path=str(arpa), unigrams_path=str(tmp_path / "u.txt")))


def test_lm_build_cli_writes_arpa_and_unigrams(tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("\n".join(s.lower() for s in TEXT) + "\n")
    out, uni = tmp_path / "o.arpa", tmp_path / "u.txt"
    assert lm_build_main([str(text), str(out), "--order", "2", "--upper", "--unigrams", str(uni)]) == 0
    assert kenlm.Model(str(out)).order == 2
    assert "TEN" in uni.read_text().split() and "ten" not in uni.read_text().split()


@pytest.mark.skipif(shutil.which("build_binary") is None, reason="KenLM build_binary not on PATH (see examples/lm)")
def test_binary_lm_with_unigram_list(tmp_path: Path, arpa: Path) -> None:
    binary = tmp_path / "lm.bin"
    subprocess.run(["build_binary", str(arpa), str(binary)], check=True, capture_output=True)
    uni = tmp_path / "u.txt"
    uni.write_text("\n".join(read_arpa_unigrams(arpa)))
    beam = BeamDecoder(TOK, LMConfig(lm_path=str(binary), unigrams_path=str(uni), beam_width=16))
    assert beam.decode_segment(frames(AMBIGUOUS))[0] == "I SAW TEN CATS"


@pytest.mark.skipif(shutil.which("lmplz") is None, reason="KenLM lmplz not on PATH (see examples/lm)")
def test_kneser_ney_matches_lmplz(tmp_path: Path) -> None:
    """examples.lm.lm_build and KenLM's lmplz give the same ARPA probabilities and backoffs."""
    rng = np.random.default_rng(0)
    vocab = [f"W{i}" for i in range(3000)]
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    sents = [list(rng.choice(vocab, size=int(rng.integers(3, 12)), p=zipf / zipf.sum())) for _ in range(3000)]
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(s) for s in sents) + "\n")
    ref = tmp_path / "ref.arpa"
    with open(text) as fin, open(ref, "w") as fout:
        subprocess.run(
            ["lmplz", "-o", "3", "--discount_fallback", "-S", "100M", "-T", str(tmp_path)],
            stdin=fin,
            stdout=fout,
            check=True,
            capture_output=False,
            stderr=subprocess.DEVNULL,
        )
    ours = write_arpa(*build_arpa(sents, order=3), tmp_path / "ours.arpa")

    def entries(path: Path) -> dict:
        out, order = {}, 0
        for line in path.read_text().splitlines():
            if line.endswith("-grams:"):
                order = int(line[1])
            elif order and line and not line.startswith("\\"):
                parts = line.split("\t")
                out[parts[1]] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else 0.0)
        return out

    a, b = entries(ref), entries(ours)
    assert set(a) == set(b)
    worst = max(abs(a[g][i] - b[g][i]) for g in a if g != "<s>" for i in (0, 1))
    assert worst < 1e-4, worst


def test_reweighted_shares_the_lm_and_changes_the_result(arpa: Path) -> None:
    with_lm = BeamDecoder(TOK, LMConfig(lm_path=str(arpa), alpha=0.5, beta=1.0, beam_width=16))
    off = with_lm.reweighted(0.0, 0.0)
    assert off.lm._kenlm_model is with_lm.lm._kenlm_model and off.config.alpha == 0.0
    lp = frames(AMBIGUOUS)
    assert with_lm.decode_segment(lp)[0] == "I SAW TEN CATS" and off.decode_segment(lp)[0] == "I SAW TAN CATS"


def test_reweighted_takes_another_unknown_word_offset(arpa: Path) -> None:
    # Acoustically "TAN" (0.8) far beats "TEN" (0.1); TAN is not in the LM. A weak LM (alpha 0.1) keeps TAN
    # when an unknown word costs nothing more, and takes TEN at pyctcdecode's usual -10 (log10, times alpha).
    lp = frames(spell(["I", "|", "S", "A", "W", "|", "T", {"A": 0.8, "E": 0.1}, "N", "|", "C", "A", "T", "S"]))
    base = BeamDecoder(TOK, LMConfig(lm_path=str(arpa), beam_width=16))
    free, costly = base.reweighted(0.1, 0.0, 0.0), base.reweighted(0.1, 0.0, -10.0)
    assert free.config.unk_score_offset == 0.0 and costly.config.unk_score_offset == -10.0
    assert base.reweighted(0.1, 0.0).config.unk_score_offset == base.config.unk_score_offset
    assert free.decode_segment(lp)[0] == "I SAW TAN CATS"
    assert costly.decode_segment(lp)[0] == "I SAW TEN CATS"


def test_arpa_load_keeps_stderr_clean_but_passes_other_output(arpa: Path, capfd) -> None:
    import os

    from engines.lm import _filtered_c_stderr, load_kenlm

    load_kenlm(arpa)
    err = capfd.readouterr().err
    assert "Loading the LM" not in err and "Reading" not in err and "****" not in err, err
    with _filtered_c_stderr():  # anything else written to fd 2 meanwhile still reaches stderr
        os.write(2, b"Loading the LM will be faster if you build a binary file.\nsomething else\n")
    assert capfd.readouterr().err == "something else\n"
