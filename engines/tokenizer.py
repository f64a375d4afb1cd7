"""CTC character vocabulary with the decoding semantics of HF ``Wav2Vec2CTCTokenizer``.

Reads a checkpoint directory's ``vocab.json``, ``tokenizer_config.json``,
``special_tokens_map.json`` and ``added_tokens.json`` (all but the first optional) and decodes CTC ids exactly as
``transformers``' ``Wav2Vec2CTCTokenizer.decode`` does with its defaults:

1. ids -> tokens (ids outside the vocabulary and its added tokens become ``unk_token``);
2. group repeated tokens (CTC collapse);
3. drop ``pad_token`` (the CTC blank);
4. replace ``word_delimiter_token`` by ``replace_word_delimiter_char`` (a space);
5. join, strip; lower-case if ``do_lower_case``; apply ``clean_up_tokenization`` if
   ``clean_up_tokenization_spaces``.

Special tokens other than pad (``<s>``, ``</s>``, ``<unk>``) are kept in the text, as HF
does with ``skip_special_tokens=False`` (its CTC pipeline's setting).

Nested multilingual vocabularies (MMS: ``{"eng": {...}, "fra": {...}}``) need
``target_lang``.  ``transformers`` is not imported here; the equality is a test.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Any

from engines.errors import CheckpointError

__all__ = ["CTCTokenizer", "TokenSpan", "WordSpan", "clean_up_tokenization"]

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def clean_up_tokenization(text: str) -> str:
    """``PreTrainedTokenizerBase.clean_up_tokenization``: undo spaces before punctuation."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


@dataclass(frozen=True, slots=True)
class TokenSpan:
    """One emitted (collapsed, non-blank) token and the frames ``[start_frame, end_frame)`` it spans."""

    token_id: int
    start_frame: int
    end_frame: int


@dataclass(frozen=True, slots=True)
class WordSpan:
    """A word and the frames ``[start_frame, end_frame)`` from its first to its last character."""

    text: str
    start_frame: int
    end_frame: int


