#!/usr/bin/env bash
# Several training configurations side by side on one GPU (a 5M-parameter model leaves an H100 mostly
# idle), each in its own process and output folder; prints each run's dev-CER lines and final dev.json.
#
#   OUT=runs/sweep MINUTES=7 bash examples/train/sweep.sh
#
# Used for the default model: one 10-minute device call tries the configurations below at once
# instead of betting the call on one of them (the first two single-configuration runs stuck on the
# CTC blank plateau; see README.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
OUT=${OUT:-runs/sweep}
MINUTES=${MINUTES:-7}
COMMON=(--pack data/pack --size base --minutes "$MINUTES" --workers 5 --dev-utts 200)
declare -A CONFIGS=(
  [cur]="--lr 1e-3 --warmup 0.1 --curriculum 0.3 --aug light --batch-seconds 150"
  [noaug]="--lr 1e-3 --warmup 0.1 --no-augment --p-full 0.5 --batch-seconds 150"
  [base]="--lr 5e-4 --warmup 0.2 --curriculum 0.2 --batch-seconds 300"
)
mkdir -p "$OUT"
for name in "${!CONFIGS[@]}"; do
  # shellcheck disable=SC2086
  PYTHONUNBUFFERED=1 $PY -m examples.train.train "${COMMON[@]}" ${CONFIGS[$name]} --out "$OUT/$name" > "$OUT/$name.log" 2>&1 &
done
wait
for name in "${!CONFIGS[@]}"; do
  echo "== $name: ${CONFIGS[$name]}"
  grep -E "dev CER|loaded|Error|error" "$OUT/$name.log" | tail -12
  tail -2 "$OUT/$name.log"
done
