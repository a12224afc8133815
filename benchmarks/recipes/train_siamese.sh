#!/usr/bin/env bash
# Siamese Networks (Koch et al. 2015) with Conv-4 on Omniglot (Vinyals split with rotations): meta-train one model
# on the CPU, then evaluate it on the four standard test settings (1000 fixed episodes, 15 queries per class).
#
#   bash benchmarks/recipes/train_siamese.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# Recipe: 60-way 1-shot 5-query episodes (as for ProtoNet), every two distinct images of an episode make a pair
# (pairs=all, same- and different-class pairs weighted equally), no projection (Conv-4's 64-d features go straight
# into the weighted L1 distance), Adam 3e-3 halved every 3000 episodes, no distortions; validation on 100 fixed
# 20-way 1-shot episodes of the val split every 500 steps, best model kept.
#
# Time: about 14000 / 3.6 episodes/s = 65 min on the 2-core CPU when nothing else runs (estimated, not measured
# alone: one training step costs about what a ProtoNet 60-way step costs, measured single-threaded side by side
# on a busy machine; ProtoNet ran 8000 such episodes, validations included, in 36.6 min). Budget: <= 80 min.
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
MODEL="$OUT/siamese-omniglot.safetensors"

train_logged "$OUT/siamese-omniglot-train.log" --algorithm siamese --backbone conv4 \
    --ways 60 --shots 1 --queries 5 --episodes 14000 --hp projection=0 --hp pairs=all --hp distort=false \
    --hp lr=0.003 --hp lr_schedule=step --hp lr_step=3000 --val-every 500 --val-episodes 100 --val-ways 20 \
    --out "$MODEL" --seed 0 --device cpu $RESUME
eval_logged "$MODEL" "$OUT/siamese-omniglot-eval.jsonl"
