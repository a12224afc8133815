#!/usr/bin/env bash
# Meta Networks (Munkhdalai & Yu 2017), Conv-4, on Omniglot (Vinyals split with rotations): meta-train
# one model on the CPU, then evaluate it on the four standard test settings.
#
#   [TRAIN_SPLIT=trainval] bash benchmarks/recipes/train_metanet.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# Recipe (the default sizes, not tuned): base learner FC 128 + output over 20 label positions,
# representation learner FC 64, meta learners of 20 units; 20-way 1-shot 5-query training episodes,
# Adam 1e-3 halved every EPISODES/4. One model serves 5 and 20 ways, 1 and 5 shots (max_ways 20).
# About 6 training episodes/s (float32) on the project's 2-core CPU when alone.
# TRAIN_SPLIT=trainval (the shipped metanet-omniglot): train on all 1200 characters of the Vinyals train and val
# splits (4800 classes with rotations), as the papers do; there is then no validation split and the last model
# is kept. TRAIN_SPLIT=train (the default): the 1028 train characters, validated on 100 fixed 20-way 1-shot val
# episodes every 2000 steps, best kept. docs/benchmarks.md has both.
# Stop with Ctrl-C (or SIGINT / SIGTERM): the model and a resume checkpoint are saved; run the
# same command with --resume to go on.
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
MODEL="$OUT/metanet-omniglot.safetensors"
EPISODES=${EPISODES:-30000}; LR_STEP=${LR_STEP:-$(( EPISODES / 4 ))}
TRAIN_SPLIT=${TRAIN_SPLIT:-train}
VAL="--val-every 2000 --val-episodes 100 --val-ways 20 --val-shots 1 --val-queries 15"
[ "$TRAIN_SPLIT" = trainval ] && VAL="--val-split none"

train_logged "$OUT/metanet-omniglot-train.log" --algorithm metanet --backbone conv4 \
    --ways 20 --shots 1 --queries 5 --episodes "$EPISODES" --hp lr=0.001 --hp lr_schedule=step --hp lr_step="$LR_STEP" \
    --train-split "$TRAIN_SPLIT" $VAL --out "$MODEL" --seed 0 --device cpu $RESUME
eval_logged "$MODEL" "$OUT/metanet-omniglot-eval.jsonl"
