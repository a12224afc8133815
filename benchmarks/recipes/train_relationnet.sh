#!/usr/bin/env bash
# Relation Networks (Sung et al. 2018), Conv-4 with feature maps, on Omniglot (Vinyals split with
# rotations): meta-train one model on the CPU, then evaluate it on the four standard test settings.
#
#   bash benchmarks/recipes/train_relationnet.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# Recipe (chosen with short runs on the val split, see the notes at the end):
# - backbone conv4-maps: Conv-4 with max-pool in the first two blocks only (64x7x7 maps at 28x28),
#   relation module = 2 x (conv3x3 64, BN, ReLU, max-pool) + FC(8) + FC(1) + sigmoid, MSE loss;
# - 20-way 1-shot 5-query training episodes, 52000 of them; Adam, lr 1e-3 halved every 13000;
# - bfloat16 mixed precision on the CPU (--precision bf16: 1.4x faster on this AVX512-BF16 CPU;
#   docs/benchmarks.md compares 28000 episodes in float32 and 40000 in bf16);
# - class embedding = mean of the shots (the default): one model serves 1 and 5 shots;
# - trained on the Vinyals train and val characters together, no validation, last model kept (TRAIN_SPLIT below).
# Expected time on the project's 2-core CPU when alone: about 84 min of training (10-12 training episodes/s
# in bf16; docs/benchmarks.md) plus about 8 min of evaluation (float32).
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
MODEL="$OUT/relationnet-omniglot.safetensors"
EPISODES=${EPISODES:-52000}; LR_STEP=${LR_STEP:-13000}  # the recipe's; other values for experiments
DISTORT=${DISTORT:-false}; DISTORT_PROB=${DISTORT_PROB:-0.5}  # Koch et al.'s affine distortions of training images
# TRAIN_SPLIT=trainval (the shipped model, run 5): train on all 1200 characters of the Vinyals train and val splits
# (4800 classes with rotations), as Vinyals et al., Snell et al. and Sung et al. do; there is then no validation
# split, and the last model is kept. TRAIN_SPLIT=train: the 1028 train characters, best of 100 val episodes kept.
TRAIN_SPLIT=${TRAIN_SPLIT:-trainval}
VAL="--val-every 4000 --val-episodes 100 --val-ways 20 --val-shots 1 --val-queries 15"
[ "$TRAIN_SPLIT" = trainval ] && VAL="--val-split none"

train_logged "$OUT/relationnet-omniglot-train.log" --algorithm relationnet --backbone conv4-maps \
    --ways 20 --shots 1 --queries 5 --episodes "$EPISODES" --hp lr=0.001 --hp lr_schedule=step --hp lr_step="$LR_STEP" \
    --hp distort="$DISTORT" --hp distort_prob="$DISTORT_PROB" --precision bf16 --train-split "$TRAIN_SPLIT" $VAL \
    --out "$MODEL" --seed 0 --device cpu $RESUME
eval_logged "$MODEL" "$OUT/relationnet-omniglot-eval.jsonl"

# With the documented paths these are:
#   metastudio train --algorithm relationnet --backbone conv4-maps --dataset omniglot --root ../shared/data/omniglot \
#       --protocol vinyals --ways 20 --shots 1 --queries 5 --episodes 52000 --hp lr=0.001 --hp lr_schedule=step \
#       --hp lr_step=13000 --precision bf16 --train-split trainval --val-split none \
#       --out runs/relationnet-omniglot.safetensors --seed 0 --device cpu
#   metastudio eval --model runs/relationnet-omniglot.safetensors --dataset omniglot --root ../shared/data/omniglot \
#       --split test --ways W --shots S --queries 15 --episodes 1000        (W S = 5 1, 5 5, 20 1, 20 5)
#
# Short runs behind the recipe (CPU shared with other jobs; 1 thread; Adam 1e-3 constant; 40 fixed
# val episodes per setting, 15 queries; accuracy %):
#   training episodes          CPU/episode  episodes  5w1s   20w1s  5w5s   20w5s
#   5-way 1-shot 19-query        171 ms        800    91.20  78.45  96.63  91.25
#   20-way 1-shot 5-query        254 ms        480    93.43  83.36  97.90  94.38
#   30-way 1-shot 5-query        500 ms        300    86.13  70.94  95.43   -
# Sum instead of mean of the shots (the paper's choice), same 5-way model: 5w5s 37.67, 20w5s 18.26
# -- a model trained with one shot sees five times larger class embeddings and fails; keep
# --hp class_embedding=sum for models trained and used with one fixed shot count.
