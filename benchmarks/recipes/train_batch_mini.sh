#!/usr/bin/env bash
# SimpleShot or Baseline++ with Conv-4 on mini-ImageNet, trained on labelled batches of all 64 training classes,
# then evaluated on mini-ImageNet **val** (16 classes never seen in training; the test split is kept for the end):
# 5-way 1-shot and 5-shot, 15 queries, 600 fixed episodes each.
#
#   bash benchmarks/recipes/train_batch_mini.sh ALGORITHM [MINI_IMAGENET_DIR] [OUT_DIR] [--resume]
#
# Recipe: 4,000 batches of 64 84x84 images (about 6.7 epochs: a CPU budget of about an hour, against the papers'
# 90-400 epochs on a GPU), cross-entropy over the 64 classes, Adam 1e-3 with a cosine schedule, no augmentation.
# No validation split is used (val is what the numbers are reported on): the model after the last step is kept,
# saved every 500 steps so that --resume continues an interrupted run.
set -euo pipefail
ALGORITHM=$1
ROOT=${2:-../shared/data/mini-imagenet}
OUT=${3:-runs}
RESUME=${4:-}
MS=${METASTUDIO:-metastudio}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
MODEL="$OUT/$ALGORITHM-mini-conv4.safetensors"
LOG="$OUT/$ALGORITHM-mini-conv4-train.log"
start=$(date +%s)
$MS train --algorithm "$ALGORITHM" --backbone conv4 --dataset mini-imagenet --root "$ROOT" \
    --batch-steps 4000 --batch-size 64 --hp lr=0.001 --hp lr_schedule=cosine \
    --val-split none --val-every 500 --out "$MODEL" --seed 0 --device cpu $RESUME 2>&1 | tee -a "$LOG"
echo "this run's wall time: $(( $(date +%s) - start )) s" | tee -a "$LOG"
for shots in 1 5; do
    $MS eval --model "$MODEL" --dataset mini-imagenet --root "$ROOT" --split val \
        --ways 5 --shots "$shots" --queries 15 --episodes 600 --device cpu --json | tee -a "$OUT/$ALGORITHM-mini-conv4-eval.jsonl"
done
