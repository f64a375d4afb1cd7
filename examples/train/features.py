"""Batched fbank on any device, equal to ``engines.frontend_fbank`` (the frontend the engine runs).

The engine computes one utterance at a time in float64 on the CPU; training needs whole padded
batches on the GPU. Same constants, same steps (see the engine module's docstring), float32
arithmetic; ``tests/unit/test_train_recipe.py`` checks the two agree.

Shape legend: B batch, N samples, T 10 ms frames, S stacked 20 ms frames, M = 80 mel bins.
"""

from __future__ import annotations

import torch
from torch import Tensor

from engines import frontend_fbank as fb

_CACHE: dict = {}


def _constants(device: torch.device) -> tuple[Tensor, Tensor]:
    key = str(device)
    if key not in _CACHE:
        _CACHE[key] = (
            torch.from_numpy(fb.mel_filter_bank()).float().to(device),
            torch.from_numpy(fb.povey_window()).float().to(device),
        )
    return _CACHE[key]


def frame_counts(num_samples: Tensor) -> Tensor:
    """(B,) samples -> (B,) 10 ms frames, as ``fb.frames_for_samples``."""
    return torch.where(num_samples >= fb.FRAME_LENGTH, 1 + (num_samples - fb.FRAME_LENGTH) // fb.HOP_LENGTH, 0)


def log_mel(wave: Tensor, warp: Tensor | None = None) -> Tensor:
    """(B, N) float in [-1, 1] -> (B, T, M) unnormalised log-mel; frames past an utterance's end are garbage.

    ``warp`` (B,): vocal-tract-length perturbation factors (``vtlp_matrix``), 1 = none."""
    mel, window = _constants(wave.device)
    x = wave.float() * 32768.0
    frames = x.unfold(1, fb.FRAME_LENGTH, fb.HOP_LENGTH)  # (B, T, 400)
    frames = frames - frames.mean(dim=2, keepdim=True)
    frames = torch.cat(
        [frames[..., :1] * (1.0 - fb.PREEMPHASIS), frames[..., 1:] - fb.PREEMPHASIS * frames[..., :-1]], dim=2
    )
    power = torch.fft.rfft(frames * window, n=fb.FFT_LENGTH, dim=2).abs().pow(2)  # (B, T, 257)
    if warp is None:
        return torch.clamp(power @ mel, min=fb.MEL_FLOOR).log()
    filters = vtlp_matrix(warp, power.shape[2]).transpose(1, 2) @ mel  # (B, 257, M)
    return torch.clamp(power @ filters, min=fb.MEL_FLOOR).log()


def vtlp_matrix(alpha: Tensor, bins: int, boundary: float = 0.8) -> Tensor:
    """(B,) warp factors -> (B, bins, bins) R with ``warped_power = power @ R.T``: vocal-tract-length
    perturbation (Jaitly & Hinton 2013). Energy at frequency f moves to ``alpha * f`` below a boundary
    (``boundary`` of Nyquist, scaled by min(alpha, 1)), and above it a straight line takes the rest of the band to
    Nyquist, so nothing leaves the band. Each output bin linearly interpolates the input bin its
    frequency maps back to. alpha > 1 moves formants up (a shorter vocal tract), < 1 down."""
    nyq = float(bins - 1)
    f = torch.arange(bins, device=alpha.device, dtype=torch.float32)[None, :]  # output bins (B=1, K)
    a = alpha.float()[:, None]
    hi = boundary * nyq * torch.clamp(a, max=1.0)  # the warped-axis knee
    # inverse map: output frequency f came from source frequency s
    below = f / a
    knee_src = hi / a
    above = knee_src + (f - hi) * (nyq - knee_src) / (nyq - hi)
    src = torch.where(f <= hi, below, above).clamp(0, nyq)  # (B, K)
    lo = src.floor().long().clamp(max=bins - 2)
    w = (src - lo.float())[..., None]
    eye = torch.eye(bins, device=alpha.device)
    return eye[lo] * (1 - w) + eye[lo + 1] * w  # (B, K, bins)


def normalize(feats: Tensor, frames: Tensor, mode: str, prior: fb.FbankPrior | None = None) -> Tensor:
    """Per-mel-bin normalisation the way the engine's stream does it: "none" | "utterance" | "cumulative"
    | "prior" (cumulative, running sums started from ``prior``, as a checkpoint with a prior streams)."""
    if mode == "none":
        return feats
    B, T, M = feats.shape
    valid = (torch.arange(T, device=feats.device)[None, :] < frames[:, None]).unsqueeze(2)  # (B, T, 1)
    if mode in ("cumulative", "prior"):  # the engine's own running normalisation, batched
        if mode == "prior" and prior is None:
            raise ValueError("normalisation 'prior' needs a prior")
        k, s0, q0 = fb.initial_sums(prior if mode == "prior" else None)
        normed, *_ = fb.cumulative_normalize(
            feats,
            valid[..., 0],
            k.to(feats.device).expand(B),
            s0.to(feats.device).expand(B, M),
            q0.to(feats.device).expand(B, M),
        )
        return normed * valid
    if mode != "utterance":
        raise ValueError(mode)
    x = feats.double() * valid
    n = frames.clamp(min=2).double()[:, None, None]
    mean = x.sum(1, keepdim=True) / n
    var = ((x - mean) ** 2 * valid).sum(1, keepdim=True) / (n - 1)
    return (((x - mean) / torch.sqrt(var + fb.NORM_EPS)) * valid).float()


def stack(feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, M) -> (B, T // 2, 2M) features and (B,) stacked-frame counts (an odd last frame is dropped)."""
    B, T, M = feats.shape
    T2 = T - T % fb.STRIDE
    return feats[:, :T2].reshape(B, T2 // fb.STRIDE, M * fb.STRIDE), frames // fb.STRIDE


def features(
    wave: Tensor,
    num_samples: Tensor,
    norm: str = "none",
    prior: fb.FbankPrior | None = None,
    warp: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(B, N) padded waveforms and (B,) lengths -> model inputs (B, S, 160) and (B,) valid stacked frames;
    ``warp`` as in ``log_mel``."""
    frames = frame_counts(num_samples)
    return stack(normalize(log_mel(wave, warp), frames, norm, prior), frames)


def global_prior(
    audio: Tensor,
    utts: list[dict],
    idx: list[int],
    device: torch.device,
    prior_frames: float,
    max_utts: int = 3000,
    batch: int = 32,
) -> fb.FbankPrior:
    """Per-bin mean and std of the unnormalised log-mel over (up to ``max_utts``, evenly spread) training
    utterances: the streaming normalisation prior a checkpoint ships (``frontend_fbank.FbankPrior``)."""
    step = max(1, len(idx) // max_utts)
    pick = sorted(idx)[::step][:max_utts]
    total = torch.zeros(fb.NUM_MEL_BINS, dtype=torch.float64, device=device)
    total_sq, count = total.clone(), 0
    for i in range(0, len(pick), batch):
        clips = [audio[utts[u]["start"] : utts[u]["start"] + utts[u]["n"]] for u in pick[i : i + batch]]
        n = torch.tensor([len(c) for c in clips], device=device)
        wave = torch.zeros(len(clips), int(n.max()), device=device)
        for j, c in enumerate(clips):
            wave[j, : len(c)] = c.to(device).float() / 32768.0
        frames = frame_counts(n)
        mel = log_mel(wave).double()
        valid = (torch.arange(mel.shape[1], device=device)[None, :] < frames[:, None]).unsqueeze(2)
        total += (mel * valid).sum((0, 1))
        total_sq += (mel * mel * valid).sum((0, 1))
        count += int(frames.sum())
    mean = total / count
    std = ((total_sq - count * mean * mean) / (count - 1)).clamp(min=1e-6).sqrt()
    return fb.FbankPrior(mean.cpu(), std.cpu(), float(prior_frames))
