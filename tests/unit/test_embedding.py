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
    mels = torch.from_numpy(mel_spectrogram(np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.05))[
        None
    ]
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


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")  # transformers' WavLM
@pytest.mark.parametrize("family", ["wav2vec2", "wavlm", "wav2vec2-conformer", "wav2vec2-bert"])
def test_xvector_backend_matches_transformers(family, tmp_path):
    """The HF backend: a tiny *ForXVector checkpoint through engines.api equals transformers."""
    pytest.importorskip("transformers")
    from engines.speakers.embedding import XVectorEmbedder, load_embedder
    from tests.hf_tiny import build_tiny, reference

    path = build_tiny(family, "xvector", tmp_path / family)
    emb = load_embedder(str(path))
    assert isinstance(emb, XVectorEmbedder) and isinstance(emb, SpeakerEmbedder)
    audio = (np.random.default_rng(3).standard_normal(16000) * 0.1).astype(np.float32)
    got = emb.embed(audio)

    import transformers

    fe = transformers.AutoFeatureExtractor.from_pretrained(str(path))
    inputs = fe(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ref = reference(path)(**inputs).embeddings[0]
    ref = (ref / ref.norm()).numpy()
    assert got.shape == (emb.dim,) == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_xvector_backend_rejects_other_heads(tmp_path):
    pytest.importorskip("transformers")
    from engines.errors import CheckpointError
    from engines.speakers.embedding import XVectorEmbedder
    from tests.hf_tiny import build_tiny

    path = build_tiny("wav2vec2", "ctc", tmp_path / "ctc")
    with pytest.raises(CheckpointError, match="ForXVector"):
        XVectorEmbedder.load(str(path))
