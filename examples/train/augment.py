"""Waveform and feature augmentation, batched in torch (runs on the training GPU, or the CPU for smoke runs).

Per utterance, each with its own probability: speed (resampling, 0.85-1.15), gain, reverberation
(synthetic exponentially decaying room responses), additive coloured noise at a random SNR,
telephone band (300-3400 Hz, 8 kHz, mu-law) or a random low-pass, and clipping. On features:
vocal-tract-length perturbation (off unless ``p_vtlp``) and SpecAugment-style frequency and time masks.

Shape legend: B batch, N samples, T frames, M mel bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SR = 16000


@dataclass(frozen=True)
class AugmentConfig:
    p_speed: float = 0.6
    speed_range: tuple[float, float] = (0.85, 1.15)
    gain_db: tuple[float, float] = (-25.0, 6.0)
    p_reverb: float = 0.3
    rt60_s: tuple[float, float] = (0.15, 0.8)
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (0.0, 30.0)
    p_telephone: float = 0.12
    p_lowpass: float = 0.12
    p_clip: float = 0.05
    p_vtlp: float = 0.0  # vocal-tract-length perturbation of the spectrum (features.vtlp_matrix)
    vtlp_range: tuple[float, float] = (0.9, 1.1)
    freq_masks: int = 2
    freq_mask_bins: int = 12
    time_mask_ratio: float = 0.05  # at most this fraction of frames masked, in masks of <= 20 frames
    time_mask_frames: int = 20


LIGHT = AugmentConfig(
    p_speed=0.5,
    p_reverb=0.2,
    p_noise=0.35,
    snr_db=(5.0, 30.0),
    p_telephone=0.08,
    p_lowpass=0.08,
    p_clip=0.02,
    freq_masks=2,
    freq_mask_bins=10,
    time_mask_ratio=0.04,
)


# Recorded people in the pack: voices named real:* (the real corpora; speechocean762's too) and the so762 source.
REAL_VOICE_PREFIX = "real:"
REAL_SOURCES = ("so762",)


def is_real(utt: dict) -> bool:
    """Whether a pack utterance (``train.load_pack``'s dict) is a recorded person's; the others are synthetic."""
    return utt.get("source") in REAL_SOURCES or str(utt.get("voice", "")).startswith(REAL_VOICE_PREFIX)


def parse_real_speed(spec: str) -> tuple[float, float, float] | None:
    """``"0.9:0.8:1.25"`` -> (p, lo, hi): each real utterance sped by a factor uniform in [lo, hi] with
    probability p (``train.py --real-speed``); ``""`` -> None (off)."""
    if not spec.strip():
        return None
    parts = spec.split(":")
    try:
        p, lo, hi = (float(x) for x in parts)
    except ValueError:
        raise ValueError(f"--real-speed: {spec!r} is not P:LO:HI (three numbers, e.g. 0.9:0.8:1.25)") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"--real-speed: probability {p} is not between 0 and 1")
    if not 0.0 < lo <= hi or not math.isfinite(hi):
        raise ValueError(f"--real-speed: factors {lo}..{hi} are not 0 < LO <= HI")
    return p, lo, hi


def speed(wave: Tensor, factor: float) -> Tensor:
    """(N,) -> (N / factor,) by linear-interpolation resampling (pitch and tempo change together, like sox speed)."""
    n = max(2, int(round(wave.shape[0] / factor)))
    return F.interpolate(wave[None, None], size=n, mode="linear", align_corners=False)[0, 0]


def _rms(x: Tensor, n: Tensor) -> Tensor:
    return torch.sqrt((x * x).sum(1) / n.clamp(min=1) + 1e-10)


def _valid(n: Tensor, N: int) -> Tensor:
    return (torch.arange(N, device=n.device)[None, :] < n[:, None]).float()


def reverb(wave: Tensor, rt60: Tensor, gen: torch.Generator) -> Tensor:
    """(B, N) convolved with synthetic room responses of the given RT60s (B,), energy preserved roughly."""
    B, N = wave.shape
    L = int(SR * 0.6)
    t = torch.arange(L, device=wave.device) / SR
    decay = torch.exp(-6.9 * t[None, :] / rt60[:, None])  # -60 dB at rt60
    rir = torch.randn(B, L, device=wave.device, generator=gen) * decay
    rir[:, 0] = 1.0 + rir[:, 0].abs()  # direct path
    rir = rir / rir.norm(dim=1, keepdim=True)
    n = 1 << math.ceil(math.log2(N + L))
    out = torch.fft.irfft(torch.fft.rfft(wave, n) * torch.fft.rfft(rir, n), n)[:, :N]
    return out


def coloured_noise(B: int, N: int, device, gen: torch.Generator) -> Tensor:
    """(B, N) unit-RMS noise with spectra 1/f^a, a in [0, 2] (white .. brown), per row."""
    white = torch.randn(B, N, device=device, generator=gen)
    spec = torch.fft.rfft(white)
    f = torch.arange(spec.shape[1], device=device).clamp(min=1).float()
    a = torch.rand(B, 1, device=device, generator=gen) * 2
    noise = torch.fft.irfft(spec / f[None, :] ** (a / 2), N)
    return noise / noise.std(dim=1, keepdim=True)


def band(wave: Tensor, lo_hz: Tensor, hi_hz: Tensor) -> Tensor:
    """Brick-wall band-pass per row via the FFT (edges softened over 100 Hz)."""
    B, N = wave.shape
    spec = torch.fft.rfft(wave)
    f = torch.fft.rfftfreq(N, 1 / SR).to(wave.device)[None, :]
    gain = torch.sigmoid((f - lo_hz[:, None]) / 25) * torch.sigmoid((hi_hz[:, None] - f) / 25)
    return torch.fft.irfft(spec * gain, N)


def mu_law(wave: Tensor, bits: int = 8) -> Tensor:
    mu = 2**bits - 1
    y = torch.sign(wave) * torch.log1p(mu * wave.abs().clamp(max=1)) / math.log1p(mu)
    y = torch.round((y + 1) / 2 * mu) / mu * 2 - 1
    return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu


def vtlp_factors(B: int, cfg: AugmentConfig, device, gen: torch.Generator) -> Tensor | None:
    """(B,) warp factors for ``features.log_mel``: uniform in ``vtlp_range`` with probability ``p_vtlp``, else 1;
    None when ``p_vtlp`` is 0 (the unwarped fast path)."""
    if cfg.p_vtlp <= 0:
        return None
    lo, hi = cfg.vtlp_range
    alpha = lo + (hi - lo) * torch.rand(B, device=device, generator=gen)
    keep = torch.rand(B, device=device, generator=gen) >= cfg.p_vtlp
    return torch.where(keep, torch.ones_like(alpha), alpha)


def augment_waves(wave: Tensor, n: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """(B, N) padded waveforms with (B,) lengths -> augmented (B, N); padding stays zero. Speed is done before batching."""
    B, N = wave.shape
    dev = wave.device
    valid = _valid(n, N)

    def pick(p: float) -> Tensor:
        return torch.rand(B, device=dev, generator=gen) < p

    def uniform(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(B, device=dev, generator=gen)

    level = _rms(wave, n)
    m = pick(cfg.p_reverb)
    if m.any():
        wet = reverb(wave, uniform(*cfg.rt60_s), gen)
        wet = wet * (level / _rms(wet * valid, n))[:, None]
        wave = torch.where(m[:, None], wet * valid, wave)
    m = pick(cfg.p_noise)
    if m.any():
        snr = uniform(*cfg.snr_db)
        noise = coloured_noise(B, N, dev, gen) * (_rms(wave, n) / 10 ** (snr / 20))[:, None]
        wave = torch.where(m[:, None], (wave + noise) * valid, wave)
    m = pick(cfg.p_telephone)
    if m.any():
        tel = mu_law(band(wave, uniform(200, 400), uniform(3000, 3600)) / (wave.abs().amax(1, keepdim=True) + 1e-6))
        wave = torch.where(m[:, None], tel * valid, wave)
    m = pick(cfg.p_lowpass) & ~m
    if m.any():
        wave = torch.where(m[:, None], band(wave, torch.zeros(B, device=dev), uniform(2500, 7000)) * valid, wave)
    # gain relative to a typical speech level, then optional clipping
    target = 10 ** (uniform(*cfg.gain_db) / 20) * 0.1
    wave = wave * (target / _rms(wave, n))[:, None]
    m = pick(cfg.p_clip)
    if m.any():
        limit = uniform(0.05, 0.3)[:, None]
        wave = torch.where(m[:, None], torch.maximum(torch.minimum(wave, limit), -limit), wave)
    return wave.clamp(-1, 1) * valid


def spec_augment(feats: Tensor, frames: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Mask (B, T, M) log-mel frames in place of bands and spans, filling with each utterance's mean per bin."""
    B, T, M = feats.shape
    dev = feats.device
    valid = (torch.arange(T, device=dev)[None, :] < frames[:, None]).unsqueeze(2)
    fill = (feats * valid).sum(1, keepdim=True) / frames.clamp(min=1)[:, None, None]
    mask = torch.zeros(B, T, M, dtype=torch.bool, device=dev)
    bins = torch.arange(M, device=dev)[None, :]
    for _ in range(cfg.freq_masks):
        w = (torch.rand(B, 1, device=dev, generator=gen) * (cfg.freq_mask_bins + 1)).long()
        lo = (torch.rand(B, 1, device=dev, generator=gen) * (M - w + 1)).long()
        mask |= ((bins >= lo) & (bins < lo + w))[:, None, :]
    steps = torch.arange(T, device=dev)[None, :]
    n_masks = max(1, int(cfg.time_mask_ratio * T / (cfg.time_mask_frames / 2)))
    for _ in range(n_masks):
        w = (torch.rand(B, 1, device=dev, generator=gen) * (cfg.time_mask_frames + 1)).long()
        lo = (torch.rand(B, 1, device=dev, generator=gen) * frames[:, None].clamp(min=1)).long()
        mask |= ((steps >= lo) & (steps < lo + w))[:, :, None]
    return torch.where(mask, fill.expand_as(feats), feats)
