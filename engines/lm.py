"""CTC beam search with an n-gram LM (pyctcdecode + KenLM), for segment finals.

::

    tok = CTCTokenizer.from_dir(model_dir)
    beam = BeamDecoder(tok, LMConfig(lm_path="lm.arpa", alpha=0.5, beta=1.0, beam_width=32))
    text, words = beam.decode_segment(log_probs)          # (T, V) -> text, WordSpan frames

``LMConfig`` covers ARPA and KenLM binary files, a unigram list (a text file, one word per line;
read from the ARPA file when not given), alpha (LM weight), beta (word insertion bonus), hotwords
with their weight, and the beam's pruning.  Without ``lm_path`` it is a plain CTC prefix beam
search.

Checked at construction, so that a recogniser refuses to start rather than decode garbage:

- the LM file exists and is an ARPA file (``\\data\\`` header) or a KenLM binary (its magic);
- KenLM loads it (a corrupt file raises here, with KenLM's reason);
- the LM's words are spelled with the model's characters: if most of its unigrams use characters
  the vocabulary lacks (lower-case LM for an upper-case model, another language) it is refused,
  with examples.

Label mapping to pyctcdecode: the pad token is the blank (``""``), the word delimiter is ``" "``,
``unk`` is pyctcdecode's ``"⁇"`` (mapped back to ``unk_token`` in the text); other special
tokens (``<s>``, ``</s>``) get private-use placeholders and are masked out of the search.
Word offsets are the frames ``[start, end)`` pyctcdecode reports, relative to the decoded slice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.errors import CheckpointError, UnsupportedConfigError
from engines.tokenizer import CTCTokenizer, WordSpan

__all__ = ["LMConfig", "BeamDecoder", "find_model_lm", "load_kenlm", "read_arpa_unigrams"]

log = logging.getLogger("engines.lm")

_KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"
_PYCTC_UNK = "⁇"
_MASKED_LOGP = -1000.0


@dataclass(frozen=True)
class LMConfig:
    """Beam search settings. alpha/beta/weights as in pyctcdecode."""

    lm_path: str | None = None  # ARPA (.arpa, optionally any name) or KenLM binary
    unigrams_path: str | None = None  # one word per line; default: the ARPA file's 1-grams
    alpha: float = 0.5  # LM weight
    beta: float = 1.0  # word insertion bonus
    beam_width: int = 32
    beam_prune_logp: float = -10.0
    token_min_logp: float = -5.0
    unk_score_offset: float = -10.0
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = 10.0
    min_vocab_coverage: float = 0.5  # refuse an LM when fewer of its words are spellable

    def __post_init__(self) -> None:
        if not isinstance(self.beam_width, int) or self.beam_width < 1:
            raise UnsupportedConfigError("beam_width", self.beam_width, "a positive int")


def _sniff(path: Path) -> str:
    if not path.is_file():
        raise CheckpointError(f"language model file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(_KENLM_BINARY_MAGIC):
        return "binary"
    if head.lstrip().startswith(b"\\data\\"):
        return "arpa"
    raise CheckpointError(
        f"language model {path} is neither an ARPA file (no \\data\\ header) nor a KenLM binary (no KenLM magic)"
    )


_KENLM_CHATTER = re.compile(
    r"^(Loading the LM will be faster if you build a binary file\.|Reading .*|[-0-9]*5---10---15[-0-9]*|\*+)$"
)


@contextlib.contextmanager
def _filtered_c_stderr() -> Iterator[None]:
    """KenLM's C++ loader prints a binary-file hint, the path and a progress bar on file descriptor 2
    for every ARPA load. Hold fd 2 in a temporary file meanwhile and give back every other line."""
    fd = 2  # KenLM writes to the C-level descriptor, whatever sys.stderr is
    try:
        saved = os.dup(fd)
    except OSError:  # fd 2 closed: nothing to filter
        yield
        return
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().decode("utf-8", "replace").splitlines()
                if not _KENLM_CHATTER.match(line.strip())
            ]
            if kept:
                os.write(fd, ("\n".join(kept) + "\n").encode())


def load_kenlm(path: str | Path) -> tuple[Any, str]:
    """Load an ARPA or binary LM with KenLM; CheckpointError (with KenLM's reason) if it cannot."""
    path = Path(path)
    kind = _sniff(path)
    try:
        import kenlm
    except ImportError as exc:  # pragma: no cover - kenlm is a runtime dependency
        raise CheckpointError("the kenlm module is not installed (pip install kenlm)") from exc
    try:
        with _filtered_c_stderr():
            return kenlm.Model(str(path)), kind
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"KenLM cannot load {path}: {exc}") from exc


