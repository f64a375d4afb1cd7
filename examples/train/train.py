"""Train the default streaming W2V-BERT CTC model on the pack, on a GPU or (slowly) the CPU.

    python -m examples.train.train --pack data/pack --out runs/default [--minutes 8] [--resume runs/prev]
    python -m examples.train.train --smoke            # a few CPU steps on a slice of the pack

The network is the project's own ``engines.wav2vec2_bert`` module (HF parameter names), so the
streaming engine runs exactly what was trained. Per batch (WeNet U2 dynamic chunks): full context
with probability ``p_full``, else a random chunk of 2..32 frames (40-640 ms) and, half the time, a
left context of 2..16 chunks -- the block mask that the engine's cached streaming is equivalent to.

Features: fbank on the device (``features.py``, equal to ``engines.frontend_fbank``), normalised
like the engine will feed the model (``--norm mix``: per batch, either per-utterance per-mel-bin
statistics, as the engine's offline frontend and transformers do, or the causal cumulative statistics
of the engine's streaming ``FbankStream``, by default started from the training-set prior that
``fbank_prior.json`` records and the exported checkpoint carries: ``--stream-norm``). Augmentation: ``augment.py``. The learning rate follows warm-up + cosine over the
wall-clock budget, so a run always ends annealed (peak 5e-4, see README.md for why; the first epochs run shortest-first). Output (``--out``): ``weights_0.safetensors``..
(fp32 model weights, split under 15 MiB a file), ``train_config.json``, ``log.txt``, ``dev.json``.
A resumed run loads the weights (not the optimiser moments) and re-warms briefly.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engines import frontend_fbank as fb
from engines import wav2vec2_bert as w2vb
from engines.common import masks, w2v_bert_adapter
from examples.train import augment, features

VOCAB = {"<pad>": 0, "<unk>": 1, "|": 2, "'": 3, **{chr(ord("A") + i): 4 + i for i in range(26)}}
MODEL_CONFIG = dict(
    hidden_size=192,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=768,
    conv_depthwise_kernel_size=15,
    position_embeddings_type="relative_key",
    left_max_position_embeddings=64,
    right_max_position_embeddings=8,
    vocab_size=len(VOCAB),
    pad_token_id=0,
    hidden_act="swish",
    layer_norm_eps=1e-5,
)
# for a CPU-only run: same family, ~2.9M parameters (ENVIRONMENT.md: ~63 audio-s/s on 2 free cores)
CPU_CONFIG = {**MODEL_CONFIG, "hidden_size": 144, "intermediate_size": 576}
SMALL_CONFIG = {**MODEL_CONFIG, "hidden_size": 96, "num_hidden_layers": 4, "intermediate_size": 384}
SMOKE_CONFIG = {
    **MODEL_CONFIG,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
SR = 16000


def _combine_masks(*masks, dtype=torch.float32):
    """Device-aware copy of ``engines.common.masks.combine_masks`` (that one allocates on the CPU)."""
    allowed = None
    for m in masks:
        if m is None:
            continue
        m = m if m.dim() == 4 else m.view(*([1] * (4 - m.dim())), *m.shape)
        allowed = m if allowed is None else allowed & m
    if allowed is None:
        return None
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


# training runs on the GPU; inference uses the engine untouched
w2vb.combine_masks = _combine_masks
w2v_bert_adapter.combine_masks = _combine_masks


def log(fh, *args) -> None:
    line = time.strftime("%H:%M:%S ") + " ".join(str(a) for a in args)
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")
        fh.flush()


def encode_text(text: str) -> list[int]:
    return [VOCAB.get(c, 1) if c != " " else VOCAB["|"] for c in text.strip()]


def decode_ids(ids: list[int]) -> str:
    inv = {v: k for k, v in VOCAB.items()}
    out, prev = [], -1
    for i in ids:
        if i != prev and i != 0:
            out.append(inv[i])
        prev = i
    return "".join(out).replace("|", " ").replace("<unk>", "").strip()


# ------------------------------------------------------------------------------------------ data
def _decode(path: str) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="int16")
    assert rate == SR, path
    return audio


def load_pack(pack: Path, max_shards_per_source: int | None, workers: int, skip_sources: tuple[str, ...] = ()):
    """The pack's audio (int16, one tensor) and its utterances in index order; ``skip_sources``: sources left out."""
    with open(pack / "index.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r["source"] not in skip_sources]
    if not rows:
        raise ValueError(
            f"{pack}: no utterances" + (f" left after leaving out {', '.join(skip_sources)}" if skip_sources else "")
        )
    shards = sorted({r["shard"] for r in rows})
    if max_shards_per_source is not None:
        keep, seen = [], {}
        for s in shards:
            src = s.rsplit("_", 1)[0]
            if seen.get(src, 0) < max_shards_per_source:
                keep.append(s)
                seen[src] = seen.get(src, 0) + 1
        shards = keep
    with ThreadPoolExecutor(workers) as pool:  # libsndfile releases the GIL; no fork after torch
        decoded = dict(zip(shards, pool.map(_decode, [str(pack / s) for s in shards])))
    pieces, utts, pos = [], [], 0
    for r in rows:
        if r["shard"] not in decoded:
            continue
        off, n = int(r["offset"]), int(r["samples"])
        clip = decoded[r["shard"]][off : off + n]
        pieces.append(clip)
        utts.append({"start": pos, "n": len(clip), "text": r["text"], "voice": r["voice"], "source": r["source"]})
        pos += len(clip)
    return torch.from_numpy(np.concatenate(pieces)), utts


def plan_epoch(
    utts: list[dict],
    idx: list[int],
    rng: random.Random,
    batch_s: float,
    max_s: float,
    p_concat: float,
    sorted_order: bool = False,
) -> list[list[list[int]]]:
    """Batches of samples; a sample is 1-3 utterances joined (probability ``p_concat`` of joining).
    ``sorted_order``: batches from shortest to longest (SortaGrad, DeepSpeech 2), for the first epochs."""
    order = idx[:]
    rng.shuffle(order)
    samples, i = [], 0
    while i < len(order):
        k = 1 if rng.random() >= p_concat else rng.choice([2, 3])
        group = order[i : i + k]
        while len(group) > 1 and sum(utts[u]["n"] for u in group) > max_s * SR * 0.85:
            group.pop()
        samples.append(group)
        i += len(group)
    samples.sort(key=lambda g: sum(utts[u]["n"] for u in g))
    batches, cur, longest = [], [], 0
    for g in samples:
        n = min(sum(utts[u]["n"] for u in g), int(max_s * SR))
        if cur and max(longest, n) * (len(cur) + 1) > batch_s * SR:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(g)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    if not sorted_order:
        rng.shuffle(batches)
    return batches


def parse_shares(spec: str) -> dict[str, float]:
    """``"so762=0.35,real:fsdd=0.05"`` -> ``{"so762": 0.35, "real:fsdd": 0.05}``; a key is a pack source or a
    voice prefix (``real:fsdd`` matches every FSDD speaker); the shares sum to less than 1."""
    shares: dict[str, float] = {}
    for part in (x.strip() for x in spec.split(",") if x.strip()):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--shares: {part!r} is not KEY=SHARE")
        share = float(value)
        if not 0.0 < share < 1.0:
            raise ValueError(f"--shares: {key}'s share {share} is not between 0 and 1")
        shares[key.strip()] = share
    if sum(shares.values()) >= 1.0:
        raise ValueError(f"--shares: the shares sum to {sum(shares.values()):.2f}, which leaves nothing for the rest")
    return shares


def share_group(utt: dict, shares: dict[str, float]) -> str | None:
    """The ``shares`` key an utterance belongs to: its source, else the longest matching voice prefix."""
    if utt["source"] in shares:
        return str(utt["source"])
    best = None
    for key in shares:
        if utt["voice"].startswith(key) and (best is None or len(key) > len(best)):
            best = key
    return best


def weighted_epoch(utts: list[dict], idx: list[int], shares: dict[str, float], rng: random.Random) -> list[int]:
    """One epoch's utterances when some groups have a fixed share of its audio.

    The epoch holds as much audio as ``idx``; each group in ``shares`` gets that share of it (its utterances
    shuffled and cycled, so a small group repeats and a large one is subsampled), and the utterances in no group
    fill the rest in their own proportions (scaled the same way). Without ``shares``: ``idx`` itself."""
    if not shares:
        return idx[:]
    groups: dict[str | None, list[int]] = {}
    for u in idx:
        groups.setdefault(share_group(utts[u], shares), []).append(u)
    total = sum(utts[u]["n"] for u in idx)
    missing = [k for k in shares if k not in groups]
    if missing:
        raise ValueError(f"--shares: no training utterance matches {', '.join(missing)}")
    rest = groups.get(None, [])
    rest_s = sum(utts[u]["n"] for u in rest)
    if not rest and sum(shares.values()) < 1.0:
        raise ValueError("--shares: every utterance is in a group, so the shares must cover the whole epoch")
    out: list[int] = []

    def draw(members: list[int], target: float) -> None:
        got, order = 0, []
        while got < target:
            if not order:
                order = members[:]
                rng.shuffle(order)
            u = order.pop()
            out.append(u)
            got += utts[u]["n"]

    for key, share in shares.items():
        draw(groups[key], share * total)
    if rest:
        # the ungrouped utterances keep their proportions among themselves: the same factor for all
        factor = (1.0 - sum(shares.values())) * total / rest_s
        by_source: dict[str, list[int]] = {}
        for u in rest:
            by_source.setdefault(utts[u]["source"], []).append(u)
        for members in by_source.values():
            draw(members, factor * sum(utts[u]["n"] for u in members))
    return out


# Sources the dev set is drawn from. The pack's index lists sources in build order, so these come first, and a
# source added later (festival, session 6) goes to training whole and leaves the dev split of earlier stages as it was.
DEV_SOURCES = ("real", "espeak", "flite", "piper")


def dev_split(utts: list[dict], seed: int, dev_utts: int) -> tuple[list[int], list[int]]:
    """(dev, train) utterance indices: a seed + 1 shuffle of the leading utterances from ``DEV_SOURCES``,
    ``dev_utts`` of them (at most a third) held back; every later utterance trains."""
    pool = 0
    while pool < len(utts) and utts[pool]["source"] in DEV_SOURCES:
        pool += 1
    order = list(range(pool))
    random.Random(seed + 1).shuffle(order)
    n_dev = min(dev_utts, pool // 3)
    return sorted(order[:n_dev]), order[n_dev:] + list(range(pool, len(utts)))


def make_batch(
    audio: torch.Tensor,
    utts: list[dict],
    batch: list[list[int]],
    rng: random.Random,
    aug: augment.AugmentConfig | None,
    device: torch.device,
    max_s: float,
    real_speed: tuple[float, float, float] | None = None,
):
    """Padded (B, N) waves, (B,) lengths and texts. With ``aug``, a sample's audio is sped as a whole
    (``aug.p_speed``); with ``real_speed`` (p, lo, hi) too, a sample holding a real utterance instead speeds
    each real clip on its own (probability p, factor uniform in [lo, hi]) and its synthetic clips by the
    sample's ``aug`` draw, so synthetic voices keep the ``aug`` settings."""
    waves, texts = [], []
    for group in batch:
        parts, words, real = [], [], []
        for j, u in enumerate(group):
            if j:
                parts.append(torch.zeros(int(rng.uniform(0.05, 0.6) * SR), device=device))
                real.append(None)
            clip = (
                audio[utts[u]["start"] : utts[u]["start"] + utts[u]["n"]].to(device, non_blocking=True).float()
                / 32768.0
            )
            parts.append(clip)
            real.append(real_speed is not None and augment.is_real(utts[u]))
            words.append(utts[u]["text"])
        if aug is not None and real_speed is not None and any(real):
            factor = rng.uniform(*aug.speed_range) if rng.random() < aug.p_speed else None
            p, lo, hi = real_speed
            for i, is_real in enumerate(real):
                if is_real and rng.random() < p:
                    parts[i] = augment.speed(parts[i], rng.uniform(lo, hi))
                elif is_real is False and factor is not None:
                    parts[i] = augment.speed(parts[i], factor)
            wave = torch.cat(parts)
        else:
            wave = torch.cat(parts)
            if aug is not None and rng.random() < aug.p_speed:
                wave = augment.speed(wave, rng.uniform(*aug.speed_range))
        if aug is not None:  # random leading/trailing silence so utterance edges vary
            wave = torch.cat(
                [
                    torch.zeros(int(rng.uniform(0, 0.3) * SR), device=device),
                    wave,
                    torch.zeros(int(rng.uniform(0, 0.3) * SR), device=device),
                ]
            )
        waves.append(wave[: int(max_s * SR)])
        texts.append(" ".join(words))
    n = torch.tensor([len(w) for w in waves], device=device)
    pad = torch.zeros(len(waves), int(n.max()), device=device)
    for i, w in enumerate(waves):
        pad[i, : len(w)] = w
    return pad, n, texts


def resumed_dev_warning(resume: Path | None, seed: int, dev_utts: int) -> str | None:
    """A warning when the run resumed from held out another dev split than this one will (another seed,
    or fewer dev utterances): part of this run's dev set was then trained on, and its dev CER flatters."""
    cfg = None if resume is None else resume / "train_config.json"
    if cfg is None or not cfg.is_file():
        return None
    prev = json.loads(cfg.read_text()).get("args", {})
    prev_seed, prev_dev = prev.get("seed"), prev.get("dev_utts")
    if prev_seed is not None and int(prev_seed) != seed:
        return (
            f"{resume} was trained with --seed {prev_seed}, this run uses {seed}: its dev split differs, "
            f"so part of this run's dev set was trained on (dev CER flatters); use --seed {prev_seed}"
        )
    if prev_dev is not None and int(prev_dev) < dev_utts:
        return (
            f"{resume} held out {prev_dev} dev utterances, this run {dev_utts}: the other "
            f"{dev_utts - int(prev_dev)} were trained on (dev CER flatters)"
        )
    return None


def targets(texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [encode_text(t) for t in texts]
    lens = torch.tensor([len(x) for x in ids])
    flat = torch.tensor([i for x in ids for i in x], dtype=torch.long)
    return flat.to(device), lens.to(device)


# ------------------------------------------------------------------------------------------ model
# Cached mode's blocks start at k * C - 1: the stacked fbank runs one frame behind the audio
# (``Wav2Vec2BertEngine.delay_frames``), so the first chunk yields C - 1 frames and every later one C.
CACHED_CHUNK_OFFSET = 1


def chunk_mask(
    T: int, chunk: int | None, left_chunks: int | None, keep: torch.Tensor, offset: int = CACHED_CHUNK_OFFSET
) -> torch.Tensor:
    """(B, T, T) bool: the engine's chunk mask (``masks.chunk_attention_mask``) AND real keys, with
    the blocks where cached streaming puts them (``offset``)."""
    if chunk is None:
        m = torch.ones(T, T, dtype=torch.bool)
    else:
        left = None if left_chunks is None else left_chunks * chunk
        m = masks.chunk_attention_mask(masks.chunk_block_ids(T, chunk, offset), left)
    return m.to(keep.device)[None] & keep[:, None, :]


def sample_chunking(rng: random.Random, p_full: float) -> tuple[int | None, int | None]:
    if rng.random() < p_full:
        return None, None
    chunk = rng.randint(2, 32)
    left = None if rng.random() < 0.5 else rng.randint(2, 16)
    return chunk, left


def forward(model, feats, frames, chunk, left):
    T = feats.shape[1]
    keep = torch.arange(T, device=feats.device)[None, :] < frames[:, None]
    out = model(feats, keep.long(), attn_mask=chunk_mask(T, chunk, left, keep))
    return out.frames, keep


def shrink_residual_branches(model, num_layers: int) -> None:
    """Scale the last projection of every residual branch by 1/sqrt(2 * layers) at init.

    Each W2V-BERT layer ends in a LayerNorm; if the branches (FFN, attention, conv) outgrow the
    residual, that LayerNorm divides the residual path's gradient by their size at every layer and
    the lower layers stop learning. The first GPU run (plain init, lr 2e-3, 130 warm-up steps) got
    stuck exactly so: pre-LayerNorm std 14-48 against a residual of 1, gradients 1e-6 of the head's.
    """
    scale = (2 * num_layers) ** -0.5
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(
                (
                    "ffn1.output_dense.weight",
                    "ffn2.output_dense.weight",
                    "self_attn.linear_out.weight",
                    "conv_module.pointwise_conv2.weight",
                )
            ):
                p.mul_(scale)


def save_weights(model, out: Path, max_bytes: int = 15 * 2**20) -> list[str]:
    return save_weights_dict(model.state_dict(), out, max_bytes)


def save_weights_dict(state: dict, out: Path, max_bytes: int = 15 * 2**20) -> list[str]:
    """``out/weights_{i}.safetensors``, fp32, split at ``max_bytes`` (the device returns files <= 16 MiB)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
    parts, cur, size = [], {}, 0
    for k, v in sd.items():
        b = v.numel() * 4
        if cur and size + b > max_bytes:
            parts.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += b
    parts.append(cur)
    names = []
    for i, p in enumerate(parts):
        name = f"weights_{i}.safetensors"
        save_file(p, str(out / f"{name}.tmp"))
        os.replace(out / f"{name}.tmp", out / name)
        names.append(name)
    for stale in out.glob("weights_*.safetensors"):
        if stale.name not in names:
            stale.unlink()
    return names


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A run folder's state dict, joined from its ``weights_*.safetensors`` parts (``save_weights_dict``)."""
    from safetensors.torch import load_file

    sd: dict[str, torch.Tensor] = {}
    for p in sorted(folder.glob("weights_*.safetensors")):
        sd.update(load_file(str(p)))
    if not sd:
        raise FileNotFoundError(f"no weights_*.safetensors in {folder}")
    return sd


def read_prior(path: Path) -> fb.FbankPrior:
    """A run's ``fbank_prior.json`` (the training-set log-mel statistics the streaming normalisation starts from)."""
    return fb.FbankPrior.from_json(json.loads(path.read_text()), str(path))


def load_weights(model, folder: Path) -> None:
    model.load_state_dict(read_weights(folder), strict=True)


def dev_scores(model, audio, utts, dev_idx, device, norm: str, stream_norm: str, prior) -> dict[str, float]:
    """The dev CERs a finished run records in dev.json: full context, and 320 ms chunks with all and with
    16 chunks of left context, streaming-normalised (``norm`` other than "mix" overrides both)."""
    out = {}
    for name, (nm, chunk, left) in {
        "full_utterance": ("utterance", None, None),
        f"chunk16_{stream_norm}": (stream_norm, 16, None),
        f"chunk16_left16_{stream_norm}": (stream_norm, 16, 16),
    }.items():
        if norm != "mix":
            nm = norm
        out[f"dev_cer_{name}"] = greedy_cer(model, audio, utts, dev_idx, device, nm, chunk, left, prior=prior)
    return out


def load_run(run: Path) -> tuple[torch.nn.Module, dict]:
    """A run folder's model (built from its train_config.json, its weights loaded strictly) and that config."""
    cfg = json.loads((run / "train_config.json").read_text())
    model = w2vb.build_model(cfg["model"], "ctc")
    load_weights(model, run)
    return model, cfg


def score_dev(run: Path, pack: Path, seed: int, dev_utts: int, device: str = "cpu") -> dict[str, float]:
    """dev.json's CERs for the weights in ``run`` (its train_config.json and fbank_prior.json), on the dev
    split ``seed``/``dev_utts`` of ``pack``: for weights no training loop scored, e.g. an average (soup.py)."""
    model, cfg = load_run(run)
    run_args = cfg["args"]
    prior = read_prior(run / "fbank_prior.json")
    dev = torch.device(device)
    model = model.to(dev)
    audio, utts = load_pack(pack, None, min(4, os.cpu_count() or 1))
    if dev.type == "cuda":
        audio = audio.to(dev)
    dev_idx, _ = dev_split(utts, seed, dev_utts)
    return dev_scores(
        model, audio, utts, dev_idx, dev, run_args.get("norm", "mix"), run_args.get("stream_norm", "prior"), prior
    )


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def greedy_cer(
    model, audio, utts, idx, device, norm, chunk, left, batch: int = 32, prior=None, warp: float | None = None
) -> float:
    """Greedy-decoding CER over ``idx`` (jiwer's definition; jiwer is not on the training machine);
    ``warp``: a test-time vocal-tract-length warp of every utterance (``features.vtlp_matrix``), as probe.py uses."""
    refs, hyps = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            b = [[u] for u in idx[i : i + batch]]
            wave, n, texts = make_batch(audio, utts, b, random.Random(0), None, device, 30.0)
            factors = None if warp is None else torch.full((len(b),), warp, device=device)
            feats, frames = features.features(wave, n, norm, prior, factors)
            logits, keep = forward(model, feats, frames, chunk, left)
            ids = logits.argmax(-1).cpu()
            for j, t in enumerate(texts):
                refs.append(t)
                hyps.append(decode_ids(ids[j, : int(frames[j])].tolist()))
    model.train()
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(1, sum(len(r) for r in refs))


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", type=Path, default=Path("data/pack"))
    ap.add_argument("--out", type=Path, default=Path("runs/default"))
    ap.add_argument("--resume", type=Path, default=None, help="folder with weights_*.safetensors to start from")
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock training budget (excludes loading)")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--batch-seconds", type=float, default=900.0, help="padded audio seconds per batch")
    ap.add_argument("--max-seconds", type=float, default=16.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of the budget")
    ap.add_argument("--sortagrad-epochs", type=int, default=2, help="first epochs in ascending length, no joining")
    ap.add_argument("--p-full", type=float, default=0.35, help="probability of a full-context batch")
    ap.add_argument(
        "--curriculum",
        type=float,
        default=0.0,
        help="fraction of the budget trained plainly first: full context, per-utterance norm, no augmentation",
    )
    ap.add_argument("--p-concat", type=float, default=0.3)
    ap.add_argument(
        "--norm",
        default="mix",
        choices=["mix", "none", "utterance", "cumulative", "prior"],
        help="mix: per batch, per-utterance (engine offline) or --stream-norm (engine streaming)",
    )
    ap.add_argument(
        "--stream-norm",
        default="prior",
        choices=["cumulative", "prior"],
        help="the engine's streaming normalisation to train for: running statistics from zero, or "
        "started from the training-set prior the exported checkpoint carries (fbank_prior.json)",
    )
    ap.add_argument("--prior-frames", type=float, default=200.0, help="weight of the prior, in 10 ms frames")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: up to 2 on a CPU run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-shards-per-source", type=int, default=None)
    ap.add_argument("--skip-sources", default="", help="comma-separated pack sources to leave out (e.g. festival)")
    ap.add_argument("--dev-utts", type=int, default=300)
    ap.add_argument(
        "--shares",
        default="",
        help="fixed shares of each epoch's audio for some sources or voice prefixes, e.g. so762=0.35,real:fsdd=0.05; "
        "the others fill the rest in their own proportions",
    )
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument(
        "--vtlp", type=float, default=0.0, help="probability of a vocal-tract-length warp (0.9-1.1) per utterance"
    )
    ap.add_argument("--aug", default="full", choices=["full", "light"], help="augmentation strength (augment.LIGHT)")
    ap.add_argument(
        "--real-speed",
        default="",
        metavar="P:LO:HI",
        help="speed perturbation of the real speakers only (voices real:*, so762 included): each real utterance "
        "sped with probability P by a factor uniform in [LO, HI], e.g. 0.9:0.8:1.25 (default: off, --aug's speed)",
    )
    ap.add_argument("--save-every-s", type=float, default=60.0)
    ap.add_argument(
        "--dev-every-s",
        type=float,
        default=None,
        help="log a 64-utterance dev CER this often (default: 90 s on a GPU, never on a CPU)",
    )
    ap.add_argument("--tiny", action="store_true", help="tiny model (hidden 32, 2 layers)")
    ap.add_argument(
        "--size",
        default="base",
        choices=["base", "cpu", "small"],
        help="base: 5.2M (hidden 192); cpu: 2.9M (hidden 144); small: 0.9M (hidden 96, 4 layers)",
    )
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument(
        "--smoke", action="store_true", help="CPU check: tiny model, 1 shard per source, 3 steps, small batches"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.max_shards_per_source, args.max_steps = "cpu", 1, 3
        args.batch_seconds, args.dev_utts, args.workers = 40.0, 8, 2
        torch.set_num_threads(1)
    elif args.device == "cpu":
        torch.set_num_threads(args.threads or min(2, os.cpu_count() or 1))
    model_config = (
        SMOKE_CONFIG
        if args.smoke or args.tiny
        else {"base": MODEL_CONFIG, "cpu": CPU_CONFIG, "small": SMALL_CONFIG}[args.size]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    fh = open(args.out / "log.txt", "a")
    device = torch.device(args.device)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    t0 = time.time()
    skip = tuple(x for x in args.skip_sources.split(",") if x)
    shares = parse_shares(args.shares)
    real_speed = augment.parse_real_speed(args.real_speed)
    if real_speed is not None and args.no_augment:
        raise SystemExit("--real-speed is an augmentation: it cannot go with --no-augment")
    audio, utts = load_pack(args.pack, args.max_shards_per_source, args.workers, skip)
    hours = audio.numel() / SR / 3600
    log(fh, f"loaded {len(utts)} utterances, {hours:.2f} h in {time.time() - t0:.1f} s; device {device}")
    if device.type == "cuda":
        audio = audio.to(device)
    dev_idx, train_idx = dev_split(utts, args.seed, args.dev_utts)
    warning = resumed_dev_warning(args.resume, args.seed, args.dev_utts)
    if warning:
        log(fh, "WARNING: " + warning)

    prior_path = args.resume / "fbank_prior.json" if args.resume is not None else None
    if prior_path is not None and prior_path.is_file():  # a resumed stage keeps its checkpoint's prior
        prior = read_prior(prior_path)
    else:
        t1 = time.time()
        prior = features.global_prior(audio, utts, train_idx, device, args.prior_frames)
        log(fh, f"fbank prior over {min(len(train_idx), 3000)} training utterances in {time.time() - t1:.1f} s")
    (args.out / "fbank_prior.json").write_text(json.dumps(prior.to_json()))
    model = w2vb.build_model(model_config, "ctc", seed=args.seed)
    shrink_residual_branches(model, model_config["num_hidden_layers"])
    model = model.to(device)
    if args.resume is not None:
        load_weights(model, args.resume)
        log(fh, f"resumed weights from {args.resume}")
    n_params = sum(p.numel() for p in model.parameters())
    log(fh, f"model {n_params / 1e6:.2f} M params, config {model_config}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    aug = None if args.no_augment else (augment.LIGHT if args.aug == "light" else augment.AugmentConfig())
    if aug is not None and args.vtlp > 0:
        aug = dataclasses.replace(aug, p_vtlp=args.vtlp)
    budget_s = args.minutes * 60
    warmup = args.warmup if args.resume is None else args.warmup / 3
    (args.out / "train_config.json").write_text(
        json.dumps(
            {
                "model": model_config,
                "vocab": VOCAB,
                "args": {k: str(v) for k, v in vars(args).items()},
                "augment": str(aug),
                "params": n_params,
                "pack_hours": hours,
                "utterances": len(utts),
            },
            indent=1,
        )
    )

    dev_every = args.dev_every_s if args.dev_every_s is not None else (90.0 if device.type == "cuda" else 0.0)
    step, seen_s, t_start, last_save, epoch = 0, 0.0, time.time(), time.time(), 0
    last_dev = t_start
    loss_sum = None
    done = False
    while not done:
        sortagrad = epoch < args.sortagrad_epochs
        batches = plan_epoch(
            utts,
            weighted_epoch(utts, train_idx, shares, rng),
            rng,
            args.batch_seconds,
            args.max_seconds,
            0.0 if sortagrad else args.p_concat,
            sortagrad,
        )
        if not batches:
            raise SystemExit("no training batches: the pack is empty")
        for batch in batches:
            progress = (time.time() - t_start) / budget_s
            if progress >= 1.0 or (args.max_steps is not None and step >= args.max_steps):
                done = True
                break
            lr = args.lr * (
                progress / warmup
                if progress < warmup
                else 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))
            )
            for g in opt.param_groups:
                g["lr"] = lr
            plain = progress < args.curriculum
            batch_aug = None if plain else aug
            wave, n, texts = make_batch(audio, utts, batch, rng, batch_aug, device, args.max_seconds, real_speed)
            n_total = sum(sum(utts[u]["n"] for u in g) for g in batch)  # before speed/silence padding
            frames10 = features.frame_counts(n)
            if batch_aug is not None:
                wave = augment.augment_waves(wave, n, batch_aug, gen)
                warp = augment.vtlp_factors(wave.shape[0], batch_aug, device, gen)
                mel = augment.spec_augment(features.log_mel(wave, warp), frames10, batch_aug, gen)
            else:
                mel = features.log_mel(wave)
            norm = (
                "utterance"
                if plain
                else (args.norm if args.norm != "mix" else rng.choice(["utterance", args.stream_norm]))
            )
            feats, frames = features.stack(features.normalize(mel, frames10, norm, prior), frames10)
            tgt, tgt_len = targets(texts, device)
            chunk, left = (None, None) if plain else sample_chunking(rng, args.p_full)
            logits, _ = forward(model, feats, frames, chunk, left)
            logp = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
            loss = F.ctc_loss(logp, tgt, frames, tgt_len, blank=0, reduction="sum", zero_infinity=True) / len(texts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            seen_s += n_total / SR
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            if step % args.log_every == 0 or step <= 3:
                loss_avg, loss_sum = float(loss_sum) / (args.log_every if step % args.log_every == 0 else 1), None
                el = time.time() - t_start
                log(
                    fh,
                    f"step {step} epoch {epoch} loss {loss_avg:.2f} gnorm {float(gnorm):.1f} lr {lr:.2e} "
                    f"audio {seen_s / 3600:.1f} h  {seen_s / el:.0f} audio-s/s  elapsed {el:.0f} s",
                )
            if dev_every and time.time() - last_dev > dev_every:
                cer = greedy_cer(model, audio, utts, dev_idx[:64], device, "utterance", None, None)
                cer_s = greedy_cer(model, audio, utts, dev_idx[:64], device, args.stream_norm, 16, None, prior=prior)
                log(fh, f"step {step} dev CER (64 utts) full context {cer:.3f}, 320 ms chunks {cer_s:.3f}")
                last_dev = time.time()
            if time.time() - last_save > args.save_every_s:
                save_weights(model, args.out)
                last_save = time.time()
        epoch += 1
    train_s = time.time() - t_start
    names = save_weights(model, args.out)
    log(
        fh,
        f"trained {step} steps, {seen_s / 3600:.1f} h of (augmented) audio in {train_s:.0f} s "
        f"({seen_s / max(train_s, 1e-9):.0f} audio-s/s); saved {names}",
    )
    dev = {
        "steps": step,
        "train_seconds": train_s,
        "audio_hours_seen": seen_s / 3600,
        "audio_s_per_s": seen_s / max(train_s, 1e-9),
    }
    dev.update(dev_scores(model, audio, utts, dev_idx, device, args.norm, args.stream_norm, prior))
    log(fh, "dev (voices seen in training, utterances not):", json.dumps(dev))
    (args.out / "dev.json").write_text(json.dumps(dev, indent=1))
    fh.close()


if __name__ == "__main__":
    sys.exit(main())
