"""Tiny random-init CTC checkpoints in the file layouts public hub checkpoints have (test-only).

    d = build_zoo(Layout(variant="wavlm", tokenizer="current"), tmp_path / "m")
    expected = reference_transcript(d, audio)      # transformers' processor.batch_decode(argmax)

A ``Layout`` names one choice per axis; ``build_zoo`` writes the checkpoint with ``transformers``
the way its users do (``save_pretrained`` of model and processor), or by hand where the layout
predates today's ``transformers`` (files as ``facebook/wav2vec2-base-960h`` has them,
``pytorch_model.bin``, ``added_tokens.json`` without ``added_tokens_decoder``).

Axes:
  variant      the six engine variants: wav2vec2 group-norm ("w2v2-group"), wav2vec2 layer-norm
               ("w2v2-layer"), "wavlm", Conformer relative / rotary ("conformer-rel",
               "conformer-rot"), "w2v-bert"
  vocab        "angle30": <pad> <unk> | A..Z ' (30 tokens, no <s> </s>: the tutorial vocabulary
               that makes transformers append <s>, </s> as ids 30, 31);
               "base960h": <pad> <s> </s> <unk> | E T A ... (32, specials inside vocab.json);
               "bracket": | ' a..z [UNK] [PAD] (the XLSR fine-tuning tutorial's, lower case)
  head         "vocab": CTC head = len(vocab.json) (config vocab_size; the defect of issue 17);
               "tokenizer": CTC head = len(tokenizer), appended specials included (the tutorial)
  tokenizer    "current": Wav2Vec2CTCTokenizer.save_pretrained by this transformers
               (added_tokens_decoder in tokenizer_config.json + added_tokens.json);
               "legacy-960h": vocab.json + special_tokens_map.json + a minimal tokenizer_config.json;
               "legacy-added": transformers 4.x files: added_tokens.json, special_tokens_map.json,
               tokenizer_config.json without added_tokens_decoder
  processor    "processor_config": processor.save_pretrained by this transformers (the feature
               extractor nested in processor_config.json, no preprocessor_config.json);
               "preprocessor": preprocessor_config.json only (feature_extractor.save_pretrained);
               "with_lm": Wav2Vec2ProcessorWithLM with language_model/ (a tiny ARPA)
  weights      "safetensors" | "sharded" (model.safetensors.index.json) | "bin" (pytorch_model.bin,
               legacy weight_g/weight_v) | "bin-sharded" (pytorch_model.bin.index.json) |
               "fp16" | "bf16" (stored half precision, safetensors)
  do_normalize, return_attention_mask: the Wav2Vec2FeatureExtractor fields (W2V-BERT's
               SeamlessM4TFeatureExtractor has neither)
  config       config.json fields to set (ones the engines must honour); training_fields and
               bookkeeping add the ones they ignore

The lm_head is scaled (``logit_scale``) so that argmax over random weights changes from frame to
frame: the transcript has several words, and an equality test on it can fail.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.hf_tiny import _perturb, _quiet, _to_legacy_weight_norm, model_class, tiny_config

VARIANTS = ("w2v2-group", "w2v2-layer", "wavlm", "conformer-rel", "conformer-rot", "w2v-bert")

_VARIANT: dict[str, tuple[str, dict[str, Any]]] = {
    "w2v2-group": ("wav2vec2", dict(feat_extract_norm="group", do_stable_layer_norm=False)),
    "w2v2-layer": ("wav2vec2", dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)),
    "wavlm": ("wavlm", dict(feat_extract_norm="group", do_stable_layer_norm=False)),
    "conformer-rel": ("wav2vec2-conformer", dict(position_embeddings_type="relative")),
    "conformer-rot": ("wav2vec2-conformer", dict(position_embeddings_type="rotary", feat_extract_norm="layer")),
    "w2v-bert": ("wav2vec2-bert", {}),
}

VOCABS: dict[str, list[str]] = {
    "angle30": ["<pad>", "<unk>", "|", *string.ascii_uppercase, "'"],
    "base960h": ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"],
    "bracket": ["|", "'", *string.ascii_lowercase, "[UNK]", "[PAD]"],
}
_SPECIALS = {  # vocab -> (unk, pad)
    "angle30": ("<unk>", "<pad>"),
    "base960h": ("<unk>", "<pad>"),
    "bracket": ("[UNK]", "[PAD]"),
}

# config.json fields real fine-tuned checkpoints carry that inference ignores (SpecAugment,
# dropouts, LayerDrop, CTC loss options, pre-training objective sizes, bookkeeping)
TRAINING_FIELDS: dict[str, Any] = dict(
    apply_spec_augment=True,
    mask_time_prob=0.05,
    mask_time_length=10,
    mask_time_min_masks=2,
    mask_feature_prob=0.01,
    mask_feature_length=10,
    mask_feature_min_masks=0,
    hidden_dropout=0.1,
    activation_dropout=0.05,
    attention_dropout=0.1,
    feat_proj_dropout=0.1,
    feat_quantizer_dropout=0.0,
    final_dropout=0.1,
    layerdrop=0.1,
    ctc_loss_reduction="mean",
    ctc_zero_infinity=True,
    diversity_loss_weight=0.1,
    num_codevectors_per_group=320,
    num_codevector_groups=2,
    contrastive_logits_temperature=0.1,
    num_negatives=100,
    codevector_dim=256,
    proj_codevector_dim=256,
    gradient_checkpointing=False,
    initializer_range=0.02,
)
# written into config.json after saving (no config attribute in this transformers)
BOOKKEEPING_FIELDS: dict[str, Any] = dict(torch_dtype="float32", transformers_version="4.36.2", _name_or_path="x/y")


@dataclass(frozen=True)
class Layout:
    variant: str = "w2v2-group"
    vocab: str = "angle30"
    head: str = "vocab"
    tokenizer: str = "current"
    do_lower_case: bool = False
    processor: str = "processor_config"
    weights: str = "safetensors"
    do_normalize: bool = True
    return_attention_mask: bool = True
    config: dict[str, Any] = field(default_factory=dict)  # config.json fields to set
    training_fields: bool = False  # add TRAINING_FIELDS to config.json
    bookkeeping: bool = False  # add BOOKKEEPING_FIELDS to config.json
    logit_scale: float = 8.0
    blank_bias: float = 1.0  # added to the blank's and the word delimiter's lm_head bias
    seed: int = 0

    @property
    def family(self) -> str:
        return _VARIANT[self.variant][0]


def _tokenizer(layout: Layout, work: Path):
    import transformers

    unk, pad = _SPECIALS[layout.vocab]
    vocab_file = work / "vocab-src.json"
    vocab_file.write_text(json.dumps({t: i for i, t in enumerate(VOCABS[layout.vocab])}))
    tok = transformers.Wav2Vec2CTCTokenizer(
        str(vocab_file), unk_token=unk, pad_token=pad, word_delimiter_token="|", do_lower_case=layout.do_lower_case
    )
    vocab_file.unlink()
    return tok


def _feature_extractor(layout: Layout):
    import transformers

    if layout.family == "wav2vec2-bert":
        return transformers.SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=2)
    return transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=layout.do_normalize,
        return_attention_mask=layout.return_attention_mask,
    )


def _tiny_arpa(words: list[str]) -> str:
    """A unigram + bigram ARPA over ``words`` (uniform, valid for kenlm)."""
    uni = ["<s>", "</s>", "<unk>", *words]
    bi = [(a, b) for a in words[:3] for b in words[:3]]
    lines = ["\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bi)}", "", "\\1-grams:"]
    lines += [f"-1.0\t{w}\t-0.3" if w != "</s>" else f"-1.0\t{w}" for w in uni]
    lines += ["", "\\2-grams:"] + [f"-0.5\t{a} {b}" for a, b in bi] + ["", "\\end\\", ""]
    return "\n".join(lines)


def _write_legacy_tokenizer(layout: Layout, d: Path) -> None:
    vocab = {t: i for i, t in enumerate(VOCABS[layout.vocab])}
    unk, pad = _SPECIALS[layout.vocab]
    (d / "vocab.json").write_text(json.dumps(vocab))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": unk, "pad_token": pad}
    (d / "special_tokens_map.json").write_text(json.dumps(specials))
    if layout.tokenizer == "legacy-960h":  # byte for byte the keys wav2vec2-base-960h has
        cfg = {**specials, "do_lower_case": layout.do_lower_case, "return_attention_mask": False, "do_normalize": True}
        (d / "tokenizer_config.json").write_text(json.dumps(cfg))
        return
    # transformers 4.x save_pretrained: appended specials in added_tokens.json only
    appended = [t for t in ("<s>", "</s>") if t not in vocab]
    added = {t: len(vocab) + i for i, t in enumerate(appended)}
    if added:
        (d / "added_tokens.json").write_text(json.dumps(added))
    cfg = {
        **specials,
        "do_lower_case": layout.do_lower_case,
        "word_delimiter_token": "|",
        "replace_word_delimiter_char": " ",
        "tokenizer_class": "Wav2Vec2CTCTokenizer",
        "processor_class": "Wav2Vec2Processor",
        "name_or_path": "./",
        "special_tokens_map_file": None,
    }
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))


def _save_weights(model: torch.nn.Module, layout: Layout, d: Path) -> None:
    w = layout.weights
    if w == "safetensors":
        model.save_pretrained(d)
    elif w == "sharded":
        model.save_pretrained(d, max_shard_size="40KB")
        assert (d / "model.safetensors.index.json").is_file() and len(list(d.glob("model-*.safetensors"))) > 1
    elif w in ("fp16", "bf16"):
        model.to(torch.float16 if w == "fp16" else torch.bfloat16).save_pretrained(d)
        model.float()
    elif w in ("bin", "bin-sharded"):
        # transformers 4.x wrote pytorch_model.bin (torch.save of the state dict, weight_g/weight_v)
        model.config.architectures = [type(model).__name__]
        model.config.save_pretrained(d)
        sd = _to_legacy_weight_norm({k: v.contiguous() for k, v in model.state_dict().items()})
        if w == "bin":
            torch.save(sd, d / "pytorch_model.bin")
        else:
            keys = sorted(sd)
            shards = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
            weight_map = {}
            for i, part in enumerate(shards):
                name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
                torch.save({k: sd[k] for k in part}, d / name)
                weight_map.update({k: name for k in part})
            total = sum(t.numel() * t.element_size() for t in sd.values())
            (d / "pytorch_model.bin.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
            )
    else:
        raise ValueError(w)


def build_zoo(layout: Layout, out_dir: str | Path) -> Path:
    """Write the checkpoint of ``layout`` into ``out_dir`` and return it."""
    import transformers

    _quiet()
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    family, variant_cfg = _VARIANT[layout.variant]
    tok = _tokenizer(layout, d)
    n_vocab = len(VOCABS[layout.vocab])
    vocab_size = n_vocab if layout.head == "vocab" else len(tok)
    cfg_kw = dict(variant_cfg, vocab_size=vocab_size, pad_token_id=tok.pad_token_id)
    if layout.training_fields:
        cfg_kw.update(TRAINING_FIELDS)
    cfg_kw.update(layout.config)
    torch.manual_seed(layout.seed)
    model = model_class(family, "ctc")(tiny_config(family, **cfg_kw)).eval()
    _perturb(model, layout.seed, 0.02)
    with torch.no_grad():  # logits that change from frame to frame, with blanks and word breaks
        model.lm_head.weight.mul_(layout.logit_scale)
        model.lm_head.bias[tok.pad_token_id] += layout.blank_bias
        model.lm_head.bias[tok.convert_tokens_to_ids("|")] += layout.blank_bias
    _save_weights(model, layout, d)
    if layout.bookkeeping:
        raw = json.loads((d / "config.json").read_text())
        raw.update(BOOKKEEPING_FIELDS)
        (d / "config.json").write_text(json.dumps(raw, indent=2))

    fe = _feature_extractor(layout)
    if layout.tokenizer != "current":
        _write_legacy_tokenizer(layout, d)
        if layout.processor != "preprocessor":
            raise ValueError(
                "hand-written tokenizer layouts predate processor_config.json; use processor='preprocessor'"
            )
        fe.save_pretrained(d)
        return d
    if layout.processor == "preprocessor":  # transformers < 4.40: feature extractor and tokenizer files
        fe.save_pretrained(d)
        tok.save_pretrained(d)
    elif layout.processor == "processor_config":
        proc_cls = transformers.Wav2Vec2BertProcessor if family == "wav2vec2-bert" else transformers.Wav2Vec2Processor
        proc_cls(feature_extractor=fe, tokenizer=tok).save_pretrained(d)
    elif layout.processor == "with_lm":
        from pyctcdecode import build_ctcdecoder

        labels = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
        arpa = d.parent / f"{d.name}-lm.arpa"
        arpa.write_text(_tiny_arpa(["A", "NO", "TEA", "ONE", "HAT"]))
        decoder = build_ctcdecoder(labels, kenlm_model_path=str(arpa))
        transformers.Wav2Vec2ProcessorWithLM(feature_extractor=fe, tokenizer=tok, decoder=decoder).save_pretrained(d)
        arpa.unlink()
    else:
        raise ValueError(layout.processor)
    return d


def reference_transcript(model_dir: Path, audio: np.ndarray, **config_overrides: Any) -> str:
    """transformers' greedy transcript: AutoProcessor features, argmax of the fp32 model's logits,
    ``batch_decode`` (the tokenizer's, for a ProcessorWithLM, whose own batch_decode is beam search).
    ``config_overrides`` go to ``from_pretrained`` (to show that a field changes the transcript)."""
    import transformers

    _quiet()
    processor = transformers.AutoProcessor.from_pretrained(str(model_dir))
    model = transformers.AutoModelForCTC.from_pretrained(str(model_dir), dtype=torch.float32, **config_overrides).eval()
    with torch.no_grad():
        inputs = processor(audio=audio, sampling_rate=16000, return_tensors="pt")
        inputs = {k: v for k, v in inputs.items() if k in ("input_values", "input_features", "attention_mask")}
        ids = model(**inputs).logits.argmax(-1)
    decode = processor.tokenizer.batch_decode if hasattr(processor, "decoder") else processor.batch_decode
    return decode(ids)[0]
