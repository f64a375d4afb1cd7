"""Wav2Vec2 against transformers, component by component, every config variant and head
(fp32, atol 1e-4); the waveform frontend against Wav2Vec2FeatureExtractor."""

import numpy as np
import pytest
import torch

from tests.parity.waveform_parity import HEADS, VARIANTS, check_family

pytest.importorskip("transformers")
# tiny models: threads only add contention on the shared 2-core machine
torch.set_num_threads(1)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_wav2vec2_matches_transformers(variant, head, tmp_path):
    check_family("wav2vec2", variant, head, tmp_path)


@pytest.mark.parametrize("do_normalize", [True, False])
@pytest.mark.parametrize("padding_value", [0.0, -1.0])
def test_waveform_frontend_matches_feature_extractor(do_normalize, padding_value):
    from transformers import Wav2Vec2FeatureExtractor

    from engines.frontend_waveform import WaveformFrontend

    rng = np.random.default_rng(0)
    waves = [(0.3 * rng.standard_normal(n) + 0.05).astype(np.float32) for n in (7000, 4321)]
    fe = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=padding_value,
        do_normalize=do_normalize,
        return_attention_mask=True,
    )
    ref = fe(waves, sampling_rate=16000, padding=True, return_tensors="pt")
    mine = WaveformFrontend(do_normalize, padding_value, return_attention_mask=True)
    audio = torch.zeros(2, 7000)
    for i, w in enumerate(waves):
        audio[i, : len(w)] = torch.from_numpy(w)
    x, mask = mine(audio, torch.tensor([7000, 4321]))
    assert torch.equal(mask, ref["attention_mask"].long())
    assert (x - ref["input_values"]).abs().max().item() < 1e-5


def test_frontend_without_attention_mask_pads_like_transformers():
    from engines.frontend_waveform import WaveformFrontend

    x, mask = WaveformFrontend(True, 0.0, return_attention_mask=False)(torch.randn(2, 100), torch.tensor([100, 60]))
    assert mask is None
    assert torch.all(x[1, 60:] == 0)
