#!/usr/bin/env bash
# Matching Networks, Conv-4, Omniglot (Vinyals split with rotations): meta-train one model on the CPU, then
# evaluate it on the four standard test settings.
#
#   bash benchmarks/recipes/train_matchingnet.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# Recipe: cosine attention without full context embeddings, temperature meta-learned; 60-way 1-shot 5-query
# episodes, Adam 1e-3 halved every 2500 episodes; validation on 100 fixed 20-way 1-shot val episodes every
# 500 steps, best kept. --resume continues an interrupted run.
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
MODEL="$OUT/matchingnet-omniglot.safetensors"

train_logged "$OUT/matchingnet-omniglot-train.log" --algorithm matchingnet --backbone conv4 \
    --ways 60 --shots 1 --queries 5 --episodes 10000 --hp lr_step=2500 --val-every 500 --val-episodes 100 \
    --val-ways 20 --out "$MODEL" --seed 0 --device cpu $RESUME
eval_logged "$MODEL" "$OUT/matchingnet-omniglot-eval.jsonl"
