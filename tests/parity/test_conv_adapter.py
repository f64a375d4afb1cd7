"""``add_adapter=True`` (the strided conv stack after the encoder, transformers' ``Wav2Vec2Adapter``) on
wav2vec2, WavLM and Wav2Vec2-Conformer against transformers (fp32, atol 1e-4, padded frames masked
out), and the heads transformers itself refuses with it."""

import pytest
import torch

from engines.api import load_model
from engines.errors import UnsupportedConfigError
from tests import hf_tiny
from tests.parity.waveform_parity import audio_batch, close

pytest.importorskip("transformers")
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")

FAMILIES = ("wav2vec2", "wavlm", "wav2vec2-conformer")
VARIANTS = {
    # two stride-2 layers with a down-projection (D' = 24 != 32): frames of 80 ms
    "two_proj": dict(num_adapter_layers=2, output_hidden_size=24),
    # transformers' default stack: three layers, no projection (160 ms frames), GroupNorm CNN
    "three_group": dict(num_adapter_layers=3, feat_extract_norm="group"),
}


@pytest.mark.parametrize("head", ["ctc", "base"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("family", FAMILIES)
def test_matches_transformers(family, variant, head, tmp_path):
    overrides = {"feat_extract_norm": "layer", "add_adapter": True, **VARIANTS[variant]}
    path = hf_tiny.build_tiny(family, head, tmp_path / "m", **overrides)
    ref, model = hf_tiny.reference(path), load_model(path)
    cfg = model.config
    scale = cfg.adapter_stride**cfg.num_adapter_layers
    assert model.samples_per_frame == 320 * scale
    audio, amask = audio_batch((8000, 5600))
    x, xmask = model.frontend(audio, amask.sum(-1))
    with torch.no_grad():
        r = ref(x, attention_mask=xmask)
        out = model.forward(audio, amask.sum(-1))
    want = r.logits if head == "ctc" else r.last_hidden_state
    mask = out.frame_mask
    assert mask.sum(-1).tolist() == ref._get_feat_extract_output_lengths(amask.sum(-1)).tolist()
    close(out.frames, want, f"{family} {head} with adapter", mask)
    assert model.num_frames(8000) == want.shape[1]  # the unpadded row: the conv stack's own length
    if head == "ctc":
        assert torch.equal(out.frames.argmax(-1)[mask], want.argmax(-1)[mask])


@pytest.mark.parametrize("family", FAMILIES)
def test_xvector_head_matches_transformers(family, tmp_path):
    path = hf_tiny.build_tiny(
        family, "xvector", tmp_path / "m", feat_extract_norm="layer", add_adapter=True, num_adapter_layers=1
    )
    ref, model = hf_tiny.reference(path), load_model(path)
    audio, amask = audio_batch((16000, 12000))
    x, xmask = model.frontend(audio, amask.sum(-1))
    with torch.no_grad():
        r = ref(x, attention_mask=xmask)
        out = model.forward(audio, amask.sum(-1))
        # streaming: the head on the streamed frames of the first utterance == offline
        frames = model.stream(audio[0], "window", chunk_ms=4000, normalize="window")  # one window
    close(out.utterance, r.embeddings, f"{family} x-vector embeddings")
    close(out.utterance_logits, r.logits, f"{family} x-vector logits")
    emb, _ = model.pool(frames)
    close(emb, out.utterance[:1], "x-vector of the streamed frames")


@pytest.mark.parametrize("head", ["frame", "sequence"])
def test_heads_transformers_refuses_are_refused(head, tmp_path):
    import json

    path = hf_tiny.build_tiny("wav2vec2", head, tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["add_adapter"] = True
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedConfigError, match=rf"add_adapter.*{head} head \(transformers refuses it too\)"):
        load_model(path)


def test_add_adapter_without_its_weights_names_the_missing_keys(tmp_path):
    import json

    from engines.errors import KeyMismatchError

    path = hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["add_adapter"] = True
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(KeyMismatchError, match=r"missing keys: wav2vec2\.adapter\.layers\.0\.conv\.bias"):
        load_model(path)
