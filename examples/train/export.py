"""Export trained weights to an HF-layout ``Wav2Vec2BertForCTC`` directory.

    python -m examples.train.export --run runs/default --out engines/default_model

Writes config.json, model.safetensors (fp32), preprocessor_config.json (SeamlessM4TFeatureExtractor,
plus the run's streaming normalisation prior ``fbank_prior.json`` if it has one),
vocab.json, tokenizer_config.json and special_tokens_map.json (Wav2Vec2CTCTokenizer: ``<pad>`` is the
CTC blank, ``|`` the word delimiter), through ``examples.train.hf_export.save_pretrained``. The
model card (README.md) in the same directory is written by hand from the eval output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engines import frontend_fbank as fb
from examples.train.hf_export import save_pretrained
from examples.train.train import load_run

TOKENIZER_CONFIG = {
    "tokenizer_class": "Wav2Vec2CTCTokenizer",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": None,
    "eos_token": None,
    "word_delimiter_token": "|",
    "replace_word_delimiter_char": " ",
    "do_lower_case": False,
    "clean_up_tokenization_spaces": False,
    "model_max_length": 1000000,
}
SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>"}


def write_prior_from_pack(
    run: Path,
    pack: Path,
    prior_frames: float,
    seed: int = 1234,
    dev_utts: int = 300,
    skip_sources: tuple[str, ...] = ("festival",),
) -> Path:
    """``fbank_prior.json`` for a run trained before runs recorded one: the statistics train.py
    computes over its training split of the pack (``train.dev_split``; train.py's default 300 dev
    utterances held back; the bundled model's prior was made so, before the pack had ``skip_sources``)."""
    import torch

    from examples.train import features
    from examples.train.train import dev_split, load_pack

    audio, utts = load_pack(pack, None, 2, skip_sources)
    _, train_idx = dev_split(utts, seed, dev_utts)
    prior = features.global_prior(audio, utts, train_idx, torch.device("cpu"), prior_frames)
    path = run / "fbank_prior.json"
    path.write_text(json.dumps(prior.to_json()))
    return path


def export(run: Path, out: Path) -> Path:
    model, cfg = load_run(run)
    prior = run / "fbank_prior.json"
    if prior.is_file():  # the streaming normalisation prior the model was trained with
        model.fbank_prior = fb.FbankPrior.from_json(json.loads(prior.read_text()), str(prior))
    model.eval()
    save_pretrained(model, out, vocab=cfg["vocab"])
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    ap.add_argument("--out", type=Path, default=Path("engines/default_model"))
    ap.add_argument(
        "--prior-from-pack",
        type=Path,
        default=None,
        help="compute the run's fbank_prior.json from this pack first, if the run has none",
    )
    ap.add_argument("--prior-frames", type=float, default=200.0)
    args = ap.parse_args(argv)
    if args.prior_from_pack is not None and not (args.run / "fbank_prior.json").is_file():
        print(write_prior_from_pack(args.run, args.prior_from_pack, args.prior_frames))
    print(export(args.run, args.out))


if __name__ == "__main__":
    sys.exit(main())
