#!/usr/bin/env bash
# Siamese Networks (Koch et al. 2015) with Conv-4 on Omniglot (Vinyals split with rotations), on the CPU:
#   bash benchmarks/train_siamese.sh
# then the four test settings (1000 fixed episodes, 15 queries per class). Run from anywhere; it works in the
# repository root and uses .venv/bin when there is one. Logs go to benchmarks/results/.
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
cd "$(dirname "$0")/.."
[ -x .venv/bin/metastudio ] && export PATH="$PWD/.venv/bin:$PATH"
ROOT=../shared/data/omniglot
mkdir -p runs benchmarks/results

start=$(date +%s)
metastudio train --algorithm siamese --backbone conv4 --dataset omniglot --root "$ROOT" --protocol vinyals \
    --ways 60 --shots 1 --queries 5 --episodes 14000 --hp projection=0 --hp pairs=all --hp distort=false \
    --hp lr=0.003 --hp lr_schedule=step --hp lr_step=3000 --val-every 500 --val-episodes 100 --val-ways 20 \
    --out runs/siamese-omniglot.safetensors --seed 0 --device cpu 2>&1 | tee benchmarks/results/cpu-siamese-omniglot-train.log
echo "training wall time: $(( $(date +%s) - start )) s" | tee -a benchmarks/results/cpu-siamese-omniglot-train.log

EVAL=benchmarks/results/cpu-siamese-omniglot-eval.jsonl
: > "$EVAL"
metastudio eval --model runs/siamese-omniglot.safetensors --dataset omniglot --root "$ROOT" --split test --ways 5 --shots 1 --queries 15 --episodes 1000 --device cpu --json | tee -a "$EVAL"
metastudio eval --model runs/siamese-omniglot.safetensors --dataset omniglot --root "$ROOT" --split test --ways 5 --shots 5 --queries 15 --episodes 1000 --device cpu --json | tee -a "$EVAL"
metastudio eval --model runs/siamese-omniglot.safetensors --dataset omniglot --root "$ROOT" --split test --ways 20 --shots 1 --queries 15 --episodes 1000 --device cpu --json | tee -a "$EVAL"
metastudio eval --model runs/siamese-omniglot.safetensors --dataset omniglot --root "$ROOT" --split test --ways 20 --shots 5 --queries 15 --episodes 1000 --device cpu --json | tee -a "$EVAL"
