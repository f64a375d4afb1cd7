"""Wav2Vec2-Conformer: the project's engine against transformers, component by component (fp32, atol 1e-4)."""

import numpy as np
import pytest
import torch

from engines.api import load_model
from tests import hf_tiny

pytest.importorskip("transformers")

ATOL = 1e-4

VARIANTS = {
    "relative": dict(position_embeddings_type="relative"),
    "rotary": dict(position_embeddings_type="rotary"),
    "none": dict(position_embeddings_type=None),
    "layer_cnn": dict(position_embeddings_type="rotary", feat_extract_norm="layer", conv_bias=True),
    "weighted": dict(position_embeddings_type="relative", use_weighted_layer_sum=True),
}
HEADS = ("ctc", "frame", "xvector", "sequence", "base")
# every head once on the default variant; each other variant on the heads its change touches
CASES = [("relative", h) for h in HEADS] + [
    ("rotary", "ctc"),
    ("rotary", "xvector"),
    ("none", "ctc"),
    ("layer_cnn", "ctc"),
    ("layer_cnn", "base"),
    ("weighted", "frame"),
    ("weighted", "sequence"),
    ("weighted", "xvector"),
]


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(2)
    a = torch.from_numpy((0.1 * rng.standard_normal((2, 8000))).astype(np.float32))
    mask = torch.ones(2, 8000, dtype=torch.long)
    mask[1, 5500:] = 0
    a[1, 5500:] = 0.0
    return a, mask


def _close(ours, ref, mask=None):
    if mask is not None:
        ours, ref = ours[mask], ref[mask]
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant,head", CASES)
@torch.no_grad()
def test_matches_transformers(tmp_path_factory, audio, variant, head):
    path = hf_tiny.build_tiny(
        "wav2vec2-conformer", head, tmp_path_factory.mktemp(f"{variant}-{head}"), **VARIANTS[variant]
    )
    model, ref = load_model(path), hf_tiny.reference(path)
    ours = model.module
    ref_base = ref if head == "base" else ref.wav2vec2_conformer
    x, attention_mask = audio

    # feature encoder and projection
    cnn = ours.backbone.feature_extractor(x)
    _close(cnn, ref_base.feature_extractor(x))
    _close(ours.backbone.feature_projection(cnn.transpose(1, 2)), ref_base.feature_projection(cnn.transpose(1, 2))[0])

    # each layer and the whole encoder, single utterance (HF's conv module leaks padding in batches)
    x0 = x[:1]
    h = ours.features(x0)
    want = ref_base(x0, output_hidden_states=True)
    last, states = ours.backbone.encoder(h, [None] * len(ours.backbone.encoder.layers))
    for a, b in zip(states, want.hidden_states):
        _close(a, b)
    _close(last, want.last_hidden_state)

    # heads, batched with padding
    got = ours(x, attention_mask)
    out = ref(x, attention_mask=attention_mask)
    if head in ("ctc", "frame"):
        _close(got.frames[:1], out.logits[:1])  # padded utterance: HF's conv sees its padding; see above
    elif head == "sequence":
        _close(ours(x0).utterance, ref(x0).logits)
    elif head == "xvector":
        one, ref_one = ours(x0), ref(x0)
        _close(one.utterance, ref_one.embeddings)
        _close(one.utterance_logits, ref_one.logits)
    else:
        _close(got.frames[:1], out.last_hidden_state[:1])


def test_unsupported_values_are_refused(tmp_path):
    import json

    from engines.errors import UnsupportedConfigError

    path = hf_tiny.build_tiny("wav2vec2-conformer", "ctc", tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["position_embeddings_type"] = "relative_key"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedConfigError, match="relative_key"):
        load_model(path)
