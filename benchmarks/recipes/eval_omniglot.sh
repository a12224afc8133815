#!/usr/bin/env bash
# Evaluate a model on the four standard Omniglot test settings (Vinyals split with rotations):
# 5/20-way, 1/5-shot, 15 queries per class, 1000 episodes each, one JSON line per setting.
#
#   bash benchmarks/recipes/eval_omniglot.sh MODEL [OMNIGLOT_DIR] [JSONL] [DEVICE]
#
# The lines are appended to JSONL (and printed). METASTUDIO names the command (default: metastudio).
set -euo pipefail
MODEL=$1
ROOT=${2:-../shared/data/omniglot}
JSONL=${3:-/dev/null}
DEVICE=${4:-cpu}
MS=${METASTUDIO:-metastudio}
for setting in "5 1" "5 5" "20 1" "20 5"; do
    set -- $setting
    $MS eval --model "$MODEL" --dataset omniglot --root "$ROOT" --split test \
        --ways "$1" --shots "$2" --queries 15 --episodes 1000 --device "$DEVICE" --json | tee -a "$JSONL"
done
