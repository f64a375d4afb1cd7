"""Speaker embeddings behind one interface: ``SpeakerEmbedder.embed(audio_16k) -> (D,)``.

Shape legend: S = samples at 16 kHz, F = 10 ms mel frames, M = 40 mel bands, D = embedding dim.

Two backends:

* ``VoiceEncoderEmbedder`` (the bundled offline default): the GE2E voice encoder of
  resemblyzer 0.1.4 (Apache-2.0; 3-layer LSTM 40->256, linear 256->256, ReLU, L2 norm; trained by
  its authors on LibriSpeech, VoxCeleb 1+2).  Only its weight file ``pretrained.pt`` is used;
  the network and its mel frontend are re-implemented here (parity-tested against
  resemblyzer), because importing the ``resemblyzer`` package drags in librosa and plain
  ``webrtcvad`` (which clashes with ``webrtcvad-wheels``).  Install it without dependencies:
  ``pip install --no-deps resemblyzer==0.1.4``.
* ``XVectorEmbedder``: an HF ``*ForXVector`` checkpoint (wav2vec2, WavLM, wav2vec2-conformer,
  wav2vec2-bert) through ``engines.api.load_model``; the embedding is the head's
  ``embeddings`` output, L2-normalised.

Both return a unit-norm float32 vector, so cosine similarity is a dot product.  A loaded
embedder holds weights only and is safe to share across streams.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from engines.errors import CheckpointError, KeyMismatchError, ModelNotFoundError

if TYPE_CHECKING:
    from engines.model import LoadedModel

__all__ = [
    "SAMPLE_RATE_HZ",
    "SpeakerEmbedder",
    "VoiceEncoderEmbedder",
    "XVectorEmbedder",
    "load_embedder",
    "voice_encoder_weights_path",
    "mel_spectrogram",
    "DEFAULT_EMBEDDER",
]

SAMPLE_RATE_HZ = 16_000
DEFAULT_EMBEDDER = "voice-encoder"


@runtime_checkable
class SpeakerEmbedder(Protocol):
    """What the diarizer needs from an embedding model."""

    @property
    def dim(self) -> int:  # D
        ...

    @property
    def min_samples(self) -> int:  # shortest audio it embeds meaningfully
        ...

    def embed(self, audio_16k: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        """(S,) float audio at 16 kHz -> (D,) unit-norm float32 embedding."""
        ...

    def embed_batch(self, windows: list[npt.NDArray[np.floating[Any]]]) -> npt.NDArray[np.float32]:
        """N windows of (S_i,) audio -> (N, D); equal to stacking ``embed`` of each."""
        ...


def _as_audio(audio: npt.NDArray[np.floating[Any]], min_samples: int) -> npt.NDArray[np.float32]:
    a = np.array(audio, dtype=np.float32)  # a writable copy: stream frames are read-only
    if a.ndim != 1:
        raise ValueError(f"speaker audio must be 1-D mono at 16 kHz, got shape {a.shape}")
    if a.shape[0] < min_samples:
        raise ValueError(
            f"speaker audio is {a.shape[0]} samples; at least {min_samples} "
            f"({min_samples / SAMPLE_RATE_HZ:.2f} s) are needed"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError("speaker audio contains NaN or inf")
    return a


def _unit_rows(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    rows: npt.NDArray[np.float32] = (x / np.maximum(n, 1e-12)).astype(np.float32)
    return rows


# ---------------------------------------------------------------------------------------------
# The bundled voice encoder (resemblyzer's GE2E weights)
# ---------------------------------------------------------------------------------------------

N_FFT = 400  # 25 ms window
HOP = 160  # 10 ms step
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s: the window length the encoder was trained on
TARGET_DBFS = -30.0  # resemblyzer's volume normalisation target


def _hz_to_mel(f: float | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Slaney's auditory-toolbox mel scale (librosa's default, htk=False): linear below 1 kHz.
    f = np.asarray(f, dtype=np.float64)  # 0-d for a float
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    out: npt.NDArray[np.float64] = np.where(
        f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels
    )
    return out


def _mel_to_hz(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    out: npt.NDArray[np.float64] = np.where(
        m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m
    )
    return out


@lru_cache(maxsize=1)
def _mel_basis() -> npt.NDArray[np.float32]:
    """(M, N_FFT//2+1) Slaney-normalised triangular filters, as librosa.filters.mel(sr=16k, n_fft=400, n_mels=40)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE_HZ / 2, N_FFT // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE_HZ / 2), N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : N_MELS + 2] - mel_f[:N_MELS]))[:, None]
    basis: npt.NDArray[np.float32] = weights.astype(np.float32)
    basis.flags.writeable = False
    return basis


@lru_cache(maxsize=1)
def _window() -> npt.NDArray[np.float32]:
    w: npt.NDArray[np.float32] = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(
        np.float32
    )  # periodic Hann
    w.flags.writeable = False
    return w


def mel_spectrogram(audio: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    """(S,) -> (F, M) power mel spectrogram, F = 1 + S // HOP (centred frames, zero padded).

    Equals ``librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40).T``
    (librosa >= 0.10, whose centring pads with zeros), which is what resemblyzer feeds its encoder.
    """
    a = np.pad(np.asarray(audio, dtype=np.float32), N_FFT // 2)
    n_frames = 1 + (a.shape[0] - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]  # (F, N_FFT)
    spec = np.abs(np.fft.rfft(a[idx] * _window(), axis=-1)) ** 2  # (F, N_FFT//2+1)
    return (spec.astype(np.float32) @ _mel_basis().T).astype(np.float32)  # (F, M)


def _normalise_volume(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # The encoder eats linear power mels, so loudness moves the embedding: bring every window to
    # resemblyzer's -30 dBFS (it only raises quiet audio; we also lower loud audio, so a voice
    # gets one embedding whatever the level of the talker).
    rms = float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))
    if rms < 1e-6:
        return a
    return (a * (10 ** (TARGET_DBFS / 20) / rms)).astype(np.float32)


class VoiceEncoder(nn.Module):
    """resemblyzer's network, with its parameter names so ``pretrained.pt`` loads strictly."""

    def __init__(self, hidden: int = 256, layers: int = 3, dim: int = 256):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, dim)

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F, M) mels -> (B, D) unit embeddings from the last valid frame's top-layer state."""
        if lengths is None:
            _, (hidden, _) = self.lstm(mels)  # hidden: (layers, B, H)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(mels, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (hidden, _) = self.lstm(packed)
        raw: torch.Tensor = torch.relu(self.linear(hidden[-1]))  # (B, D)
        unit: torch.Tensor = raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-12)
        return unit


