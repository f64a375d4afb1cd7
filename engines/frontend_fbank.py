"""Kaldi-style log-mel fbank with `SeamlessM4TFeatureExtractor` semantics, offline and streaming.

Shape legend: N samples (16 kHz mono float in [-1, 1]), T fbank frames (10 ms hop),
S stacked frames (20 ms, ``S = T // 2``), M = 80 mel bins, F = 160 = 2 * M stacked features.

Offline (`extract`) reproduces the Hugging Face feature extractor used by Wav2Vec2-BERT:

1. scale to 16-bit range (``x * 2**15``);
2. frames of 400 samples every 160 samples, no centre padding (a tail shorter than a frame is dropped);
3. per frame: remove the DC offset, pre-emphasis 0.97 (first sample ``*= 0.03``), Povey window
   (``hanning(400) ** 0.85``), 512-point power spectrum, no dither;
4. 80 Kaldi mel filters (20 Hz .. 8 kHz, triangles in mel space), floor ``1.192092955078125e-07``, natural log;
5. per-mel-bin normalisation over the utterance: ``(x - mean) / sqrt(var(ddof=1) + 1e-7)``;
6. pad the batch to the longest utterance rounded up to an even frame count (padding value 0, after
   normalisation), then stack frame pairs to 160 features. The attention mask of stacked frame ``s``
   is the mask of frame ``2s + 1``, so an utterance with an odd frame count ends in one masked frame.

Streaming (`FbankStream`): steps 1-4 are per frame, so chunk-by-chunk frames equal the whole-utterance
frames exactly (the state keeps the unconsumed samples and an unpaired frame). Step 5 needs the whole
utterance, so a stream normalises with one of:

- ``"cumulative"``: frame ``t`` uses the mean and (ddof=1) variance of frames ``0..t`` (the first frame
  uses variance 1). Causal, no lookahead; early frames differ from per-utterance normalisation and the
  difference shrinks as the statistics settle (a few seconds of speech).
  With a `FbankPrior` (training-set statistics worth ``frames`` pseudo-frames) the running sums start
  from the prior instead of zero: the first frames are normalised with sensible statistics and the
  utterance's own take over as it goes on (a MAP estimate of the utterance statistics). A checkpoint
  carries its prior in ``preprocessor_config.json`` under ``"speechstream_fbank_prior"``
  (`prior_from_preprocessor`); transformers ignores the key.
- ``"fixed"``: caller-supplied per-bin mean and standard deviation (e.g. training-set statistics);
  exact and stationary, the right choice for a model trained that way.
- ``"none"``: raw log-mel.

An odd final frame is dropped by `FbankStream.flush`, matching offline, where it is masked out.
"""

from __future__ import annotations

from typing import Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

__all__ = [
    "SAMPLE_RATE_HZ",
    "FRAME_LENGTH",
    "HOP_LENGTH",
    "NUM_MEL_BINS",
    "STRIDE",
    "mel_filter_bank",
    "povey_window",
    "log_mel_frames",
    "normalize_per_mel_bin",
    "stack_frames",
    "extract",
    "FbankState",
    "FbankStream",
    "cumulative_normalize",
    "FbankPrior",
    "prior_from_preprocessor",
    "initial_sums",
    "stream_features",
    "frames_for_samples",
    "stacked_frames_for_samples",
]

SAMPLE_RATE_HZ = 16000
FRAME_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
FFT_LENGTH = 512
NUM_MEL_BINS = 80
STRIDE = 2  # frames stacked per model input vector
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32 machine epsilon, as in the HF extractor
NORM_EPS = 1e-7
NORM_MODES = ("cumulative", "fixed", "none")


