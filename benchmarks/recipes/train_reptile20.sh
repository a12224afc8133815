#!/usr/bin/env bash
# Reptile for 20-way Omniglot tasks (reptile20-omniglot): the 5-way model (resources/models/reptile-omniglot)
# meta-trained further on 20-way tasks, as Nichol et al. trained separate 20-way models. Their 20-way recipe,
# with SGD inner steps as in train_reptile.sh: meta-batch 5 tasks of 20 classes x 10 "train shots" (1 support
# + 9 queries, all used by the inner steps), 10 inner SGD steps of 20 images at lr 0.1; the meta step falls
# linearly from META_STEP (default 0.5: the weights are already meta-trained) to 0 over ITERS meta-iterations
# (default 3000; the paper ran 200,000 from scratch). Adaptation: 20 full-batch SGD steps of 0.1 on the
# support set, batch norm on the support set's statistics. Validation: 100 fixed 20-way 1-shot val episodes
# every 500 meta-iterations, best kept.
#
#   bash benchmarks/recipes/train_reptile20.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# It saves a resume checkpoint at every validation; the same command with --resume continues.
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
INIT=${INIT:-resources/models/reptile-omniglot.safetensors}
ITERS=${ITERS:-3000}; META_STEP=${META_STEP:-0.5}

train_logged "$OUT/reptile20-omniglot-train.log" --algorithm reptile --backbone conv4 \
    --ways 20 --shots 1 --queries 9 --meta-batch 5 --episodes $(( ITERS * 5 )) \
    --hp lr="$META_STEP" --hp lr_schedule=linear --hp inner_steps=10 --hp inner_batch=20 --hp inner_lr=0.1 \
    --hp adapt_steps=20 --hp train_on=episode --hp batch_norm=support \
    --val-every 500 --val-episodes 100 --val-ways 20 --val-shots 1 --val-queries 15 \
    --out "$OUT/reptile20-omniglot.safetensors" --seed 0 --device "${DEVICE:-cpu}" $(start_from "$INIT")
