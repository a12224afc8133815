#!/usr/bin/env bash
# Memory-Augmented Neural Network (Santoro et al. 2016), Conv-4 features, on Omniglot (Vinyals split
# with rotations): meta-train one model, then evaluate it in the paper's sequence protocol and in the
# standard one.
#
#   [WAYS=20] [FEATURE_KEYS=false] [DEVICE=cuda] bash benchmarks/recipes/train_mann.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# Recipe (the shipped mann-omniglot): the memory network on the frozen features of the built-in
# `conv4-omniglot` backbone (the Conv-4 of protonet-omniglot, meta-learned on the train characters only;
# benchmarks/tools/extract_conv4_omniglot.py), each image embedded once, centred on the train mean and scaled
# to unit length (feature_transform=cl2n). Episodes as in the paper's 5-class experiment: sequences of
# 5 classes x 10 images (--shots 1 --queries 9: all 50 images form the label-delayed sequence), 5 label
# positions (max_ways=5, the paper's one-hot labels; the model tells at most 5 classes apart), meta-batch
# 16, LSTM controller 200, 128 memory rows of 40, 4 read heads with a learned key strength, Adam 1e-3
# with gradients clipped to norm 10 (the paper: RMSProp 1e-4), STEPS meta-batches (default 40000);
# validation on 200 fixed 5-way 1-shot val episodes in the standard protocol every 500 steps, best kept.
# FEATURE_KEYS=true (the default): the image features enter the read and write keys through one shared
# projection (97.96 % validation after 1,500 meta-batches). FEATURE_KEYS=false: the paper's keys, emitted
# by the controller alone (at chance for about 9000 meta-batches, then 69 % at 26,000; docs/benchmarks.md).
# WAYS=20: the `mann20-omniglot` recipe: 20 label positions, 20-way sequences of 100 images (1 + 4 per
# class), ONE read head, validation on 100 20-way 1-shot episodes every 250 steps. With the paper's 4
# heads, 4 rows are written per step and the least used ones recycled: an image is overwritten before
# the next of its class comes up, 50 steps later on average (at chance after 1,750 meta-batches); with
# one head, 90.75 % validation at step 750.
# DEVICE=cuda for a GPU (gpu_train_side_by_side.sh runs the same recipe as mann-omniglot).
# Stop with Ctrl-C (or SIGINT / SIGTERM): the model and a resume checkpoint are saved; run the same
# command with --resume to go on.
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
PY=${PY:-python}
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-40000}
FEATURE_KEYS=${FEATURE_KEYS:-true}
WAYS=${WAYS:-5}
if [ "$WAYS" = 20 ]; then
    MODEL="$OUT/mann20-omniglot.safetensors"
    EPISODE_ARGS=(--ways 20 --shots 1 --queries 4) HEAD_ARGS=(--hp max_ways=20 --hp reads=1)
    VAL_ARGS=(--val-every 250 --val-episodes 100 --val-ways 20 --val-shots 1 --val-queries 5)
else
    MODEL="$OUT/mann-omniglot.safetensors"
    EPISODE_ARGS=(--ways 5 --shots 1 --queries 9) HEAD_ARGS=(--hp max_ways=5)
    VAL_ARGS=(--val-every 500 --val-episodes 200 --val-ways 5 --val-shots 1 --val-queries 15)
fi
NAME=$(basename "$MODEL" .safetensors)

train_logged "$OUT/$NAME-train.log" --algorithm mann --backbone conv4-omniglot --freeze-backbone \
    "${EPISODE_ARGS[@]}" --meta-batch 16 --episodes $(( STEPS * 16 )) --hp lr=0.001 --hp lr_schedule=constant \
    --hp grad_clip=10 --hp feature_transform=cl2n "${HEAD_ARGS[@]}" --hp feature_keys="$FEATURE_KEYS" \
    "${VAL_ARGS[@]}" --out "$MODEL" --seed 0 --device "$DEVICE" $RESUME

$PY "$RECIPES/../harnesses/mann_sequence_eval.py" --model "$MODEL" --root "$ROOT" --sequences 1000 --device "$DEVICE" \
    --json "$OUT/$NAME-sequences.json"
# The standard protocol (5-way only with 5 label positions): 1000 test episodes, 15 queries per class.
SETTINGS="5:1 5:5"; [ "$WAYS" = 20 ] && SETTINGS="5:1 5:5 20:1 20:5"
for setting in $SETTINGS; do
    $MS eval --model "$MODEL" --dataset omniglot --root "$ROOT" --split test --ways "${setting%:*}" --shots "${setting#*:}" \
        --queries 15 --episodes 1000 --device "$DEVICE" --json | tee -a "$OUT/$NAME-eval.jsonl"
done
