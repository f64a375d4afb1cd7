"""Choose the LM weight (alpha) and word bonus (beta) on a DEV manifest, never on the test set.

    .venv/bin/python -m examples.lm.tune DEV_MANIFEST --model DIR --lm data/lm/lm.arpa [--limit 100]

Runs the model offline once per utterance, then beam-decodes the stored log-probs over a grid of
alpha x beta (x the unknown-word offset, with ``--unk-offsets``; beam 32 unless ``--beam-width``)
and prints WER/CER per point, greedy first, best last. Pass the winner to
``speechstream eval TEST_MANIFEST --lm ... --lm-alpha A --lm-beta B``, or write it, offset included,
to the checkpoint's ``language_model/attrs.json`` with ``--write-model-lm``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    import jiwer
    import torch

    from engines.api import load_model
    from engines.ctc import log_softmax
    from engines.lm import BeamDecoder, LMConfig
    from engines.tokenizer import CTCTokenizer
    from speechstream.eval import _load_audio, normalize_text, read_manifest

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--lm", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--alphas", default="0.2,0.35,0.5,0.7,1.0")
    ap.add_argument("--betas", default="0,0.5,1,2")
    ap.add_argument(
        "--unk-offsets",
        default=None,
        help="comma-separated unk_score_offset values to grid over as well (pyctcdecode's "
        "log10 penalty for a word the LM does not know), written with '=' as the values are "
        "negative: --unk-offsets=-7,-10,-15; default: only LMConfig's, -10",
    )
    ap.add_argument("--beam-width", type=int, default=32)
    ap.add_argument(
        "--write-model-lm",
        action="store_true",
        help="copy the LM into MODEL/language_model/ with the best alpha, beta and offset in attrs.json "
        "(the checkpoint then uses it by default; `--lm none` turns it off)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    model = load_model(args.model)
    tok = CTCTokenizer.from_dir(model.vocab_dir).for_model(int(model.config.vocab_size))
    items = read_manifest(args.manifest, args.limit)
    refs, lps = [], []
    with torch.inference_mode():
        for audio, text in items:
            logits = model.forward(torch.from_numpy(_load_audio(audio))).frames[0].float().numpy()
            lps.append(log_softmax(logits))
            refs.append(normalize_text(text))

    def score(hyps: list[str]) -> tuple[float, float]:
        hyps = [normalize_text(h) for h in hyps]
        return float(jiwer.wer(refs, hyps)), float(jiwer.cer(refs, hyps))

    rows = [("greedy", "-", "-", "-", *score([tok.decode(lp.argmax(-1).tolist()) for lp in lps]))]
    nolm = BeamDecoder(tok, LMConfig(beam_width=args.beam_width))
    rows.append(("beam, no LM", "-", "-", "-", *score(nolm.decode_many(lps))))
    base = BeamDecoder(tok, LMConfig(lm_path=args.lm, beam_width=args.beam_width))  # loads the LM once
    unks = [float(x) for x in args.unk_offsets.split(",")] if args.unk_offsets else [LMConfig().unk_score_offset]
    for u in unks:
        for a in [float(x) for x in args.alphas.split(",")]:
            for b in [float(x) for x in args.betas.split(",")]:
                dec = base.reweighted(a, b, u)
                rows.append(("beam + LM", f"{a:g}", f"{b:g}", f"{u:g}", *score(dec.decode_many(lps))))
    print(f"# {args.manifest} ({len(items)} utterances), model {args.model}, LM {args.lm}")
    print("| decoder | alpha | beta | unk offset | WER | CER |\n|---|---|---|---|---|---|")
    for name, a, b, u, w, c in rows:
        print(f"| {name} | {a} | {b} | {u} | {100 * w:.2f}% | {100 * c:.2f}% |")
    best = min(rows[2:], key=lambda r: (r[4], r[5]))
    print(
        f"\nbest on this dev set: alpha {best[1]}, beta {best[2]}, unk offset {best[3]}: WER {100 * best[4]:.2f}% "
        f"(greedy {100 * rows[0][4]:.2f}%)"
    )
    print("command: .venv/bin/python -m examples.lm.tune " + " ".join(sys.argv[1:]))
    if args.write_model_lm:
        import json
        import shutil

        folder = Path(args.model) / "language_model"
        folder.mkdir(exist_ok=True)
        for old in list(folder.glob("*.arpa")) + list(folder.glob("*.bin")):
            old.unlink()
        shutil.copyfile(args.lm, folder / Path(args.lm).name)
        attrs = {"alpha": float(best[1]), "beta": float(best[2]), "unk_score_offset": float(best[3])}
        (folder / "attrs.json").write_text(json.dumps(attrs, indent=2) + "\n")
        print(f"wrote {folder} ({Path(args.lm).name}, {attrs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
