#!/usr/bin/env bash
# The "-photos" models of the metric family: a head meta-trained on frozen EfficientNet-Lite0 features of
# mini-ImageNet train (the backbone of the shipped `photos` model), then evaluated on mini-ImageNet val,
# 600 fixed episodes, 5-way 1-shot and 5-shot, 15 queries, beside the `photos` Prototypical Networks model.
#
#   bash benchmarks/train_photos_heads.sh [MINI_IMAGENET_DIR] [OUT_DIR] [ALGORITHM...]
#
# Each image is run through the backbone once (224x224, enlarged from 84 px as the app enlarges a small
# photo); the features go to the feature cache, so the second and later trainings and all evaluations
# reuse them. Training uses the first 200 images of each of the 64 train classes (12,800 images, about
# 5 min of embedding on the project's 2-core CPU); evaluation embeds the 9,600 val images once (about
# 4 min). No validation during training: mini-ImageNet val is the evaluation set, and choosing the
# best step on it would flatter the numbers. The last step's model is kept.
#
# Heads (5-way 1-shot 15-query training episodes, Adam 1e-3):
# - matchingnet: a learned 256-d projection, full context embeddings on (the paper's photo setting),
#   learned temperature;
# - siamese: a learned 512-d projection with a sigmoid (the paper's twin layer), weighted L1;
# - relationnet: the MLP relation module on the concatenated (class, query) 1280-d vectors.
set -euo pipefail
ROOT=${1:-../shared/data/mini-imagenet}
OUT=${2:-runs}
shift $(( $# > 2 ? 2 : $# )) || true
ALGORITHMS=${*:-matchingnet siamese relationnet}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
MS=${METASTUDIO:-metastudio}
COMMON=(--backbone efficientnet-lite0 --freeze-backbone --dataset mini-imagenet --root "$ROOT" --per-class 200
        --ways 5 --shots 1 --queries 15 --val-split none --val-every 1000 --seed 0 --device cpu)

for algo in $ALGORITHMS; do
    case $algo in
        matchingnet) EPISODES=3000; HP=(--hp fce=true --hp projection=256 --hp lr=0.001) ;;
        siamese)     EPISODES=3000; HP=(--hp projection=512 --hp lr=0.001) ;;
        relationnet) EPISODES=3000; HP=(--hp lr=0.001) ;;
        *) echo "unknown algorithm $algo" >&2; exit 2 ;;
    esac
    MODEL="$OUT/$algo-photos.safetensors"
    start=$(date +%s)
    $MS train --algorithm "$algo" "${COMMON[@]}" --episodes "$EPISODES" "${HP[@]}" --out "$MODEL" 2>&1 \
        | tee "$OUT/$algo-photos-train.log"
    echo "training wall time (features included): $(( $(date +%s) - start )) s" | tee -a "$OUT/$algo-photos-train.log"
done

: > "$OUT/photos-heads-eval.jsonl"
for algo in photos $ALGORITHMS; do
    model=$algo
    [ "$algo" != photos ] && model="$OUT/$algo-photos.safetensors"
    for shots in 1 5; do
        $MS eval --model "$model" --dataset mini-imagenet --root "$ROOT" --split val --ways 5 --shots "$shots" \
            --queries 15 --episodes 600 --device cpu --json | tee -a "$OUT/photos-heads-eval.jsonl"
    done
done
