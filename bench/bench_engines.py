"""Engine cost: offline vs cached vs window, window mode vs the transformers ASR pipeline,
and cross-stream batching. Base-size random-init models (compute does not depend on weights).

    nice .venv/bin/python bench/bench_engines.py [--seconds 60] [--runs 3] [--threads 2]
        [--families wav2vec2-base,wav2vec2-base-layernorm,wavlm-base] [--no-pipeline]

Prints a markdown table and the command that produced it. Times are medians over ``--runs``
of both wall-clock and process CPU time; ratios use CPU time, which other processes on a
shared machine disturb less than wall time. RTF = compute seconds / audio seconds.

Rows:
- offline / cached / window RTF per family (cached: chunk 1000 ms, left context 2000 ms;
  window: left 1000 / chunk 1000 / lookahead 1000 ms). Goal: cached within 1.10x offline.
- window vs the pipeline at the same chunk_length_s / stride_length_s (window left = stride
  left, lookahead = stride right, chunk = the rest), the greedy transcripts compared. For
  layer-norm CNNs window mode reuses the CNN output across windows (normalize="stream"), and
  also runs with the pipeline's per-window normalisation (normalize="window", no reuse, exact).
- batching: aggregate real-time streams on the machine, 4 cached streams stepped one by one vs
  through step_batch.

To add a family, add a row to FAMILIES: (model_type, config overrides on the transformers
config class defaults, which are the base-size configs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.api import load_model  # noqa: E402

SR = 16000
CORPORA = Path(os.environ.get("SPEECHSTREAM_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora"))

# name: (model_type, overrides on the transformers config defaults = base-size)
FAMILIES: dict[str, tuple[str, dict]] = {
    "wav2vec2-base": ("wav2vec2", {}),
    "wav2vec2-base-layernorm": (
        "wav2vec2",
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    ),
    "wavlm-base": ("wavlm", {}),
    # engines-B: Conformer base size (768 x 12, kernel 31; cached mode lags 1 + 12 * 15 frames = 3.62 s)
    "conformer-rotary-base": (
        "wav2vec2-conformer",
        dict(position_embeddings_type="rotary", feat_extract_norm="layer", conv_bias=True),
    ),
    # engines-B: W2V-BERT at 768 x 12 (the 2.0 checkpoint is 1024 x 24); fbank input, causal conv
    "w2v-bert-768x12": (
        "wav2vec2-bert",
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    ),
}
_CONFIG_CLASS = {
    "wav2vec2": "Wav2Vec2Config",
    "wavlm": "WavLMConfig",
    "wav2vec2-conformer": "Wav2Vec2ConformerConfig",
    "wav2vec2-bert": "Wav2Vec2BertConfig",
}
_CTC_CLASS = {
    "wav2vec2": "Wav2Vec2ForCTC",
    "wavlm": "WavLMForCTC",
    "wav2vec2-conformer": "Wav2Vec2ConformerForCTC",
    "wav2vec2-bert": "Wav2Vec2BertForCTC",
}
VOCAB = "<pad> <s> </s> <unk> | E T A O N I H S R D L U M W C F G Y P B V K ' X J Q Z".split()


def build(name: str, out: Path) -> Path:
    import transformers
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    model_type, overrides = FAMILIES[name]
    cfg = getattr(transformers, _CONFIG_CLASS[model_type])(vocab_size=len(VOCAB), **overrides)
    torch.manual_seed(0)
    model = getattr(transformers, _CTC_CLASS[model_type])(cfg).eval()
    model.save_pretrained(out)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "Wav2Vec2CTCTokenizer", "word_delimiter_token": "|"})
    )
    if model_type == "wav2vec2-bert":
        from transformers import SeamlessM4TFeatureExtractor

        SeamlessM4TFeatureExtractor().save_pretrained(out)
    else:
        from transformers import Wav2Vec2FeatureExtractor

        Wav2Vec2FeatureExtractor(
            do_normalize=True, return_attention_mask=cfg.feat_extract_norm == "layer"
        ).save_pretrained(out)
    return out


def speech(seconds: float) -> np.ndarray:
    """Real speech (LJ Speech subset) concatenated to the length; noise if the corpus is absent."""
    manifest = CORPORA / "ljspeech_subset" / "manifest.tsv"
    n = int(seconds * SR)
    if manifest.is_file():
        import soundfile as sf

        parts, total = [], 0
        for line in manifest.read_text().splitlines()[1:]:
            x, sr = sf.read(CORPORA / "ljspeech_subset" / line.split("\t")[0], dtype="float32")
            assert sr == SR
            parts.append(x)
            total += len(x)
            if total >= n:
                break
        return np.concatenate(parts)[:n]
    return (0.1 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)


def timed(fn, runs: int):
    walls, cpus, result = [], [], None
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), result


def stream(
    model, audio: torch.Tensor, mode: str, chunk_ms: int, left_ms: int, look_ms: int, normalize="stream", feed_ms=None
):
    return model.stream(audio, mode, chunk_ms, left_ms, look_ms, normalize=normalize, feed_ms=feed_ms)


def greedy_text(logits: torch.Tensor, tokenizer) -> str:
    """Greedy CTC transcript, decoded exactly as the pipeline decodes CTC output
    (Wav2Vec2CTCTokenizer.decode, special tokens kept)."""
    return tokenizer.decode(logits.argmax(-1).tolist(), skip_special_tokens=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--pipeline-families", default="wav2vec2-base,wav2vec2-base-layernorm")
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--no-modes", action="store_true", help="skip the offline/cached/window rows")
    ap.add_argument("--settings", default="10:2:2,2:0.5:0.5,3:1:1,2:1:1", help="pipeline chunk:left:right in s")
    ap.add_argument("--batch-streams", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    audio_np = speech(args.seconds)
    audio = torch.from_numpy(audio_np)
    dur = audio.numel() / SR
    rows: list[str] = []
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_engines_"))

    def row(family, what, wall, cpu, ratio="", transcript=""):
        rows.append(f"| {family} | {what} | {wall / dur:.3f} | {cpu / dur:.3f} | {ratio} | {transcript} |")
        print(rows[-1], file=sys.stderr, flush=True)  # progress

    for name in args.families.split(","):
        path = build(name, tmp / name)
        model = load_model(path)
        if not args.no_modes:
            with torch.inference_mode():
                w_off, c_off, off = timed(lambda: model.forward(audio).frames[0], args.runs)
            row(name, "offline", w_off, c_off, "1.00x offline")
            w, c, cached = timed(lambda: stream(model, audio, "cached", 1000, 2000, 0), args.runs)
            row(name, "cached 1000 ms chunk, 2000 ms left", w, c, f"{c / c_off:.2f}x offline")
            w, c, _ = timed(lambda: stream(model, audio, "cached", 320, 5120, 0), args.runs)
            row(name, "cached 320 ms chunk, 5120 ms left", w, c, f"{c / c_off:.2f}x offline")
            w, c, _ = timed(lambda: stream(model, audio, "window", 1000, 1000, 1000), args.runs)
            row(name, "window 1000/1000/1000 ms (stream norm)", w, c, f"{c / c_off:.2f}x offline")

        if not args.no_pipeline and name in args.pipeline_families.split(","):
            from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, pipeline

            from tests.hf_tiny import reference

            ref = reference(path)
            pipe = pipeline(
                "automatic-speech-recognition",
                model=ref,
                tokenizer=Wav2Vec2CTCTokenizer(str(path / "vocab.json")),
                feature_extractor=Wav2Vec2FeatureExtractor.from_pretrained(path),
                device=-1,
            )
            w_p0, c_p0, _ = timed(lambda: pipe({"raw": audio_np, "sampling_rate": SR})["text"], args.runs)
            row(name, "pipeline, unchunked", w_p0, c_p0, "")
            layer = model.config.feat_extract_norm == "layer"
            settings = [tuple(float(v) for v in t.split(":")) for t in args.settings.split(",")]
            for cl, sl, sr in settings:
                cl, sl, sr = (int(v) if v == int(v) else v for v in (cl, sl, sr))
                label = f"{cl} s, stride ({sl}, {sr})"
                center_ms = int(round((cl - sl - sr) * 1000))
                try:
                    w_p, c_p, p_text = timed(
                        lambda: pipe(
                            {"raw": audio_np, "sampling_rate": SR}, chunk_length_s=cl, stride_length_s=(sl, sr)
                        )["text"],
                        args.runs,
                    )
                    row(name, f"pipeline {label}", w_p, c_p, f"{c_p / c_p0:.2f}x pipeline unchunked")
                except Exception as exc:  # the pipeline rejects this geometry
                    c_p, p_text = None, None
                    rows.append(f"| {name} | pipeline {label} | - | - | raises {type(exc).__name__}: {exc} | |")
                    print(rows[-1], file=sys.stderr, flush=True)
                if center_ms <= 0:
                    # a one-frame centre between full contexts: every frame its own window
                    short = audio[: 5 * SR]
                    w, c, _ = timed(
                        lambda: stream(model, short, "window", 20, int(sl * 1000), int(sr * 1000), feed_ms=1000), 1
                    )
                    rows.append(
                        f"| {name} | window {int(sl * 1000)}/20/{int(sr * 1000)} ms (accepted; on 5 s) | "
                        f"{w / 5:.3f} | {c / 5:.3f} | | |"
                    )
                    continue
                modes = [("window", "per-window norm, exact to pipeline")]
                if layer:
                    modes.insert(0, ("stream", "CNN reuse, stream norm"))
                for normalize, desc in modes:
                    w, c, logits = timed(
                        lambda: stream(
                            model, audio, "window", center_ms, int(sl * 1000), int(sr * 1000), normalize=normalize
                        ),
                        args.runs,
                    )
                    ratio = f"{c_p / c:.2f}x faster than pipeline" if c_p else ""
                    same = ""
                    if p_text is not None:
                        ours = greedy_text(logits, pipe.tokenizer)
                        same = "same" if ours == p_text else f"differs ({len(ours)} vs {len(p_text)} chars)"
                    row(name, f"window {int(sl * 1000)}/{center_ms}/{int(sr * 1000)} ms ({desc})", w, c, ratio, same)
                sys.stdout.flush()
            del pipe, ref

        if args.batch_streams and name == args.families.split(",")[0]:
            n = args.batch_streams
            seg = audio[: int(min(dur, 20) * SR)]
            seg_s = seg.numel() / SR
            rngs = [seg.roll(i * 1234) for i in range(n)]

            def one_by_one():
                states = [model.init_state("cached", chunk_ms=1000, left_context_ms=2000) for _ in range(n)]
                for i in range(0, seg.numel(), SR):
                    for j in range(n):
                        _, states[j] = model.step(rngs[j][i : i + SR], states[j])

            def batched():
                states = [model.init_state("cached", chunk_ms=1000, left_context_ms=2000) for _ in range(n)]
                for i in range(0, seg.numel(), SR):
                    _, states = model.step_batch([r[i : i + SR] for r in rngs], states)

            w1, c1, _ = timed(one_by_one, args.runs)
            w2, c2, _ = timed(batched, args.runs)
            rows.append(
                f"| {name} | {n} cached streams, one by one | {w1 / (n * seg_s):.3f} | {c1 / (n * seg_s):.3f} | "
                f"{n * seg_s / w1:.1f} real-time streams (wall) | |"
            )
            rows.append(
                f"| {name} | {n} cached streams, step_batch | {w2 / (n * seg_s):.3f} | {c2 / (n * seg_s):.3f} | "
                f"{n * seg_s / w2:.1f} real-time streams (wall), {c1 / c2:.2f}x less CPU | |"
            )

    cmd = "nice .venv/bin/python bench/bench_engines.py " + " ".join(sys.argv[1:])
    print(
        f"\n{dur:.0f} s of audio, {args.threads} threads, medians of {args.runs} runs; RTF = seconds per audio second\n"
    )
    print("| model | mode | RTF wall | RTF CPU | ratio (CPU time) | greedy transcript vs pipeline |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(r)
    for n in notes:
        print(n)
    print(f"\ncommand: `{cmd.strip()}`")


if __name__ == "__main__":
    main()
