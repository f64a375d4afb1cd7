"""engines.tokenizer decodes CTC ids exactly like transformers' Wav2Vec2CTCTokenizer."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest

from engines.errors import CheckpointError
from engines.tokenizer import CTCTokenizer, TokenSpan

transformers = pytest.importorskip("transformers")

BASE_960H = {
    "<pad>": 0,
    "<s>": 1,
    "</s>": 2,
    "<unk>": 3,
    "|": 4,
    **{c: i + 5 for i, c in enumerate("ETAONIHSRDLUMWCFGYPBVK'XJQZ")},
}
FINETUNE_LOWER = {"[PAD]": 0, "[UNK]": 1, "|": 2, **{c: i + 3 for i, c in enumerate(string.ascii_lowercase + "'")}}
NO_BOS_EOS = {"<pad>": 0, "<unk>": 1, "|": 2, "A": 3, "B": 4, "C": 5, "'": 6}
PUNCT = {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4, "n": 5, "t": 6, "'": 7, ".": 8, ",": 9, "?": 10, "ch": 11}

CASES = {
    "base960h": (BASE_960H, {}),
    "lowercase_out": (BASE_960H, {"do_lower_case": True}),
    "finetune_brackets": (FINETUNE_LOWER, {"pad_token": "[PAD]", "unk_token": "[UNK]"}),
    "no_bos_eos": (NO_BOS_EOS, {}),
    "cleanup_multichar": (PUNCT, {"clean_up_tokenization_spaces": True}),
}
# transformers 5 moves a tokenizer_config ``word_delimiter_token`` into ``model_specific_special_tokens``
# and keeps "|" (from_pretrained only); the constructor honours it, so that case is compared there.
OTHER_DELIMITER = (NO_BOS_EOS, {"word_delimiter_token": "'"})


def _write(d: Path, vocab: dict, cfg: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Wav2Vec2CTCTokenizer", **cfg}))
    return d


def _id_sequences(size: int, blank: int, rng: np.random.Generator) -> list[list[int]]:
    seqs = [[], [blank] * 5, list(range(size)), list(range(size))[::-1] * 2]
    for _ in range(40):
        n = int(rng.integers(1, 60))
        ids = rng.integers(0, size + 2, size=n)  # a few ids beyond the vocab -> unk
        ids[rng.random(n) < 0.4] = blank
        seqs.append(ids.tolist())
    # runs of repeats separated and not separated by blanks
    seqs.append([5, 5, blank, 5, 5, 6, 6, 6, blank, blank, 7])
    return seqs


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("saved_by_hf", [False, True])
def test_decode_equals_transformers(tmp_path: Path, case: str, saved_by_hf: bool) -> None:
    vocab, cfg = CASES[case]
    d = _write(tmp_path / "raw", vocab, cfg)
    ref = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(d))
    if saved_by_hf:
        d = tmp_path / "saved"
        ref.save_pretrained(str(d))
        ref = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(d))
    ours = CTCTokenizer.from_dir(d)
    assert ours.vocab_size == len(ref)
    assert ours.blank_id == ref.pad_token_id
    rng = np.random.default_rng(0)
    for ids in _id_sequences(ours.vocab_size, ours.blank_id, rng):
        assert ours.decode(ids) == ref.decode(ids), ids
        assert ours.decode(ids, group_tokens=False) == ref.decode(ids, group_tokens=False), ids


def test_custom_word_delimiter_equals_transformers_constructor(tmp_path: Path) -> None:
    vocab, cfg = OTHER_DELIMITER
    d = _write(tmp_path, vocab, cfg)
    ref = transformers.Wav2Vec2CTCTokenizer(str(d / "vocab.json"), **cfg)
    ours = CTCTokenizer.from_dir(d)
    for ids in _id_sequences(ours.vocab_size, ours.blank_id, np.random.default_rng(2)):
        assert ours.decode(ids) == ref.decode(ids), ids


@pytest.mark.parametrize("case", ["base960h", "lowercase_out", "finetune_brackets"])
def test_word_offsets_equal_transformers(tmp_path: Path, case: str) -> None:
    vocab, cfg = CASES[case]
    d = _write(tmp_path, vocab, cfg)
    ref = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(d))
    ours = CTCTokenizer.from_dir(d)
    rng = np.random.default_rng(1)
    delim = ours.word_delimiter_id
    letters = [i for i, t in enumerate(ours.labels) if len(t) == 1 and t.isalpha()]
    for _ in range(30):
        n = int(rng.integers(5, 80))
        ids = rng.choice(letters, size=n)
        ids[rng.random(n) < 0.3] = ours.blank_id
        ids[rng.random(n) < 0.1] = delim
        ids = ids.tolist()
        out = ref.decode(ids, output_word_offsets=True)
        spans = _spans(ids, ours.blank_id)
        words = ours.words_of_spans(spans)
        assert [(w.text, w.start_frame, w.end_frame) for w in words] == [
            (w["word"].lower() if ours.do_lower_case else w["word"], int(w["start_offset"]), int(w["end_offset"]))
            for w in out.word_offsets
        ]
        assert ours.text_of_spans(spans) == out.text


def _spans(ids: list[int], blank: int) -> list[TokenSpan]:
    spans: list[TokenSpan] = []
    prev = None
    for f, i in enumerate(ids):
        if i == prev and spans and i != blank:
            spans[-1] = TokenSpan(i, spans[-1].start_frame, f + 1)
        elif i != blank:
            spans.append(TokenSpan(i, f, f + 1))
        prev = i
    return spans


def test_special_tokens_map_overrides_when_no_added_tokens(tmp_path: Path) -> None:
    d = _write(tmp_path, FINETUNE_LOWER, {})
    (d / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[PAD]", "unk_token": {"content": "[UNK]"}}))
    ref = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(d))
    ours = CTCTokenizer.from_dir(d)
    assert ours.pad_token == ref.pad_token == "[PAD]"
    ids = [0, 3, 3, 0, 3, 2, 1, 40]
    assert ours.decode(ids) == ref.decode(ids)


def test_multilingual_vocab_needs_target_lang(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text(json.dumps({"eng": NO_BOS_EOS, "deu": FINETUNE_LOWER}))
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="target_lang"):
        CTCTokenizer.from_dir(tmp_path)
    assert CTCTokenizer.from_dir(tmp_path, target_lang="eng").decode([3, 0, 2, 4]) == "A B"


def test_missing_or_corrupt_vocab_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no vocab.json"):
        CTCTokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="vocab.json"):
        CTCTokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(CheckpointError, match="integer ids"):
        CTCTokenizer.from_dir(tmp_path)
    # Like transformers, special tokens missing from vocab.json are appended after it.
    tok = CTCTokenizer.from_vocab({"a": 0, "b": 1})
    assert tok.labels == ("a", "b", "<s>", "</s>", "<unk>", "<pad>") and tok.blank_id == 5


def test_for_model_drops_only_appended_special_tokens(tmp_path: Path) -> None:
    d = _write(tmp_path, NO_BOS_EOS, {})
    ref = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(d))
    ours = CTCTokenizer.from_dir(d)
    assert ours.vocab_size == len(ref) == 9  # HF appends <s>, </s> after the 7 ids of vocab.json
    cut = ours.for_model(7)
    assert cut.vocab_size == 7 and cut.decode([3, 0, 2, 4]) == ours.decode([3, 0, 2, 4]) == "A B"
    assert ours.for_model(9) is ours
    for n in (6, 10):
        with pytest.raises(CheckpointError, match="CTC head has"):
            ours.for_model(n)


def test_tokenizer_saved_by_current_transformers_fits_a_head_without_appended_tokens(tmp_path: Path) -> None:
    """Issue 17's defect: save_pretrained lists the appended <s>, </s> (ids 7, 8 here) in
    tokenizer_config.json's added_tokens_decoder and in added_tokens.json; a CTC head sized to
    vocab.json (7) must still fit, as it does for transformers."""
    raw = _write(tmp_path / "raw", NO_BOS_EOS, {})
    ref = transformers.Wav2Vec2CTCTokenizer(str(raw / "vocab.json"), unk_token="<unk>", pad_token="<pad>")
    saved = tmp_path / "saved"
    ref.save_pretrained(str(saved))
    assert "7" in json.loads((saved / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert json.loads((saved / "added_tokens.json").read_text()) == {"<s>": 7, "</s>": 8}
    ours = CTCTokenizer.from_dir(saved)
    assert ours.labels == tuple(ref.convert_ids_to_tokens(list(range(len(ref)))))
    cut = ours.for_model(7)
    assert cut.vocab_size == 7
    for ids in _id_sequences(7, cut.blank_id, np.random.default_rng(3)):
        ids = [i for i in ids if i < 7]  # what argmax over a 7-output head can emit
        assert cut.decode(ids) == ref.decode(ids)
    with pytest.raises(CheckpointError, match=r"vocab.json has 7 tokens .*config.json vocab_size=6"):
        ours.for_model(6)


def test_added_tokens_json_alone_counts_as_appended(tmp_path: Path) -> None:
    """transformers 4.x wrote appended specials to added_tokens.json only."""
    d = _write(tmp_path, NO_BOS_EOS, {})
    (d / "added_tokens.json").write_text(json.dumps({"</s>": 8, "<s>": 7}))
    ref = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(d))
    ours = CTCTokenizer.from_dir(d)
    assert ours.labels == tuple(ref.convert_ids_to_tokens(list(range(len(ref)))))
    assert ours.for_model(7).vocab_size == 7


def test_blank_appended_after_vocab_cannot_be_cut(tmp_path: Path) -> None:
    d = _write(tmp_path, {"<unk>": 0, "|": 1, "A": 2}, {"pad_token": "[PAD]"})
    with pytest.raises(CheckpointError, match=r"pad \(CTC blank\) token '\[PAD\]' has id 5"):
        CTCTokenizer.from_dir(d).for_model(3)
