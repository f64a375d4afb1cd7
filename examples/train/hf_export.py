"""Write a W2V-BERT engine as an HF-layout checkpoint (a training tool, not part of the runtime).

``save_pretrained(engine, out_dir, vocab=None)`` writes ``config.json`` (``architectures``
["Wav2Vec2BertForCTC"] etc.), ``model.safetensors`` with exact HF keys (transformers'
``Wav2Vec2BertForCTC.from_pretrained`` loads it with no missing or unexpected keys),
``preprocessor_config.json`` (with the engine's streaming normalisation prior, if it has one) and,
if given, ``vocab.json``. ``engines.model.load_model`` loads the result.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from engines import frontend_fbank as fbank
from engines.wav2vec2_bert import ARCHITECTURES, Wav2Vec2BertConfig, Wav2Vec2BertEngine

__all__ = ["save_pretrained", "hf_config_dict"]

_HEAD_ARCH = {head: arch for arch, head in ARCHITECTURES.items()}


def hf_config_dict(cfg: Wav2Vec2BertConfig, head: str) -> dict[str, Any]:
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    d.pop("num_labels")
    d.update(model_type="wav2vec2-bert", architectures=[_HEAD_ARCH[head]])
    if head in ("frame", "sequence", "xvector"):
        n = cfg.num_labels
        d["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
        d["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    # inference-only checkpoint: no SpecAugment, no dropout, no layerdrop
    d.update(
        mask_time_prob=0.0,
        layerdrop=0.0,
        hidden_dropout=0.0,
        activation_dropout=0.0,
        attention_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        conformer_conv_dropout=0.0,
    )
    return d


def save_pretrained(engine: Wav2Vec2BertEngine, out_dir: str | Path, vocab: dict[str, int] | None = None) -> Path:
    """Write an HF-layout checkpoint that transformers and ``engines.model.load_model`` both load
    (with the engine's streaming normalisation prior, if it has one, in preprocessor_config.json)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config_dict(engine.config, engine.head), indent=2))
    sd = {k: v.detach().contiguous().cpu() for k, v in engine.state_dict().items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    preprocessor = {
        "feature_extractor_type": "SeamlessM4TFeatureExtractor",
        "processor_class": "Wav2Vec2BertProcessor",
        "feature_size": 80,
        "num_mel_bins": 80,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": True,
        "sampling_rate": 16000,
        "stride": 2,
    }
    if engine.fbank_prior is not None:
        preprocessor[fbank.PRIOR_KEY] = engine.fbank_prior.to_json()
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    if vocab is not None:
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    return out
