#!/usr/bin/env bash
# Several training configurations side by side on one GPU (a 5M-parameter model leaves an H100 mostly
# idle), each in its own process and output folder; prints each run's dev-CER lines and final dev.json.
#
#   OUT=runs/sweep MINUTES=7 bash examples/train/sweep.sh              # SET=first: three from scratch
#   OUT=runs/sweep2 RESUME=runs/sweep/noaug SET=continue bash examples/train/sweep.sh
#   OUT=/tmp/sw RESUME=runs/r16d SET=long MINUTES=21 DEV_UTTS=300 bash examples/train/sweep.sh  # README.md: "The next GPU run"
#   OUT=runs/f RESUME=runs/e_soup SET=festival MINUTES=62 DEV_UTTS=300 bash examples/train/sweep.sh  # stage f, CPU
#   OUT=runs/g RESUME=runs/f/avg SET=g MINUTES=65 DEV_UTTS=300 bash examples/train/sweep.sh           # Session 7, CPU
#
# Per run it leaves a folder train.py --resume and soup.py take (weights_*.safetensors, log.txt, dev.json,
# train_config.json, fbank_prior.json). For the device's return trip, lease_snap.sh packs each run into two
# files (fp16 weights, logs). Used for the default model: one device lease tries several configurations at
# once instead of betting it on one (see README.md for the history).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
OUT=${OUT:-runs/sweep}
MINUTES=${MINUTES:-7}
SET=${SET:-first}
# --threads 1: on a CPU the runs share the cores (a GPU run ignores it)
# SKIP_SOURCES: pack sources to leave out (run.sh: festival for stages a-e, which were trained before it existed)
COMMON=(--pack data/pack --size "${SIZE:-base}" --minutes "$MINUTES" --workers 5 --threads 1 --dev-utts "${DEV_UTTS:-200}"
        --seed "${SEED:-1234}" --skip-sources "${SKIP_SOURCES:-}")
# SET=long, SET=festival and SET=g resume a finished run
need_resume() {
  [ -n "${RESUME:-}" ] && ls "$RESUME"/weights_*.safetensors >/dev/null 2>&1 || { echo "SET=$SET needs RESUME"; exit 2; }
  echo "resume: $RESUME"
}
declare -A CONFIGS
if [ "$SET" = first ]; then
  CONFIGS=(
    [cur]="--lr 1e-3 --warmup 0.1 --curriculum 0.3 --aug light --batch-seconds 150"
    [noaug]="--lr 1e-3 --warmup 0.1 --no-augment --p-full 0.5 --batch-seconds 150"
    [base]="--lr 5e-4 --warmup 0.2 --curriculum 0.2 --batch-seconds 300"
  )
elif [ "$SET" = long ]; then
  # one long lease resuming a shipped model: three learning-rate / augmentation settings side by side
  need_resume
  CONFIGS=(
    [light]="--resume $RESUME --lr 5e-4 --warmup 0.05 --aug light --p-full 0.25 --batch-seconds 150"
    [full]="--resume $RESUME --lr 5e-4 --warmup 0.05 --aug full --p-full 0.25 --batch-seconds 150"
    [gentle]="--resume $RESUME --lr 2e-4 --warmup 0.05 --aug light --p-full 0.15 --batch-seconds 150"
  )
elif [ "$SET" = festival ]; then
  # stage f (run.sh, 2 CPU cores): two gentle runs from stage e's average, with and without the festival voices
  need_resume
  F="--resume $RESUME --lr 1.5e-4 --warmup 0.05 --aug light --p-full 0.15 --sortagrad-epochs 0 --batch-seconds 60"
  CONFIGS=([whole]="$F" [nofest]="$F --skip-sources festival${SKIP_SOURCES:+,$SKIP_SOURCES}")
elif [ "$SET" = g ]; then
  # Session 7 (2 CPU cores): two runs from stage f's average at f's settings, one on a pack with the wordnet
  # source (build_data --sources wordnet) and one without it, the control
  need_resume
  G="--resume $RESUME --lr 1.5e-4 --warmup 0.05 --aug light --p-full 0.15 --sortagrad-epochs 0 --batch-seconds 60"
  CONFIGS=([control]="$G --skip-sources wordnet${SKIP_SOURCES:+,$SKIP_SOURCES}" [wordnet]="$G")
else
  R=()
  if [ -n "${RESUME:-}" ] && ls "$RESUME"/weights_*.safetensors >/dev/null 2>&1; then R=(--resume "$RESUME"); fi
  echo "resume: ${R[*]:-none (from scratch)}"
  CONFIGS=(
    [plain]="${R[*]} --lr 1e-3 --warmup 0.1 --no-augment --p-full 0.5 --batch-seconds 150"
    [light]="${R[*]} --lr 1e-3 --warmup 0.1 --aug light --p-full 0.5 --batch-seconds 150"
  )
fi
mkdir -p "$OUT"
for name in "${!CONFIGS[@]}"; do
  # shellcheck disable=SC2086
  PYTHONUNBUFFERED=1 $PY -m examples.train.train "${COMMON[@]}" ${CONFIGS[$name]} --out "$OUT/$name" > "$OUT/$name.log" 2>&1 &
done
wait
for name in "${!CONFIGS[@]}"; do
  echo "== $name: ${CONFIGS[$name]}"
  grep -E "dev CER|loaded|resumed|Error|error" "$OUT/$name.log" | tail -12
  tail -2 "$OUT/$name.log"
  mv "$OUT/$name.log" "$OUT/$name/stdout.log"
done
touch "$OUT/DONE"