def _token_content(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("content")
    return str(value)


def _token_id(value: Any, source: Path) -> int:
    try:
        idx = int(value)
    except (TypeError, ValueError):
        idx = -1
    if isinstance(value, bool) or idx < 0:
        raise CheckpointError(f"{source}: token id {value!r} is not a non-negative integer")
    return idx


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read tokenizer file {path}: {exc}") from exc


@dataclass(frozen=True)
class CTCTokenizer:
    """An immutable CTC vocabulary. ``labels[i]`` is the token of id ``i`` (dense, 0..V-1)."""

    labels: tuple[str, ...]
    pad_token: str = "<pad>"
    unk_token: str = "<unk>"
    bos_token: str | None = "<s>"
    eos_token: str | None = "</s>"
    word_delimiter_token: str | None = "|"
    replace_word_delimiter_char: str = " "
    do_lower_case: bool = False
    clean_up_tokenization_spaces: bool = False
    base_size: int | None = None  # ids of vocab.json, before the tokens appended after it like HF (None: all)
    source: str = field(default="", compare=False)  # the directory it was read from, for messages
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.labels)})
        if self.pad_token not in self._index:
            raise CheckpointError(
                f"pad (CTC blank) token {self.pad_token!r} is not in the vocabulary of {len(self.labels)} tokens"
            )

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dir(cls, path: str | Path, target_lang: str | None = None) -> CTCTokenizer:
        """Read ``vocab.json`` (+ ``tokenizer_config.json``, ``special_tokens_map.json``) from a model directory."""
        path = Path(path)
        vocab_file = path / "vocab.json"
        if not vocab_file.is_file():
            raise CheckpointError(f"no vocab.json in {path}: a CTC checkpoint needs its tokenizer files")
        vocab = _read_json(vocab_file)
        cfg_file = path / "tokenizer_config.json"
        cfg: dict[str, Any] = _read_json(cfg_file) if cfg_file.is_file() else {}
        target_lang = target_lang if target_lang is not None else cfg.get("target_lang")
        if isinstance(vocab, dict) and vocab and all(isinstance(v, dict) for v in vocab.values()):
            if target_lang is None or target_lang not in vocab:
                raise CheckpointError(
                    f"{vocab_file} is a multilingual vocabulary; pass target_lang, one of {sorted(vocab)[:20]}"
                )
            vocab = vocab[target_lang]
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise CheckpointError(f"{vocab_file} must map tokens to integer ids")

        specials = {k: _token_content(cfg.get(k)) for k in _SPECIAL_KEYS if k in cfg}
        added = cfg.get("added_tokens_decoder")
        stm_file = path / "special_tokens_map.json"
        if not added and stm_file.is_file():
            # transformers reads special_tokens_map.json only for configs without added_tokens_decoder.
            for k, v in _read_json(stm_file).items():
                if k in _SPECIAL_KEYS:
                    specials[k] = _token_content(v)

        id_to_token: dict[int, str] = {i: t for t, i in vocab.items()}
        # Tokens transformers appended after vocab.json's ids (``<s>``, ``</s>`` of a vocabulary
        # without them): tokenizer_config.json's added_tokens_decoder (transformers >= 4.34), else
        # added_tokens.json (older ones; today's write both). A CTC head may stop before them.
        base_size = max(id_to_token, default=-1) + 1
        appended: dict[int, str | None] = {}
        if added:
            if not isinstance(added, dict):
                raise CheckpointError(f"{cfg_file}: added_tokens_decoder must map ids to tokens")
            appended = {_token_id(k, cfg_file): _token_content(v) for k, v in added.items()}
        elif (path / "added_tokens.json").is_file():
            extra = _read_json(path / "added_tokens.json")
            if not isinstance(extra, dict):
                raise CheckpointError(f"{path / 'added_tokens.json'} must map tokens to ids")
            appended = {_token_id(v, path / "added_tokens.json"): t for t, v in extra.items()}
        for idx, tok in sorted(appended.items()):
            if tok is not None:
                id_to_token.setdefault(idx, tok)
        return cls.from_vocab(
            id_to_token,
            pad_token=specials.get("pad_token", "<pad>"),
            unk_token=specials.get("unk_token", "<unk>"),
            bos_token=specials.get("bos_token", "<s>"),
            eos_token=specials.get("eos_token", "</s>"),
            word_delimiter_token=_token_content(cfg.get("word_delimiter_token", "|")),
            replace_word_delimiter_char=cfg.get("replace_word_delimiter_char", " "),
            do_lower_case=bool(cfg.get("do_lower_case", False)),
            clean_up_tokenization_spaces=bool(cfg.get("clean_up_tokenization_spaces", False)),
            base_size=base_size,
            source=str(path),
        )

    @classmethod
    def from_vocab(cls, vocab: dict[str, int] | dict[int, str], **kwargs: Any) -> CTCTokenizer:
        """Build from ``{token: id}`` or ``{id: token}``. Special tokens missing from it are appended, as HF does."""
        if vocab and isinstance(next(iter(vocab)), str):
            id_to_token = {int(i): t for t, i in vocab.items()}
        else:
            id_to_token = {int(i): t for i, t in vocab.items()}
        known = set(id_to_token.values())
        nxt = max(id_to_token, default=-1) + 1
        base_size = kwargs.pop("base_size", None)
        base_size = nxt if base_size is None else min(base_size, nxt)
        # transformers adds special tokens absent from the vocab after it, in this order.
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            tok = kwargs.get(key, cls.__dataclass_fields__[key].default)
            if tok is not None and tok not in known:
                id_to_token[nxt] = tok
                known.add(tok)
                nxt += 1
        size = max(id_to_token) + 1
        unk = kwargs.get("unk_token", "<unk>")
        labels = tuple(id_to_token.get(i, unk) for i in range(size))
        return cls(labels=labels, base_size=base_size, **kwargs)

    def for_model(self, n_outputs: int) -> CTCTokenizer:
        """This vocabulary cut to a CTC head of ``n_outputs`` labels.

        Allowed when only tokens appended after vocab.json's ids fall outside (``<s>``, ``</s>``
        that transformers appends to a vocabulary without them, listed in added_tokens_decoder /
        added_tokens.json): argmax over the head never emits them, so transformers decodes such a
        checkpoint as if they were absent. The blank must be inside the head. Any other
        difference is a vocabulary that does not belong to the model, refused with CheckpointError.
        """
        base = self.base_size if self.base_size is not None else self.vocab_size
        if n_outputs == self.vocab_size:
            return self
        where = f"{self.source}/" if self.source else ""
        if base <= n_outputs < self.vocab_size:
            if self.blank_id >= n_outputs:
                raise CheckpointError(
                    f"{where}tokenizer_config.json: pad (CTC blank) token {self.pad_token!r} has id {self.blank_id}, "
                    f"outside the CTC head's {n_outputs} outputs (config.json vocab_size={n_outputs})"
                )
            return replace(self, labels=self.labels[:n_outputs], base_size=None)
        extra = f" (+ {self.vocab_size - base} appended tokens)" if self.vocab_size > base else ""
        raise CheckpointError(
            f"{where}vocab.json has {base} tokens (ids 0..{base - 1}){extra} but the model's CTC head has "
            f"{n_outputs} outputs (config.json vocab_size={n_outputs})"
        )

    # ------------------------------------------------------------------ ids

    @property
    def vocab_size(self) -> int:
        return len(self.labels)

    @property
    def blank_id(self) -> int:
        return self._index[self.pad_token]

    @property
    def word_delimiter_id(self) -> int | None:
        if self.word_delimiter_token is None:
            return None
        return self._index.get(self.word_delimiter_token)

    def token_id(self, token: str) -> int | None:
        return self._index.get(token)

    def id_to_token(self, idx: int) -> str:
        return self.labels[idx] if 0 <= idx < len(self.labels) else self.unk_token

    # ------------------------------------------------------------------ decoding

    def _char(self, token: str) -> str:
        return self.replace_word_delimiter_char if token == self.word_delimiter_token else token

    def finish_text(self, text: str) -> str:
        text = text.strip()
        if self.do_lower_case:
            text = text.lower()
        if self.clean_up_tokenization_spaces:
            text = clean_up_tokenization(text)
        return text

    def decode(self, ids: Iterable[int], group_tokens: bool = True) -> str:
        """Text of a frame-level id sequence (e.g. ``argmax`` over CTC logits), exactly as HF decodes it."""
        tokens = [self.id_to_token(int(i)) for i in ids]
        if group_tokens:
            tokens = [t for t, _ in groupby(tokens)]
        return self.finish_text("".join(self._char(t) for t in tokens if t != self.pad_token))

    def text_of_spans(self, spans: Sequence[TokenSpan]) -> str:
        """Text of already collapsed, blank-free token spans (what the streaming decoder holds)."""
        return self.finish_text("".join(self._char(self.id_to_token(s.token_id)) for s in spans))

    def words_of_spans(self, spans: Sequence[TokenSpan]) -> tuple[WordSpan, ...]:
        """Words with frame extents, HF ``output_word_offsets`` semantics (delimiter splits words)."""
        words: list[WordSpan] = []
        chars: list[str] = []
        start = end = 0
        for s in spans:
            ch = self._char(self.id_to_token(s.token_id))
            if ch == self.replace_word_delimiter_char:
                if chars:
                    words.append(WordSpan(self._word_text(chars), start, end))
                    chars = []
                continue
            if not chars:
                start = s.start_frame
            chars.append(ch)
            end = s.end_frame
        if chars:
            words.append(WordSpan(self._word_text(chars), start, end))
        return tuple(words)

    def _word_text(self, chars: list[str]) -> str:
        text = "".join(chars)
        return text.lower() if self.do_lower_case else text
