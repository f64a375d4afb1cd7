#!/usr/bin/env bash
# Every score on the bundled default model's card, from a fresh clone (after `make install`):
#
#   bash examples/train/eval_default.sh
#
# 1. builds the held-out sets if missing (data/eval: held-out espeak-ng and flite voices reading
#    held-out sentences, a held-out FSDD speaker, held-out LJ Speech; needs espeak-ng, flite and
#    the fortunes packages, see the Makefile's apt-deps) -- about 2 minutes; the held-out speechocean762
#    speakers (adults and children apart) come from ../shared/corpora;
# 2. offline against cached streaming at 320 ms and 640 ms chunks (examples.train.evaluate), greedy and with the
#    LM; BASELINE=DIR also scores that checkpoint (e.g. the model shipped before) on the same utterances at 320 ms
#    and prints the before/after table; LIMIT=N scores the first N utterances of each set only, EVERY=K every K-th
#    (a subset spread over the speakers; say so when quoting);
# 3. the n-gram LM: rebuilds it from the training text if missing (held-out sentences excluded), scores
#    the alpha/beta grid on the LJ Speech dev third, and runs `speechstream eval` (the streaming
#    pipeline) on the test part without (`--lm none`) and with the LM bundled in the model.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-engines/default_model}
OUT=${OUT:-runs/eval_default}
mkdir -p "$OUT"
$PY -m examples.train.build_data --stages texts,eval
LIMIT_ARGS=()
[ -n "${LIMIT:-}" ] && LIMIT_ARGS=(--limit "$LIMIT")
[ -n "${EVERY:-}" ] && LIMIT_ARGS+=(--every "$EVERY")
BASE_ARGS=()
[ -n "${BASELINE:-}" ] && BASE_ARGS=(--baseline-model "$BASELINE")
$PY -m examples.train.evaluate --model "$MODEL" --chunk-ms 320 "${LIMIT_ARGS[@]}" "${BASE_ARGS[@]}" --json "$OUT/sets_320.json" | tee "$OUT/sets_320.md"
$PY -m examples.train.evaluate --model "$MODEL" --chunk-ms 640 "${LIMIT_ARGS[@]}" --json "$OUT/sets_640.json" | tee "$OUT/sets_640.md"
# the LM: the alpha/beta grid on the LJ Speech dev third (the bundled language_model/attrs.json holds the
# winner), then the streaming pipeline on the test part without and with the bundled LM
[ -f data/lm_so762/lm.arpa ] || $PY -m examples.lm.build_lm --order 3 --so762 --decimals 4 --out data/lm_so762
$PY -m examples.lm.tune data/eval/ljspeech_dev.tsv --model "$MODEL" --lm data/lm_so762/lm.arpa | tee "$OUT/lm_tune.md"
SS="$(dirname "$PY")/speechstream"
"$SS" eval data/eval/ljspeech_test.tsv --model "$MODEL" --lm none | tee "$OUT/lj_test_greedy.md"
"$SS" eval data/eval/ljspeech_test.tsv --model "$MODEL" | tee "$OUT/lj_test_lm.md"
