"""Tiny random-init transformers checkpoints in HF layout, for tests (transformers is test-only).

    path = build_tiny("wav2vec2", "ctc", tmp_path, feat_extract_norm="layer")
    model = engines.api.load_model(path)

``build_tiny`` builds a seeded random-init model of one of the four families with one head,
perturbs every parameter a little (so LayerNorm weights are not 1, biases not 0 and a bug that
swaps them shows), saves it with ``save_pretrained`` (safetensors), and writes vocab.json,
tokenizer files and preprocessor_config.json next to it. ``reference(path)`` loads it back
with transformers, in eval mode, for comparisons.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

FAMILIES = ("wav2vec2", "wavlm", "wav2vec2-conformer", "wav2vec2-bert")
HEADS = ("ctc", "frame", "xvector", "sequence", "base")

_PREFIX = {
    "wav2vec2": "Wav2Vec2",
    "wavlm": "WavLM",
    "wav2vec2-conformer": "Wav2Vec2Conformer",
    "wav2vec2-bert": "Wav2Vec2Bert",
}
_SUFFIX = {
    "ctc": "ForCTC",
    "frame": "ForAudioFrameClassification",
    "xvector": "ForXVector",
    "sequence": "ForSequenceClassification",
    "base": "Model",
}

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H"]

# small but structurally complete: the standard 7-layer CNN (hop 320, receptive field 400)
# with narrow channels, 2 transformer layers, even positional-conv kernel (exercises SamePad)
_COMMON: dict[str, Any] = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    hidden_dropout=0.0,
    activation_dropout=0.0,
    attention_dropout=0.0,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    layerdrop=0.0,
    vocab_size=len(VOCAB),
    num_labels=3,
    classifier_proj_size=24,
    tdnn_dim=(16, 16, 20),
    tdnn_kernel=(5, 3, 1),
    tdnn_dilation=(1, 2, 1),
    xvector_output_dim=12,
    pad_token_id=0,
    mask_time_prob=0.0,
)
_WAVEFORM: dict[str, Any] = dict(
    conv_dim=(16, 16, 16, 16, 16, 16, 16),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "wav2vec2": dict(_WAVEFORM),
    "wavlm": dict(_WAVEFORM, num_buckets=32, max_bucket_distance=80),
    "wav2vec2-conformer": dict(_WAVEFORM, position_embeddings_type="relative", conv_depthwise_kernel_size=7),
    "wav2vec2-bert": dict(
        feature_projection_input_dim=160,
        conv_depthwise_kernel_size=7,
        position_embeddings_type="relative_key",
        left_max_position_embeddings=16,
        right_max_position_embeddings=4,
        output_hidden_size=32,
    ),
}


def _quiet() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def config_class(family: str):
    import transformers

    _quiet()

    return getattr(transformers, _PREFIX[family] + "Config")


def model_class(family: str, head: str):
    import transformers

    return getattr(transformers, _PREFIX[family] + _SUFFIX[head])


def tiny_config(family: str, **overrides: Any):
    kw = dict(_COMMON)
    kw.update(_FAMILY_DEFAULTS[family])
    kw.update(overrides)
    return config_class(family)(**kw)


def _perturb(model: torch.nn.Module, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _to_legacy_weight_norm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g")
        k = k.replace(".parametrizations.weight.original1", ".weight_v")
        out[k] = v
    return out


def build_tiny(
    family: str,
    head: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    perturb: float = 0.02,
    weight_norm_layout: str = "parametrizations",
    weights_format: str = "safetensors",
    do_normalize: bool = True,
    **overrides: Any,
) -> Path:
    """Build, save and return the directory. ``weight_norm_layout``: "parametrizations"
    (``...parametrizations.weight.original0/1``) or "legacy" (``weight_g``/``weight_v``);
    ``weights_format``: "safetensors" or "bin" (pytorch_model.bin)."""
    assert family in FAMILIES and head in HEADS, (family, head)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_config(family, **overrides)
    model = model_class(family, head)(config).eval()
    _perturb(model, seed, perturb)
    model.save_pretrained(out_dir)  # config.json + model.safetensors

    if weight_norm_layout != "parametrizations" or weights_format != "safetensors":
        from safetensors.torch import load_file, save_file

        sd = load_file(str(out_dir / "model.safetensors"))
        if weight_norm_layout == "legacy":
            sd = _to_legacy_weight_norm(sd)
        elif weight_norm_layout != "parametrizations":
            raise ValueError(weight_norm_layout)
        (out_dir / "model.safetensors").unlink()
        if weights_format == "bin":
            torch.save(sd, out_dir / "pytorch_model.bin")
        else:
            save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

    _write_processor_files(family, out_dir, do_normalize)
    return out_dir


def _write_processor_files(family: str, out_dir: Path, do_normalize: bool) -> None:
    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    (out_dir / "vocab.json").write_text(json.dumps(vocab))
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    )
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Wav2Vec2CTCTokenizer",
                "word_delimiter_token": "|",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "do_lower_case": False,
            }
        )
    )
    if family == "wav2vec2-bert":
        from transformers import SeamlessM4TFeatureExtractor

        SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=2).save_pretrained(
            out_dir
        )
    else:
        from transformers import Wav2Vec2FeatureExtractor

        Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=16000,
            padding_value=0.0,
            do_normalize=do_normalize,
            return_attention_mask=True,
        ).save_pretrained(out_dir)


def reference(path: str | Path):
    """The saved checkpoint loaded back with transformers (eval mode, fp32)."""
    import transformers

    _quiet()
    cfg = json.loads((Path(path) / "config.json").read_text())
    cls = getattr(transformers, cfg["architectures"][0])
    return cls.from_pretrained(str(path)).eval()


# MMS-style multilingual checkpoint: one vocabulary (and adapter file) per language, of different sizes
MMS_VOCABS = {
    "aaa": ["<pad>", "<s>", "</s>", "<unk>", "|", "a", "b", "c", "d", "e", "f", "g"],
    "bbb": ["<pad>", "<s>", "</s>", "<unk>", "|", "x", "y", "z", "w", "v", "u", "t", "s", "r", "q"],
}
MMS_CONFIG: dict[str, Any] = dict(
    feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, adapter_attn_dim=8
)


def build_tiny_mms(
    out_dir: str | Path,
    *,
    seed: int = 0,
    perturb: float = 0.1,
    bin_langs: tuple[str, ...] = (),
    do_normalize: bool = True,
    **overrides: Any,
) -> Path:
    """A tiny ``Wav2Vec2ForCTC`` with MMS attention adapters, laid out as ``facebook/mms-1b-all``: base
    weights (with the first language's adapters and lm_head in them) saved by ``save_pretrained``, then
    ``adapter.<lang>.safetensors`` per language (``adapter.<lang>.bin`` for ``bin_langs``) holding the
    parameters ``Wav2Vec2ForCTC._get_adapters()`` names (adapter layers + an lm_head of that
    language's vocabulary size), a nested ``vocab.json`` and ``target_lang`` in tokenizer_config.json."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    langs = list(MMS_VOCABS)
    kw = dict(MMS_CONFIG, **overrides)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 7)
    adapters = {}
    for i, lang in enumerate(langs):
        model = model_class("wav2vec2", "ctc")(tiny_config("wav2vec2", vocab_size=len(MMS_VOCABS[lang]), **kw)).eval()
        if i == 0:
            base = model
        else:  # the same base weights, another language's adapters and head
            model.load_state_dict(
                {k: v for k, v in base.state_dict().items() if not k.startswith("lm_head.")}, strict=False
            )
        with torch.no_grad():
            for _name, p in model._get_adapters().items():
                p.add_(torch.randn(p.shape, generator=g) * perturb * 3)
        if i == 0:
            _perturb(base, seed, perturb)
        _center_head(model, g)
        adapters[lang] = {k: v.detach().clone().contiguous() for k, v in model._get_adapters().items()}
    base.save_pretrained(out_dir)
    for lang, sd in adapters.items():
        if lang in bin_langs:
            torch.save(sd, out_dir / f"adapter.{lang}.bin")
        else:
            save_file(sd, str(out_dir / f"adapter.{lang}.safetensors"))
    _write_processor_files("wav2vec2", out_dir, do_normalize=do_normalize)
    (out_dir / "vocab.json").write_text(
        json.dumps({lang: {t: i for i, t in enumerate(v)} for lang, v in MMS_VOCABS.items()})
    )
    cfg = json.loads((out_dir / "tokenizer_config.json").read_text())
    cfg["target_lang"] = langs[0]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out_dir


def _center_head(model: torch.nn.Module, g: torch.Generator) -> None:
    """A head that reads how the hidden state changes over time rather than its (large) constant part,
    so random weights give varied transcripts: unit-variance weights, bias = -W @ mean hidden state
    over a probe signal."""
    probe = 0.1 * torch.randn(1, 32000, generator=g)
    with torch.no_grad():
        h = model.wav2vec2(probe).last_hidden_state[0]  # (T, D)
        model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=g) / h.std(0).clamp(min=1e-3))
        model.lm_head.bias.copy_(-(model.lm_head.weight @ h.mean(0)))


def reference_mms(path: str | Path, language: str):
    """(transformers Wav2Vec2ForCTC with ``load_adapter(language)``, Wav2Vec2CTCTokenizer set to it)."""
    import transformers

    _quiet()
    model = transformers.Wav2Vec2ForCTC.from_pretrained(str(path)).eval()
    model.load_adapter(language)
    tok = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(path))
    tok.set_target_lang(language)
    return model.eval(), tok
