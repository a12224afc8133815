#!/usr/bin/env bash
# Meta Networks (Munkhdalai & Yu 2017), Conv-4, on Omniglot (Vinyals split with rotations): meta-train
# one model on the CPU, then evaluate it on the four standard test settings.
#
#   bash benchmarks/train_metanet.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# Recipe (first run; not yet tuned): the default sizes (base learner FC 128 + output over 20 label
# positions, representation learner FC 64, meta learners of 20 units), 20-way 1-shot 5-query training
# episodes, Adam 1e-3 halved every EPISODES/4; validation on 100 fixed 20-way 1-shot val episodes every
# 2000 steps, best kept. One model serves 5 and 20 ways, 1 and 5 shots (max_ways 20).
# Measured speed on the project's 2-core CPU, alone: about 6 training episodes/s (float32).
# Stop with Ctrl-C (or SIGINT / SIGTERM): the model and a resume checkpoint are saved; run the
# same command with --resume to go on.
set -euo pipefail
ROOT=${1:-../shared/data/omniglot}
OUT=${2:-runs}
RESUME=${3:-}
MODEL="$OUT/metanet-omniglot.safetensors"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
MS=${METASTUDIO:-metastudio}
EPISODES=${EPISODES:-30000}; LR_STEP=${LR_STEP:-$(( EPISODES / 4 ))}
# TRAIN_SPLIT=trainval: train on all 1200 characters of the Vinyals train and val splits (4800 classes with
# rotations), as the papers do; there is then no validation split and the last model is kept. The shipped
# metanet-omniglot is this run (docs/benchmarks.md).
# TRAIN_SPLIT=train (default): the earlier run (1028 characters, best of 100 val episodes kept).
TRAIN_SPLIT=${TRAIN_SPLIT:-train}
VAL="--val-every 2000 --val-episodes 100 --val-ways 20 --val-shots 1 --val-queries 15"
[ "$TRAIN_SPLIT" = trainval ] && VAL="--val-split none"

start=$(date +%s)
$MS train --algorithm metanet --backbone conv4 --dataset omniglot --root "$ROOT" --protocol vinyals \
    --ways 20 --shots 1 --queries 5 --episodes "$EPISODES" --hp lr=0.001 --hp lr_schedule=step --hp lr_step="$LR_STEP" \
    --train-split "$TRAIN_SPLIT" $VAL \
    --out "$MODEL" --seed 0 --device cpu $RESUME 2>&1 | tee -a "$OUT/metanet-omniglot-train.log"
echo "training wall time (this part): $(( $(date +%s) - start )) s" | tee -a "$OUT/metanet-omniglot-train.log"

bash "$(dirname "$0")/eval_omniglot.sh" "$MODEL" "$ROOT" "$OUT/metanet-omniglot-eval.jsonl"
