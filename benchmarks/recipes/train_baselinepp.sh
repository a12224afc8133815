#!/usr/bin/env bash
# Baseline++ (Chen et al. 2019) with Conv-4 on Omniglot (Vinyals split with rotations: 4,112 training classes):
# train a cosine classifier of every training class on labelled batches, then fine-tune a new cosine classifier
# on each support set (50 Adam steps) on the four standard test settings (1000 fixed episodes, 15 queries).
#
#   bash benchmarks/recipes/train_baselinepp.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# Recipe: 10,000 batches of 64 images (about 7.8 epochs), cross-entropy over the 4,112 classes, Adam 1e-3 with a
# cosine schedule, scale 10; validation on 100 fixed
# 20-way 1-shot episodes of the val split every 1000 steps, best model kept. Budget: <= 60 CPU-minutes.
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
MODEL="$OUT/baselinepp-omniglot.safetensors"

train_logged "$OUT/baselinepp-omniglot-train.log" --algorithm baselinepp --backbone conv4 \
    --batch-steps 10000 --batch-size 64 --hp lr=0.001 --hp lr_schedule=cosine \
    --val-every 1000 --val-episodes 100 --val-ways 20 --out "$MODEL" --seed 0 --device cpu $RESUME
eval_logged "$MODEL" "$OUT/baselinepp-omniglot-eval.jsonl"
