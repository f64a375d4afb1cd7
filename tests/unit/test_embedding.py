"""The bundled voice encoder: exact to resemblyzer, gain-invariant, one interface for both backends."""

import warnings

import numpy as np
import pytest
import torch

from engines.speakers.embedding import SpeakerEmbedder, VoiceEncoderEmbedder, mel_spectrogram


@pytest.fixture(scope="module")
def encoder():
    return VoiceEncoderEmbedder.load()


def test_mel_matches_librosa():
    librosa = pytest.importorskip("librosa")
    x = (np.random.default_rng(0).standard_normal(16000 + 123) * 0.1).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    np.testing.assert_allclose(mel_spectrogram(x), ref, rtol=1e-4, atol=1e-6)


def test_network_matches_resemblyzer(encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resemblyzer imports scipy.ndimage.morphology (deprecated)
        resemblyzer = pytest.importorskip("resemblyzer")
        ref = resemblyzer.VoiceEncoder("cpu", verbose=False)
    mels = torch.from_numpy(mel_spectrogram(np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.05))[None]
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(mels), ref(mels), atol=1e-5, rtol=1e-5)


def test_embedding_contract(encoder):
    assert isinstance(encoder, SpeakerEmbedder)
    x = np.random.default_rng(2).standard_normal(40000).astype(np.float32) * 0.05
    e = encoder.embed(x)
    assert e.shape == (256,) and e.dtype == np.float32
    assert abs(np.linalg.norm(e) - 1) < 1e-5
    np.testing.assert_allclose(encoder.embed(x * 0.1), e, atol=1e-4)  # loudness does not move it
    batch = encoder.embed_batch([x, x[:8000]])
    np.testing.assert_allclose(batch[0], e, atol=1e-5)
    np.testing.assert_allclose(batch[1], encoder.embed(x[:8000]), atol=1e-5)
    with pytest.raises(ValueError, match="at least 4000"):
        encoder.embed(x[:100])