def voice_encoder_weights_path() -> Path:
    """Where resemblyzer's ``pretrained.pt`` lies, found without importing resemblyzer."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default speaker encoder needs resemblyzer's bundled weights: pip install --no-deps resemblyzer==0.1.4"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    if not path.is_file():
        raise ModelNotFoundError(f"resemblyzer is installed but {path} is missing")
    return path


@dataclass(frozen=True)
class VoiceEncoderEmbedder:
    """The bundled default.  ``embed`` on audio longer than 1.6 s averages 1.6 s partials
    (hop 0.8 s) as resemblyzer's ``embed_utterance`` does; shorter audio is one pass over its
    own frames (no zero padding, which would dilute the LSTM's final state)."""

    model: VoiceEncoder
    dim: int = 256
    min_samples: int = 4_000  # 0.25 s: below that the encoder output is mostly noise
    partial_hop_frames: int = 80

    @classmethod
    def load(cls, weights: str | Path | None = None) -> VoiceEncoderEmbedder:
        path = Path(weights) if weights is not None else voice_encoder_weights_path()
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several unrelated types for a bad file
            raise CheckpointError(f"cannot read speaker encoder weights {path}: {exc}") from exc
        sd = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(sd, dict):
            raise CheckpointError(f"{path} holds no state dict")
        # GE2E training-loss scalars are not part of the encoder.
        sd = {k: v for k, v in sd.items() if k not in ("similarity_weight", "similarity_bias")}
        model = VoiceEncoder()
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
        if missing or unexpected:
            raise KeyMismatchError(str(path), missing, unexpected)
        model.load_state_dict(sd, strict=True)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(model)

    def _mels(self, audio: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """One window -> its partials' mels, each (F_i, M)."""
        mel = mel_spectrogram(_normalise_volume(audio))
        n = mel.shape[0]
        if n <= PARTIAL_FRAMES:
            return [mel]
        starts = list(range(0, n - PARTIAL_FRAMES + 1, self.partial_hop_frames))
        if starts[-1] + PARTIAL_FRAMES < n:
            starts.append(n - PARTIAL_FRAMES)  # cover the tail with a last full-length partial
        return [mel[s : s + PARTIAL_FRAMES] for s in starts]

    def embed(self, audio_16k: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        row: npt.NDArray[np.float32] = self.embed_batch([audio_16k])[0]
        return row

    def embed_batch(self, windows: list[npt.NDArray[np.floating[Any]]]) -> npt.NDArray[np.float32]:
        if not windows:
            return np.zeros((0, self.dim), np.float32)
        parts: list[npt.NDArray[np.float32]] = []
        owner: list[int] = []
        for i, w in enumerate(windows):
            for m in self._mels(_as_audio(w, self.min_samples)):
                parts.append(m)
                owner.append(i)
        lengths = torch.tensor([p.shape[0] for p in parts])
        batch = torch.zeros(len(parts), int(lengths.max()), N_MELS)  # (B, F, M)
        for j, p in enumerate(parts):
            batch[j, : p.shape[0]] = torch.from_numpy(p)
        with torch.inference_mode():
            partial = self.model(batch, None if bool((lengths == lengths[0]).all()) else lengths).numpy()
        out = np.zeros((len(windows), self.dim), np.float64)
        np.add.at(out, np.asarray(owner), partial)
        return _unit_rows(out)


# ---------------------------------------------------------------------------------------------
# HF x-vector checkpoints through the project's engines
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XVectorEmbedder:
    """An HF ``*ForXVector`` checkpoint (local HF-layout dir or cached hub id)."""

    model: LoadedModel  # with head "xvector"
    dim: int
    min_samples: int = 8_000  # 0.5 s: the TDNN stack's receptive field plus a few frames

    @classmethod
    def load(cls, model: str | Path) -> XVectorEmbedder:
        from engines.model import load_model  # imported late: pulls in the model families

        loaded = load_model(model)
        if loaded.head != "xvector":
            raise CheckpointError(
                f"{model} has a {loaded.head!r} head; speaker embeddings need a *ForXVector checkpoint"
            )
        with torch.inference_mode():
            probe = loaded.forward(torch.zeros(1, 16_000)).utterance  # (1, E)
        assert probe is not None  # an xvector head has an utterance output
        return cls(loaded, int(probe.shape[-1]))

    def embed(self, audio_16k: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        row: npt.NDArray[np.float32] = self.embed_batch([audio_16k])[0]
        return row

    def embed_batch(self, windows: list[npt.NDArray[np.floating[Any]]]) -> npt.NDArray[np.float32]:
        if not windows:
            return np.zeros((0, self.dim), np.float32)
        rows = []
        with torch.inference_mode():
            for w in windows:  # one by one: no padding effects on the statistics pooling
                a = torch.from_numpy(_as_audio(w, self.min_samples))[None]  # (1, S)
                utt = self.model.forward(a).utterance
                assert utt is not None  # an xvector head has an utterance output
                rows.append(utt[0].double().numpy())
        return _unit_rows(np.stack(rows))


def load_embedder(name: str | Path | None = None) -> SpeakerEmbedder:
    """``None`` or ``"voice-encoder"``: the bundled default; anything else: an HF x-vector checkpoint."""
    if name is None or str(name) == DEFAULT_EMBEDDER:
        return VoiceEncoderEmbedder.load()
    return XVectorEmbedder.load(name)