def read_arpa_unigrams(path: str | Path) -> list[str]:
    """The 1-gram words of an ARPA file (without <s>, </s>, <unk>)."""
    words: list[str] = []
    section = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\"):
                section = line
                if section == "\\2-grams:" or section == "\\end\\":
                    break
                continue
            if section == "\\1-grams:" and line:
                parts = line.split("\t")
                if len(parts) < 2:
                    parts = line.split()
                w = parts[1]
                if w not in ("<s>", "</s>", "<unk>"):
                    words.append(w)
    return words


def find_model_lm(model_dir: str | Path) -> dict[str, Any] | None:
    """LM settings from a checkpoint's ``language_model/`` folder (HF ``Wav2Vec2ProcessorWithLM``
    layout: ``*.bin`` or ``*.arpa``, ``unigrams.txt``, ``attrs.json`` with alpha, beta,
    unk_score_offset), as ``LMConfig`` keyword arguments; None when the folder is absent."""
    import json

    folder = Path(model_dir) / "language_model"
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.bin")) + sorted(folder.glob("*.arpa"))
    if not files:
        raise CheckpointError(f"{folder} holds no *.bin or *.arpa language model")
    kwargs: dict[str, Any] = {"lm_path": str(files[0])}
    if (folder / "unigrams.txt").is_file():
        kwargs["unigrams_path"] = str(folder / "unigrams.txt")
    attrs = folder / "attrs.json"
    if attrs.is_file():
        try:
            a = json.loads(attrs.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"cannot read {attrs}: {exc}") from exc
        for key in ("alpha", "beta", "unk_score_offset"):
            if key in a:
                kwargs[key] = float(a[key])
    return kwargs


