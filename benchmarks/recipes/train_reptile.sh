#!/usr/bin/env bash
# Reptile on Omniglot (Vinyals split with rotations), Conv-4, the paper's 5-way recipe with SGD inner steps:
# meta-batch 5 tasks of 5 classes x 10 "train shots" (1 support + 9 queries, all used by the inner steps,
# train_on=episode), 5 inner SGD steps of 10 images at lr 0.1, meta step 1.0 falling linearly to 0 over
# 40,000 meta-iterations (200,000 episodes; the paper ran 100,000: 11 h on the 2-core CPU); adaptation at test time: 20 full-batch SGD steps at lr 0.1;
# batch norm normalises the queries with the support set's statistics (batch_norm=support, not transductive).
# Validation: 200 fixed 5-way 1-shot val episodes every 2000 meta-iterations, best kept.
#
#   bash benchmarks/recipes/train_reptile.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# Long on a 2-core CPU: run it in the background; it saves a resume checkpoint next to the model at
# every validation, and the same command with --resume continues where it stopped.
set -euo pipefail
source "$(dirname "$0")/train_common.sh"

train_logged "$OUT/reptile-omniglot-train.log" --algorithm reptile --backbone conv4 \
    --ways 5 --shots 1 --queries 9 --meta-batch 5 --episodes 200000 \
    --hp lr=1.0 --hp lr_schedule=linear --hp inner_steps=5 --hp inner_batch=10 --hp inner_lr=0.1 \
    --hp adapt_steps=20 --hp train_on=episode --hp batch_norm=support \
    --val-every 2000 --val-episodes 200 --val-ways 5 --val-shots 1 --val-queries 15 \
    --out "$OUT/reptile-omniglot.safetensors" --seed 0 --device cpu $RESUME