@overload
def _hz_to_kaldi_mel(freq: float) -> float: ...
@overload
def _hz_to_kaldi_mel(freq: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
def _hz_to_kaldi_mel(freq: float | npt.NDArray[np.float64]) -> float | npt.NDArray[np.float64]:
    mel: float | npt.NDArray[np.float64] = 1127.0 * np.log(1.0 + freq / 700.0)
    return mel


def mel_filter_bank(num_mel_bins: int = NUM_MEL_BINS, sample_rate_hz: int = SAMPLE_RATE_HZ) -> npt.NDArray[np.float64]:
    """Kaldi mel filters as a (FFT_LENGTH // 2 + 1, num_mel_bins) float64 matrix.

    Triangles are built in mel space between 20 Hz and Nyquist, without area normalisation.
    """
    num_bins = FFT_LENGTH // 2 + 1
    mel_points = np.linspace(_hz_to_kaldi_mel(20.0), _hz_to_kaldi_mel(sample_rate_hz // 2), num_mel_bins + 2)
    bin_width_hz = sample_rate_hz / ((num_bins - 1) * 2)
    bin_mels = _hz_to_kaldi_mel(bin_width_hz * np.arange(num_bins))
    slopes = mel_points[None, :] - bin_mels[:, None]  # (bins, M + 2)
    spacing = np.diff(mel_points)
    down = -slopes[:, :-2] / spacing[:-1]
    up = slopes[:, 2:] / spacing[1:]
    filters: npt.NDArray[np.float64] = np.maximum(0.0, np.minimum(down, up))
    return filters


def povey_window() -> npt.NDArray[np.float64]:
    """Symmetric Povey window of FRAME_LENGTH samples (float64)."""
    return np.power(np.hanning(FRAME_LENGTH), 0.85)


_MEL = torch.from_numpy(mel_filter_bank())  # (257, M) float64
_WINDOW = torch.from_numpy(povey_window())  # (400,) float64


def log_mel_frames(waveform: torch.Tensor) -> torch.Tensor:
    """Unnormalised log-mel frames (T, 80) float32 of a mono waveform (N,) in [-1, 1]; a batch
    (B, N) gives (B, T, 80).

    T = 1 + (N - 400) // 160 for N >= 400, else 0. Each frame depends only on its own 400 samples.
    """
    x = torch.as_tensor(waveform).to(torch.float32)  # HF casts input to float32 first
    if x.dim() != 2:
        x = x.reshape(-1)
    x = x.to(torch.float64) * 32768.0
    if x.shape[-1] < FRAME_LENGTH:
        return torch.zeros(*x.shape[:-1], 0, NUM_MEL_BINS, dtype=torch.float32, device=x.device)
    frames = x.unfold(-1, FRAME_LENGTH, HOP_LENGTH)  # (..., T, 400)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    frames = torch.cat(
        [frames[..., :1] * (1.0 - PREEMPHASIS), frames[..., 1:] - PREEMPHASIS * frames[..., :-1]], dim=-1
    )
    frames = frames * _WINDOW.to(frames.device)
    spectrum = torch.fft.rfft(frames, n=FFT_LENGTH, dim=-1).to(torch.complex64)  # HF stores complex64
    power = spectrum.abs().to(torch.float64) ** 2  # (..., T, 257)
    mel = torch.clamp(power @ _MEL.to(power.device), min=MEL_FLOOR)
    return torch.log(mel).to(torch.float32)


def cumulative_normalize(
    frames: Tensor, real: Tensor, count: Tensor, total: Tensor, total_sq: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Causal running per-bin normalisation of a batch of new frames.

    frames (B, T, M) float32; real (B, T) bool: frames that count in the statistics (others are
    normalised with the statistics so far and left out of them); count (B,), total/total_sq
    (B, M) float64 running sums. Frame t uses the mean and ddof=1 variance of the real frames up
    to and including t (variance 1 while fewer than 2 frames were seen).
    Returns (normalised (B, T, M) float32, count, total, total_sq).
    """
    f64 = frames.to(torch.float64)
    w = real.to(torch.float64).unsqueeze(-1)  # (B, T, 1)
    n = count[:, None, None] + torch.cumsum(w, dim=1)  # (B, T, 1)
    s = total[:, None, :] + torch.cumsum(f64 * w, dim=1)
    sq = total_sq[:, None, :] + torch.cumsum(f64 * f64 * w, dim=1)
    safe_n = torch.clamp(n, min=1.0)
    mean = s / safe_n
    var = (sq - safe_n * mean * mean) / torch.clamp(n - 1.0, min=1.0)
    var = torch.where(n > 1.0, var.clamp(min=0.0), torch.ones_like(var))
    normed = ((f64 - mean) / torch.sqrt(var + NORM_EPS)).to(torch.float32)
    return normed, n[:, -1, 0], s[:, -1], sq[:, -1]


class FbankPrior(NamedTuple):
    """Per-bin prior statistics of the unnormalised log-mel frames: mean and std (M,) float64,
    weighted as ``frames`` pseudo-frames in the running statistics."""

    mean: Tensor
    std: Tensor
    frames: float

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "fbank prior") -> FbankPrior:
        try:
            mean = torch.as_tensor(obj["mean"], dtype=torch.float64).reshape(-1)
            std = torch.as_tensor(obj["std"], dtype=torch.float64).reshape(-1)
            frames = float(obj["frames"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"{source}: needs 'mean' and 'std' ({NUM_MEL_BINS} numbers each) and 'frames': {exc}"
            ) from None
        if mean.numel() != NUM_MEL_BINS or std.numel() != NUM_MEL_BINS:
            raise ValueError(
                f"{source}: 'mean' and 'std' need {NUM_MEL_BINS} numbers, got {mean.numel()} and {std.numel()}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError(f"{source}: 'mean' must be finite and 'std' finite and positive")
        if not (frames > 1.0 and frames < 1e9):
            raise ValueError(f"{source}: 'frames' must be above 1 and below 1e9, got {frames}")
        return cls(mean, std, frames)

    def to_json(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "mean": [round(float(v), 6) for v in self.mean],
            "std": [round(float(v), 6) for v in self.std],
        }

    def initial_sums(self) -> tuple[Tensor, Tensor, Tensor]:
        """(count () , total (M,), total_sq (M,)) float64 sums whose ddof=1 statistics are the prior's."""
        k = torch.tensor(self.frames, dtype=torch.float64)
        mean, var = self.mean.to(torch.float64), self.std.to(torch.float64) ** 2
        return k, k * mean, (k - 1.0) * var + k * mean * mean


PRIOR_KEY = "speechstream_fbank_prior"


def initial_sums(prior: FbankPrior | None) -> tuple[Tensor, Tensor, Tensor]:
    """Running-statistics start (count (), total (M,), total_sq (M,)) float64: the prior's, or zeros."""
    if prior is not None:
        return prior.initial_sums()
    zero = torch.zeros(NUM_MEL_BINS, dtype=torch.float64)
    return torch.zeros((), dtype=torch.float64), zero, zero.clone()


def prior_from_preprocessor(
    preprocessor: dict[str, Any] | None, source: str = "preprocessor_config.json"
) -> FbankPrior | None:
    """The streaming normalisation prior a checkpoint carries, or None."""
    if not preprocessor or preprocessor.get(PRIOR_KEY) is None:
        return None
    return FbankPrior.from_json(preprocessor[PRIOR_KEY], f"{source}: {PRIOR_KEY}")


def normalize_per_mel_bin(frames: torch.Tensor) -> torch.Tensor:
    """Per-utterance, per-mel-bin zero mean / unit variance (ddof=1), as the HF extractor does. (T, M) -> (T, M)."""
    mean = frames.mean(dim=0, keepdim=True)
    var = frames.var(dim=0, unbiased=True, keepdim=True)
    return (frames - mean) / torch.sqrt(var + NORM_EPS)


def stack_frames(frames: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Stack consecutive frame pairs: (T, M) -> (T // stride, M * stride); a trailing odd frame is dropped."""
    usable = frames.shape[0] - frames.shape[0] % stride
    return frames[:usable].reshape(usable // stride, frames.shape[1] * stride)


def extract(waveforms: list[torch.Tensor] | torch.Tensor, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch features exactly as `SeamlessM4TFeatureExtractor(...)(waveforms, padding=True)`.

    Returns ``input_features`` (B, S, 160) float32 and ``attention_mask`` (B, S) int64.
    A single 1-D waveform is treated as a batch of one.
    """
    if isinstance(waveforms, torch.Tensor) and waveforms.dim() == 1:
        waveforms = [waveforms]
    feats = [log_mel_frames(torch.as_tensor(w)) for w in waveforms]
    if normalize:
        feats = [normalize_per_mel_bin(f) for f in feats]
    longest = max(f.shape[0] for f in feats)
    padded_len = longest + longest % STRIDE  # pad_to_multiple_of=2
    batch = torch.zeros(len(feats), padded_len, NUM_MEL_BINS, dtype=torch.float32)
    frame_mask = torch.zeros(len(feats), padded_len, dtype=torch.int64)
    for i, f in enumerate(feats):
        batch[i, : f.shape[0]] = f
        frame_mask[i, : f.shape[0]] = 1
    features = batch.reshape(len(feats), padded_len // STRIDE, NUM_MEL_BINS * STRIDE)
    attention_mask = frame_mask[:, STRIDE - 1 :: STRIDE]
    return features, attention_mask


class FbankState(NamedTuple):
    """Per-stream fbank state.

    pending: (P,) float32 samples not yet consumed by a complete frame, P < 400 after a step.
    unpaired: (U, M) float32 normalised frames waiting for a partner, U in {0, 1}.
    count: number of frames seen (float64 scalar tensor) -- cumulative statistics.
    total, total_sq: (M,) float64 running sums of frames and squared frames -- cumulative statistics.
    """

    pending: torch.Tensor
    unpaired: torch.Tensor
    # a field named ``count`` shadows ``tuple.count`` in typeshed's tuple; the field is the public state layout
    count: torch.Tensor  # type: ignore[assignment]
    total: torch.Tensor
    total_sq: torch.Tensor


class FbankStream:
    """Chunked fbank: ``init_state()``, ``step(chunk, state) -> (features (S, 160), state)``, ``flush(state)``.

    Holds only constants (mode and fixed statistics); all per-stream data lives in `FbankState`.
    """

    def __init__(
        self,
        norm: str = "cumulative",
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        prior: FbankPrior | None = None,
    ):
        if norm not in NORM_MODES:
            raise ValueError(f"unsupported fbank stream normalisation {norm!r}; supported: {', '.join(NORM_MODES)}")
        if norm == "fixed" and (mean is None or std is None):
            raise ValueError("fbank normalisation 'fixed' needs per-bin mean and std")
        self.norm = norm
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32).reshape(NUM_MEL_BINS)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32).reshape(NUM_MEL_BINS)
        self.prior = prior if norm == "cumulative" else None

    def init_state(self) -> FbankState:
        count, total, total_sq = initial_sums(self.prior)
        return FbankState(
            pending=torch.zeros(0, dtype=torch.float32),
            unpaired=torch.zeros(0, NUM_MEL_BINS, dtype=torch.float32),
            count=count,
            total=total,
            total_sq=total_sq,
        )

    def frames(self, chunk: torch.Tensor, state: FbankState) -> tuple[torch.Tensor, FbankState]:
        """Unnormalised log-mel frames completed by this chunk: (T, 80). Only ``pending`` is used and updated."""
        samples = torch.cat([state.pending, torch.as_tensor(chunk, dtype=torch.float32).reshape(-1)])
        frames = log_mel_frames(samples)
        consumed = frames.shape[0] * HOP_LENGTH
        return frames, state._replace(pending=samples[consumed:])

    def _normalize(self, frames: torch.Tensor, state: FbankState) -> tuple[torch.Tensor, FbankState]:
        if self.norm == "none":
            return frames, state
        if self.norm == "fixed":
            assert self.mean is not None and self.std is not None  # __init__ refuses "fixed" without them
            return (frames - self.mean) / self.std, state
        if frames.shape[0] == 0:
            return frames, state
        normed, count, total, total_sq = cumulative_normalize(
            frames[None],
            torch.ones(1, frames.shape[0], dtype=torch.bool),
            state.count[None],
            state.total[None],
            state.total_sq[None],
        )
        return normed[0], state._replace(count=count[0], total=total[0], total_sq=total_sq[0])

    def step(self, chunk: torch.Tensor, state: FbankState) -> tuple[torch.Tensor, FbankState]:
        frames, state = self.frames(chunk, state)
        normed, state = self._normalize(frames, state)
        paired = torch.cat([state.unpaired, normed])
        usable = paired.shape[0] - paired.shape[0] % STRIDE
        return stack_frames(paired[:usable]), state._replace(unpaired=paired[usable:])

    def flush(self, state: FbankState) -> tuple[torch.Tensor, FbankState]:
        """End of stream: nothing more can be emitted (a partial frame and an odd frame are dropped, as offline)."""
        return torch.zeros(0, NUM_MEL_BINS * STRIDE, dtype=torch.float32), self.init_state()


def stream_features(waveform: torch.Tensor, norm: str = "cumulative", prior: FbankPrior | None = None) -> torch.Tensor:
    """The stacked features (S, 160) a stream sees for a whole waveform: what wav2vec2-bert's cached
    mode computes chunk by chunk (``norm="cumulative"`` for ``normalize="stream"``, with the
    checkpoint's ``prior`` if it has one; ``"none"``).
    Train a streaming model on these to match its streaming input exactly."""
    stream = FbankStream(norm=norm, prior=prior)
    features, _ = stream.step(torch.as_tensor(waveform, dtype=torch.float32).reshape(-1), stream.init_state())
    return features


def frames_for_samples(num_samples: int) -> int:
    """Number of fbank frames for a waveform of ``num_samples`` samples."""
    return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // HOP_LENGTH


def stacked_frames_for_samples(num_samples: int) -> int:
    """Number of stacked (model input) frames for ``num_samples`` samples, ignoring the masked odd tail."""
    return frames_for_samples(num_samples) // STRIDE
