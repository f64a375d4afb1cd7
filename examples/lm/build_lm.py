"""Build the n-gram LM that goes with the default model, from its training text only.

    .venv/bin/python -m examples.lm.build_lm [--texts data/work/texts.json] [--order 3] [--out data/lm]

The text is the default-model recipe's training sentence pool (``texts.json`` ``train``, made by
``python -m examples.train.build_data --stages texts``): fortunes, ARCTIC prompts and LJ prompts
read by philipp, with the held-out fortune sentences and every LJ Speech subset transcript already
removed. This script checks again that no evaluation sentence is in the LM text, so a WER
measured on the held-out sets is not helped by an LM that saw the test sentences.

``--so762`` (issue 22) adds the transcripts of speechocean762's training speakers (``build_data``'s
``real_train_utts``: its held-out speakers and every held-out sentence already out, checked again here).

Writes ``OUT/lm.arpa`` (interpolated modified Kneser-Ney, examples.lm.lm_build), ``OUT/unigrams.txt``
and ``OUT/lm_text.txt``. With KenLM's tools on PATH (``examples/lm/build_kenlm_tools.sh``),
``build_binary OUT/lm.arpa OUT/lm.bin`` makes a binary that loads faster.

Use it: ``speechstream eval MANIFEST --lm OUT/lm.arpa``; in Python,
``RecognizerConfig(lm_path="OUT/lm.arpa")``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.lm.lm_build import BOS, EOS, UNK, build_arpa, write_arpa  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=Path, default=Path("data/work/texts.json"))
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("data/lm"))
    ap.add_argument("--decimals", type=int, default=6, help="digits after the point of the ARPA's log10 values")
    ap.add_argument(
        "--so762", action="store_true", help="add the speechocean762 training speakers' transcripts to the LM text"
    )
    args = ap.parse_args(argv)
    if not args.texts.is_file():
        print(
            f"error: {args.texts} not found; run: python -m examples.train.build_data --stages texts", file=sys.stderr
        )
        return 2
    texts = json.loads(args.texts.read_text())
    train, held = texts["train"], set(texts["eval"]) | set(texts.get("lj_excluded", []))
    if args.so762:
        from examples.train.build_data import HELDOUT_REAL, SO762, heldout_real_rows, real_train_utts

        held |= {t for name, (folder, _) in HELDOUT_REAL.items() if folder == SO762 for _, t in heldout_real_rows(name)}
        extra = [t for _, _, t in real_train_utts(folders=[SO762])]
        print(f"speechocean762: {len(extra)} training-speaker transcripts added")
        train = train + extra
    leaked = [s for s in train if s in held]
    if leaked:
        print(f"error: {len(leaked)} evaluation sentences in the training pool, e.g. {leaked[0]!r}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lm_text.txt").write_text("\n".join(train) + "\n")
    probs, backoffs = build_arpa([s.split() for s in train], order=args.order)
    write_arpa(probs, backoffs, args.out / "lm.arpa", decimals=args.decimals)
    words = sorted(g[0] for g in probs[1] if g[0] not in (BOS, EOS, UNK))
    (args.out / "unigrams.txt").write_text("\n".join(words) + "\n")
    sizes = ", ".join(f"{len(probs[n])} {n}-grams" for n in range(1, args.order + 1))
    print(
        f"wrote {args.out / 'lm.arpa'} from {len(train)} sentences ({sizes}); held-out sentences excluded: {len(held)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
