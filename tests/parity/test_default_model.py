"""The bundled default model (engines/default_model): transformers loads it as Wav2Vec2BertForCTC and
its logits equal the project's engine on the same audio; its tokenizer files match the vocabulary.

examples/train/run.sh makes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

MODEL_DIR = Path(__file__).resolve().parents[2] / "engines" / "default_model"


def test_default_model_is_bundled_within_25_mb():
    """The repo ships the model (weights, tokenizer, LM, card); the product card caps it at 25 MB."""
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "vocab.json",
        "tokenizer_config.json",
        "README.md",
        "language_model/attrs.json",
    ):
        assert (MODEL_DIR / name).is_file(), name
    assert list((MODEL_DIR / "language_model").glob("*.arpa")) or list((MODEL_DIR / "language_model").glob("*.bin"))
    total = sum(f.stat().st_size for f in MODEL_DIR.rglob("*") if f.is_file())
    assert total <= 25_000_000, total


def _audio(seconds: float = 2.0) -> torch.Tensor:
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    x = 0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
    return torch.from_numpy(x.astype(np.float32))


def test_transformers_logits_equal_engine():
    transformers = pytest.importorskip("transformers")
    from engines.api import load_model

    hf = transformers.Wav2Vec2BertForCTC.from_pretrained(str(MODEL_DIR)).eval()
    fe = transformers.SeamlessM4TFeatureExtractor.from_pretrained(str(MODEL_DIR))
    x = _audio()
    inputs = fe(x.numpy(), sampling_rate=16000, return_tensors="pt")
    model = load_model(MODEL_DIR)
    with torch.no_grad():
        ref = hf(**inputs).logits
        encoder_only = model.module(inputs["input_features"], None).frames
    feats, _ = model.frontend(x[None], None)
    ours = model.forward(x[None]).frames
    # The encoder on transformers' own features: the same arithmetic (measured: bit-equal).
    torch.testing.assert_close(encoder_only, ref, atol=1e-5, rtol=1e-5)
    # The fbank in float32 against the extractor's float64 numpy: ~1e-5 apart (tests/parity/test_fbank.py),
    # which the trained network amplifies; measured end to end 9e-5 (stage g) and 2.9e-4 (stage h) on logits
    # up to 21 in size.
    torch.testing.assert_close(feats, inputs["input_features"], atol=5e-5, rtol=1e-5)
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-4)
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


def test_tokenizer_files_match_vocab():
    transformers = pytest.importorskip("transformers")
    vocab = json.loads((MODEL_DIR / "vocab.json").read_text())
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["vocab_size"] == len(vocab) and vocab["<pad>"] == 0 and "|" in vocab
    tok = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(MODEL_DIR))
    assert tok.pad_token_id == 0 and tok.word_delimiter_token == "|"
    ids = [vocab["H"], vocab["H"], 0, vocab["I"], vocab["|"], vocab["T"], vocab["'"], vocab["S"]]
    assert tok.decode(ids) == "HI T'S"


def test_default_model_streams_from_its_training_set_prior():
    """The bundled model carries the fbank statistics of its training data, and its cached mode
    starts the running normalisation from them (exactly the features `stream_features` gives)."""
    from engines import frontend_fbank as fb
    from engines.api import load_model

    model = load_model(MODEL_DIR)
    prior = model.module.fbank_prior
    assert prior is not None and prior.frames == 200.0
    # log-mel of 16-bit-scaled speech: bin means of a few units to ~20, spreads of a few units
    assert (
        0 < float(prior.mean.min()) < float(prior.mean.max()) < 25
        and 1 < float(prior.std.min()) < float(prior.std.max()) < 8
    )
    x = _audio(1.5)
    got = model.stream(x, "cached", chunk_ms=320, left_context_ms=10240, lookahead_ms=0)
    feats = fb.stream_features(x, prior=prior)
    with torch.no_grad():
        want = model.module(feats[None], chunk_frames=16, left_frames=512, chunk_offset=1).frames[0]
    torch.testing.assert_close(got, want[: got.shape[0]], atol=1e-4, rtol=0)
