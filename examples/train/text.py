"""Text for the default-model recipe: normalisation to the model's alphabet and the sentence pools.

The alphabet is what the char vocabulary holds: A-Z, apostrophe and space (written ``|`` in vocab.json).
Numbers are spelt out so that a TTS voice reads exactly the transcript it is given.

Sentence sources (all offline):
- the corpora transcripts (``../shared/corpora``: ARCTIC prompts read by kathleen, LJ prompts read by philipp);
- Debian's ``fortunes`` / ``fortunes-min`` data (``/usr/share/games/fortunes``), split into sentences;
- WordNet's glosses and usage examples (Debian's ``wordnet-base``, ``/usr/share/wordnet``): a much wider
  vocabulary (about 137 000 short modern sentences and phrases) for the ``wordnet`` pack source.

Evaluation sentences are drawn first with a fixed seed and never reach a training pool.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
# The English files of Debian 12's ``fortunes`` and ``fortunes-min``, by name, so that another fortune package
# installed on the machine (fortune-anarchism, fortunes-bofh-excuses, ...) cannot change the sentence pool, and
# with it which sentences are held out. Left out: ascii art, code and lists of definitions (art, ascii-art,
# definitions, linuxcookie, perl, songs-poems), which make poor speech.
FORTUNE_FILES = (
    "computers",
    "cookie",
    "debian",
    "disclaimer",
    "drugs",
    "education",
    "ethnic",
    "food",
    "fortunes",
    "goedel",
    "humorists",
    "kids",
    "knghtbrd",
    "law",
    "linux",
    "literature",
    "love",
    "magic",
    "medicine",
    "men-women",
    "miscellaneous",
    "news",
    "paradoxum",
    "people",
    "pets",
    "platitudes",
    "politics",
    "pratchett",
    "riddles",
    "science",
    "sports",
    "startrek",
    "tao",
    "translate-me",
    "wisdom",
    "work",
    "zippy",
)

_ONES = "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN FOURTEEN FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN".split()
_TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()


def number_words(n: int) -> str:
    """English words for 0 <= n < 10**9 (years like 1984 read as NINETEEN EIGHTY FOUR)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if 1100 <= n < 2000 and n % 100 != 0:  # years
        return number_words(n // 100) + " " + number_words(n % 100)
    if n < 1000:
        return _ONES[n // 100] + " HUNDRED" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for div, word in ((10**6, "MILLION"), (1000, "THOUSAND")):
        if n >= div:
            rest = n % div
            return number_words(n // div) + " " + word + ("" if rest == 0 else " " + number_words(rest))
    raise ValueError(n)


_SYMBOLS = {"&": " AND ", "%": " PERCENT ", "+": " PLUS ", "=": " EQUALS ", "@": " AT ", "$": " DOLLARS "}


def normalize(text: str) -> str:
    """Upper-case A-Z, apostrophe and single spaces; digits spelt out; anything else becomes a space."""
    text = text.replace("\u2019", "'").replace("`", "'")
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} " if len(m.group()) <= 9 else " ", text)
    text = text.upper()
    text = re.sub(r"[^A-Z' ]+", " ", text)
    text = re.sub(r"(?<![A-Z])'|'(?![A-Z])", " ", text)  # quotes, not apostrophes
    return " ".join(text.split())


def fortune_sentences(root: Path = FORTUNE_DIR, min_words: int = 3, max_words: int = 28) -> list[str]:
    """Normalised, de-duplicated sentences from the fortune files (sorted, so deterministic)."""
    out: set[str] = set()
    if not root.is_dir():
        return []
    for name in sorted(FORTUNE_FILES):
        path = root / name
        if not path.is_file():
            continue
        raw = path.read_text(encoding="latin-1", errors="replace")
        for cookie in raw.split("\n%\n"):
            if re.search(r"[{}<>|\\_#]|\t|  {3,}\S", cookie):  # code, tables, art
                continue
            cookie = re.sub(r"\n\s*--.*$", "", cookie.strip(), flags=re.S)  # attribution
            cookie = " ".join(cookie.split())
            for sent in re.split(r"(?<=[.!?;:])\s+", cookie):
                norm = normalize(sent)
                n = len(norm.split())
                if min_words <= n <= max_words and len(norm) >= 12:
                    out.add(norm)
    return sorted(out)


def wordnet_sentences(root: Path = WORDNET_DIR, min_words: int = 4, max_words: int = 24) -> list[str]:
    """Normalised, de-duplicated glosses and quoted usage examples from WordNet's ``data.*`` files (sorted).

    A synset line ends ``| gloss; "example"; "example"``; each ``;``-separated part is a candidate."""
    out: set[str] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        path = root / f"data.{pos}"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:  # the licence header
                continue
            for part in line.split(" | ", 1)[1].split(";"):
                part = part.strip().strip('"')
                if re.search(r"[()\[\]]|\b(e\.g|i\.e|etc)\b", part):  # asides and abbreviations read badly
                    continue
                norm = normalize(part)
                if min_words <= len(norm.split()) <= max_words:
                    out.add(norm)
    return sorted(out)


def split_eval(sentences: list[str], n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, eval) with ``n_eval`` sentences held out, chosen with a fixed seed."""
    rng = random.Random(seed)
    shuffled = sentences[:]
    rng.shuffle(shuffled)
    return shuffled[n_eval:], shuffled[:n_eval]
