#!/usr/bin/env bash
# Progress of a sweep running in the background on the device machine, and its weights so far, for $OUT:
#
#   bash examples/train/lease_snap.sh /tmp/sw "$OUT" [WAIT_S]
#
# Waits up to WAIT_S seconds (default 0) for the sweep's DONE marker, prints each run's dev-CER lines,
# and writes one fp16 weights file and one log archive per run into OUT (snapshot.py; 2 files a run,
# so three runs stay under the device's 8 returned files). Lets one device lease train longer than one
# call: the sweep runs under setsid, and each call of this script brings back what it has so far.
set -uo pipefail
cd "$(dirname "$0")/../.."
SW=$1
DEST=$2
WAIT=${3:-0}
end=$((SECONDS + WAIT))
while [ ! -e "$SW/DONE" ] && [ $SECONDS -lt $end ]; do sleep 10; done
[ -e "$SW/DONE" ] && echo "sweep finished" || echo "sweep still running"
for f in "$SW"/*.log "$SW"/*/stdout.log; do
  [ -f "$f" ] || continue
  echo "== $f"
  grep -E "dev CER|loaded|resumed|WARNING|Error" "$f" | tail -8
  tail -1 "$f"
done
mkdir -p "$DEST"
runs=$(find "$SW" -mindepth 1 -maxdepth 1 -type d | sort)
[ -n "$runs" ] || { echo "no runs in $SW"; exit 1; }
# shellcheck disable=SC2086
${PY:-python3} -m examples.train.snapshot $runs --out "$DEST"
ls -la "$DEST"
