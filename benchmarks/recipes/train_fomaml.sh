#!/usr/bin/env bash
# First-order MAML on Omniglot (Vinyals split with rotations), Conv-4, 5-way 1-shot, continued on the CPU from
# the shipped fomaml-omniglot (the GPU recipe fomaml5-omniglot in gpu_train_side_by_side.sh: 5 first-order
# inner steps of 0.1, Adam, meta-batch 32, which reached 97.03 % val at step 500 with Adam 5e-4 and fell after it).
# Here: a lower constant Adam rate (LR, default 1e-4), and QUERIES query images per class (default 5, not 15:
# the meta-gradient of 32 tasks x 25 queries is still an average over 800 images, and a meta-iteration takes
# about 3 s instead of 9 s on one thread; Finn et al. used 1). INNER_STEPS first-order SGD steps of 0.1 in training
# and in adaptation (default 5). Batch norm on the support set's statistics, as shipped.
# Validation: VAL_EPISODES (default 400) fixed 5-way 1-shot val episodes every VAL_EVERY (default 100)
# meta-iterations, best kept.
#
#   bash benchmarks/recipes/train_fomaml.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# It saves a resume checkpoint at every validation; the same command with --resume continues (stop it with
# Ctrl-C or SIGINT: it saves the best model and a resume checkpoint first).
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
INIT=${INIT:-resources/models/fomaml-omniglot.safetensors}
ITERS=${ITERS:-4000}; LR=${LR:-0.0001}; QUERIES=${QUERIES:-5}; INNER_STEPS=${INNER_STEPS:-5}
VAL_EVERY=${VAL_EVERY:-100}; VAL_EPISODES=${VAL_EPISODES:-400}; SEED=${SEED:-1}

train_logged "$OUT/fomaml-omniglot-train.log" --algorithm maml --backbone conv4 \
    --ways 5 --shots 1 --queries "$QUERIES" --meta-batch 32 --episodes $(( ITERS * 32 )) \
    --hp first_order=true --hp inner_steps="$INNER_STEPS" --hp inner_lr=0.1 --hp adapt_steps="$INNER_STEPS" \
    --hp lr="$LR" --hp lr_schedule=constant --hp batch_norm=support \
    --val-every "$VAL_EVERY" --val-episodes "$VAL_EPISODES" --val-ways 5 --val-shots 1 --val-queries 15 \
    --out "$OUT/fomaml-omniglot.safetensors" --seed "$SEED" --device "${DEVICE:-cpu}" $(start_from "$INIT")
