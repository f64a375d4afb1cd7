"""Build an n-gram LM from text: interpolated modified Kneser-Ney, written as ARPA (KenLM loads it).

::

    python -m examples.lm.lm_build corpus.txt lm.arpa --order 3 [--upper] [--unigrams unigrams.txt]

Debian has no ``lmplz``, so this writes the ARPA file itself, with the smoothing ``lmplz`` uses
(Chen & Goodman's modified Kneser-Ney, interpolated, three discounts per order, no pruning):

- adjusted counts ``a``: raw counts at the highest order and for n-grams starting with ``<s>``;
  continuation counts ``N1+(. w)`` (distinct left contexts) otherwise;
- discounts per order from the counts of counts ``n1..n4`` of ``a``:
  ``Y = n1 / (n1 + 2 n2)``, ``D_k = k - (k + 1) Y n_{k+1} / n_k`` (k = 1, 2, 3+); when the text is
  too small for that (a zero ``n1``, ``n2`` or ``n3``, or a discount outside ``[0, k]``) the
  fallback ``0.5, 1, 1.5`` (``lmplz --discount_fallback``) is used; a test checks the ARPA
  against lmplz's (to 1e-4 in log10) when lmplz is on PATH;
- ``p(w | h) = (a(hw) - D(a(hw))) / a(h.) + gamma(h) p(w | h')`` with
  ``gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3 N3+(h.)) / a(h.)``; unigrams interpolate with the
  uniform distribution over the vocabulary (``<unk>`` included, ``<s>`` excluded);
- the ARPA backoff of a history ``h`` is ``gamma(h)``, so every conditional distribution sums to 1
  (a test checks it through KenLM).

Text normalisation is minimal: whitespace tokenisation, optional upper/lower-casing. Normalise
the corpus like the model's vocabulary (the CTC vocabularies here are upper case A-Z and ').
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["build_arpa", "write_arpa", "main"]

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_FALLBACK = (0.5, 1.0, 1.5)


def _ngrams(sentences: Iterable[Sequence[str]], order: int) -> list[Counter]:
    counts = [Counter() for _ in range(order + 1)]  # counts[n][tuple of n words]
    for words in sentences:
        toks = [BOS, *words, EOS]
        for n in range(1, order + 1):
            for i in range(len(toks) - n + 1):
                g = tuple(toks[i : i + n])
                if n == 1 and g == (BOS,):
                    continue
                counts[n][g] += 1
    return counts


def _adjusted(counts: list[Counter], order: int) -> list[dict]:
    adj: list[dict] = [dict() for _ in range(order + 1)]
    adj[order] = dict(counts[order])
    for n in range(order - 1, 0, -1):
        left: Counter = Counter()
        for g in counts[n + 1]:
            left[g[1:]] += 1  # a distinct left extension of g[1:]
        a = {}
        for g, c in counts[n].items():
            a[g] = c if g[0] == BOS else left.get(g, 0) or c
        adj[n] = a
    return adj


def _discounts(values: Iterable[int]) -> tuple[float, float, float]:
    coc = Counter(v for v in values if v <= 4)
    n1, n2, n3, n4 = (coc.get(k, 0) for k in (1, 2, 3, 4))  # n-grams seen exactly k times
    if min(n1, n2, n3) == 0:  # as lmplz: n4 may be 0 (then D3+ = 3)
        return _FALLBACK
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 <= dk <= k + 1 for k, dk in enumerate(d)):
        return _FALLBACK
    return d


def build_arpa(sentences: Iterable[Sequence[str]], order: int = 3) -> tuple[list[dict], list[dict]]:
    """(probs, backoffs): ``probs[n][ngram] = p`` (natural, not log) and ``backoffs[n][ngram] = gamma``."""
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    sents = [list(s) for s in sentences]
    counts = _ngrams(sents, order)
    if not counts[1]:
        raise ValueError("no words in the text")
    adj = _adjusted(counts, order)
    probs: list[dict] = [dict() for _ in range(order + 1)]
    backoffs: list[dict] = [dict() for _ in range(order + 1)]

    # histories: totals and counts of counts of their extensions, per order
    def history_stats(n: int) -> dict:
        stats: dict = defaultdict(lambda: [0, 0, 0, 0])  # total, N1, N2, N3+
        for g, a in adj[n].items():
            s = stats[g[:-1]]
            s[0] += a
            s[min(a, 3)] += 1
        return stats

    # unigrams: interpolate with the uniform distribution over the vocabulary (+<unk>)
    d = _discounts(adj[1].values())
    vocab = [g for g in adj[1]]
    if (UNK,) not in adj[1]:
        vocab.append((UNK,))
    total, n1, n2, n3 = history_stats(1)[()]
    gamma = (d[0] * n1 + d[1] * n2 + d[2] * n3) / total
    uniform = 1.0 / len(vocab)
    for g in vocab:
        a = adj[1].get(g, 0)
        probs[1][g] = max(a - (d[min(a, 3) - 1] if a else 0), 0) / total + gamma * uniform
    probs[1][(BOS,)] = 0.0  # never predicted; written as -99 like lmplz

    for n in range(2, order + 1):
        d = _discounts(adj[n].values())
        stats = history_stats(n)
        for h, (tot, c1, c2, c3) in stats.items():
            backoffs[n - 1][h] = (d[0] * c1 + d[1] * c2 + d[2] * c3) / tot
        for g, a in adj[n].items():
            h = g[:-1]
            lower = probs[n - 1][g[1:]]
            probs[n][g] = (a - d[min(a, 3) - 1]) / stats[h][0] + backoffs[n - 1][h] * lower
    return probs, backoffs


def _log10(p: float) -> float:
    return -99.0 if p <= 0 else math.log10(p)


def write_arpa(probs: list[dict], backoffs: list[dict], path: str | Path, decimals: int = 6) -> Path:
    """ARPA text; ``decimals`` digits after the point for the log10 values (4 keeps the bundled LM in budget)."""
    path = Path(path)
    order = len(probs) - 1
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        for n in range(1, order + 1):
            f.write(f"ngram {n}={len(probs[n])}\n")
        for n in range(1, order + 1):
            f.write(f"\n\\{n}-grams:\n")
            for g in sorted(probs[n]):
                line = f"{_log10(probs[n][g]):.{decimals}f}\t{' '.join(g)}"
                if n < order:
                    bo = backoffs[n].get(g)
                    if bo is not None:
                        line += f"\t{_log10(bo):.{decimals}f}"
                    elif g[-1] != EOS:
                        line += "\t0"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
    return path


def read_sentences(path: str | Path, case: str | None = None) -> list[list[str]]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if case == "upper":
            line = line.upper()
        elif case == "lower":
            line = line.lower()
        words = line.split()
        if words:
            out.append(words)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.lm.lm_build", description=__doc__.split("\n\n")[0])
    ap.add_argument("text", help="training text, one sentence per line")
    ap.add_argument("arpa", help="output ARPA file")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--upper", action="store_true", help="upper-case the text (for A-Z vocabularies)")
    ap.add_argument("--lower", action="store_true", help="lower-case the text")
    ap.add_argument("--unigrams", help="also write the word list here (for binary LMs)")
    args = ap.parse_args(argv)
    case = "upper" if args.upper else "lower" if args.lower else None
    sents = read_sentences(args.text, case)
    if not sents:
        print(f"error: no sentences in {args.text}", file=sys.stderr)
        return 2
    probs, backoffs = build_arpa(sents, args.order)
    write_arpa(probs, backoffs, args.arpa)
    if args.unigrams:
        words = sorted(g[0] for g in probs[1] if g[0] not in (BOS, EOS, UNK))
        Path(args.unigrams).write_text("\n".join(words) + "\n", encoding="utf-8")
    print(
        f"wrote {args.arpa}: order {args.order}, "
        + ", ".join(f"{len(probs[n])} {n}-grams" for n in range(1, args.order + 1))
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