class BeamDecoder:
    """A ``SegmentDecoder`` (see engines.ctc): CTC prefix beam search, with a KenLM LM when configured.

    Holds weights only (the KenLM model, the label table); safe to share across streams.
    ``lm`` reuses an already loaded decoder's pyctcdecode LM (another beam width, same LM).
    """

    def __init__(self, tokenizer: CTCTokenizer, config: LMConfig = LMConfig(), lm: Any = None):
        from pyctcdecode.alphabet import Alphabet
        from pyctcdecode.decoder import BeamSearchDecoderCTC
        from pyctcdecode.language_model import LanguageModel

        self.tokenizer = tokenizer
        self.config = config
        labels, masked = self._labels(tokenizer)
        self.labels = labels
        self.masked_ids = np.array(masked, dtype=np.int64)
        if lm is None and config.lm_path is not None:
            kenlm_model, kind = load_kenlm(config.lm_path)
            unigrams = self._unigrams(config, kind)
            if unigrams is not None:
                self._check_coverage(unigrams, config)
            lm = LanguageModel(
                kenlm_model,
                unigrams,
                alpha=config.alpha,
                beta=config.beta,
                unk_score_offset=config.unk_score_offset,
                score_boundary=True,
            )
        self.lm = lm
        self._decoder = BeamSearchDecoderCTC(Alphabet(labels, is_bpe=False), lm)

    def reweighted(self, alpha: float, beta: float, unk_score_offset: float | None = None) -> BeamDecoder:
        """The same LM (KenLM model shared, not reloaded) with other alpha / beta and, when given,
        another unknown-word offset (for tuning)."""
        from dataclasses import replace

        from pyctcdecode.language_model import LanguageModel

        cfg = replace(self.config, alpha=alpha, beta=beta)
        if unk_score_offset is not None:
            cfg = replace(cfg, unk_score_offset=unk_score_offset)
        if self.lm is None:
            return BeamDecoder(self.tokenizer, cfg)
        lm = LanguageModel(
            self.lm._kenlm_model,
            list(self.lm._unigram_set),
            alpha=alpha,
            beta=beta,
            unk_score_offset=cfg.unk_score_offset,
            score_boundary=True,
        )
        return BeamDecoder(self.tokenizer, cfg, lm=lm)

    # ------------------------------------------------------------------ setup

    @staticmethod
    def _labels(tok: CTCTokenizer) -> tuple[list[str], list[int]]:
        labels: list[str] = []
        masked: list[int] = []
        specials = {tok.bos_token, tok.eos_token}
        for i, t in enumerate(tok.labels):
            if i == tok.blank_id:
                labels.append("")
            elif t == tok.word_delimiter_token:
                labels.append(" ")
            elif t == tok.unk_token:
                labels.append(_PYCTC_UNK)
            elif t in specials or t in labels:
                labels.append(chr(0xE000 + i))  # never spelled by an LM word; masked in the search
                masked.append(i)
            else:
                labels.append(t)
        return labels, masked

    @staticmethod
    def _unigrams(config: LMConfig, kind: str) -> list[str] | None:
        if config.unigrams_path is not None:
            p = Path(config.unigrams_path)
            if not p.is_file():
                raise CheckpointError(f"unigram list not found: {p}")
            return [w for w in p.read_text(encoding="utf-8").split() if w]
        if kind == "arpa":
            assert config.lm_path is not None  # called only for a loaded LM file
            return read_arpa_unigrams(config.lm_path)
        log.warning("binary LM %s without a unigram list: its vocabulary cannot be checked", config.lm_path)
        return None

    def _check_coverage(self, unigrams: list[str], config: LMConfig) -> None:
        if not unigrams:
            raise CheckpointError(f"language model {config.lm_path} has no words")
        chars = {t for t in self.labels if len(t) == 1 and t not in (" ", "")}
        bad = [w for w in unigrams if any(c not in chars for c in w)]
        coverage = 1 - len(bad) / len(unigrams)
        if coverage < config.min_vocab_coverage:
            raise CheckpointError(
                f"language model {config.lm_path} does not match the model's vocabulary: "
                f"{len(bad)} of {len(unigrams)} words use characters the model cannot emit "
                f"(e.g. {', '.join(repr(w) for w in bad[:5])}; model characters: {''.join(sorted(chars))})"
            )

    # ------------------------------------------------------------------ decoding

    def decode_segment(self, log_probs: npt.NDArray[np.floating[Any]]) -> tuple[str, tuple[WordSpan, ...]]:
        """(T, V) log-probs (or logits) of one segment -> (text, words with frames of the slice)."""
        lp = np.array(log_probs, dtype=np.float32)
        if lp.shape[0] == 0:
            return "", ()
        if lp.shape[1] != len(self.labels):
            raise UnsupportedConfigError("logits width", lp.shape[1], f"{len(self.labels)} (the vocabulary size)")
        if self.masked_ids.size:
            lp[:, self.masked_ids] = _MASKED_LOGP
        c = self.config
        beams = self._decoder.decode_beams(
            lp,  # type: ignore[arg-type]  # pyctcdecode wants floating[NBitBase], which numpy 2's float32 is not
            beam_width=c.beam_width,
            beam_prune_logp=c.beam_prune_logp,
            token_min_logp=c.token_min_logp,
            hotwords=list(c.hotwords) or None,
            hotword_weight=c.hotword_weight,
        )
        text, _, word_frames, _, _ = beams[0]
        return self._finish(text), tuple(self._word(w, a, b) for w, (a, b) in word_frames)

    def _word(self, word: str, start: int, end: int) -> WordSpan:
        text = word.replace(_PYCTC_UNK, self.tokenizer.unk_token)
        if self.tokenizer.do_lower_case:
            text = text.lower()
        return WordSpan(text, int(start), int(end))

    def _finish(self, text: str) -> str:
        return self.tokenizer.finish_text(text.replace(_PYCTC_UNK, self.tokenizer.unk_token))

    def decode_many(self, segments: Iterable[npt.NDArray[np.floating[Any]]]) -> list[str]:
        return [self.decode_segment(s)[0] for s in segments]
