#!/usr/bin/env bash
# The "-photos" models of the metric family: a head meta-trained on frozen EfficientNet-Lite0 features of
# mini-ImageNet train (the backbone of the shipped `photos` model), then evaluated on mini-ImageNet val,
# 600 fixed episodes, 5-way 1-shot and 5-shot, 15 queries, beside the `photos` Prototypical Networks model.
#
#   bash benchmarks/recipes/train_photos_heads.sh [MINI_IMAGENET_DIR] [OUT_DIR] [ALGORITHM...]
#
# Each image is run through the backbone once (224x224, enlarged from 84 px as the app enlarges a small
# photo); the features go to the feature cache, so the second and later trainings and all evaluations
# reuse them. Training uses the first 200 images of each train class (about 5 min of embedding on the
# project's 2-core CPU); evaluation embeds the 9,600 val images once (about 4 min).
#
# Model selection never looks at mini-ImageNet val (the evaluation set): 16 of the 64 train classes are
# held out (--val-holdout 16, chosen with the seed), the head trains on the other 48, and the step that
# is best on 300 5-way 1-shot episodes of the held-out classes is kept -- step 0, the untrained head,
# included, so a head that training only makes worse keeps its starting weights.
#
# Photos are fitted to the square input by cropping the centre, as for the `photos` model (--fit center-crop).
# All three heads see the features as the `photos` model does (feature_transform=power-cl2n: signed
# square root, unit length, centred on the training classes' mean, unit length again); on raw features
# every head did much worse (docs/benchmarks.md). Heads (5-way 1-shot 15-query
# training episodes, Adam):
# - matchingnet: cosine attention over the support examples with a learned temperature, no projection
#   and no full context embeddings (both overfit the 64 classes: docs/benchmarks.md);
# - siamese: the learned weighted L1 distance and sigmoid on the features (no projection layer), lr 1e-4;
# - relationnet: the MLP relation module on [class, query, class * query] (pair_input=concat-product;
#   on the paper's [class, query] an MLP must learn a similarity from scratch).
set -euo pipefail
ROOT=${1:-../shared/data/mini-imagenet}
OUT=${2:-runs}
shift $(( $# > 2 ? 2 : $# )) || true
ALGORITHMS=${*:-matchingnet siamese relationnet}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
MS=${METASTUDIO:-metastudio}
COMMON=(--backbone efficientnet-lite0 --freeze-backbone --dataset mini-imagenet --root "$ROOT" --per-class 200
        --ways 5 --shots 1 --queries 15 --val-holdout 16 --val-every 250 --val-episodes 300 --seed 0 --device cpu
        --hp feature_transform=power-cl2n --fit center-crop)

for algo in $ALGORITHMS; do
    plugin=$algo; BATCH=1
    case $algo in
        matchingnet) EPISODES=2000; HP=(--hp fce=false --hp projection=0 --hp lr=0.001) ;;
        siamese)     EPISODES=2000; HP=(--hp projection=0 --hp lr=0.0001) ;;
        relationnet) EPISODES=3000; HP=(--hp pair_input=concat-product --hp lr=0.001) ;;
        # The gradient family: MAML / Reptile / the LSTM meta-learner on [features, relu(W features + b)]
        # (head_hidden units), adapted in the inner loop with the output layer (metastudio.algorithms.gradient).
        # A small outer learning rate: with 1e-3 or 1e-4 the head overfits the 48 classes within 100-300 steps
        # (held-out 5w1s from 79.4 % to 72-73 %); inner_lr 10 (the most allowed) on unit-length features.
        maml)        EPISODES=2000; BATCH=4; HP=(--hp head_hidden=64 --hp inner_lr=10 --hp inner_steps=1
                                                 --hp adapt_steps=1 --hp lr=0.00003) ;;
        fomaml)      plugin=maml; EPISODES=2000; BATCH=4; HP=(--hp head_hidden=64 --hp first_order=true
                                                 --hp inner_lr=10 --hp inner_steps=1 --hp adapt_steps=1
                                                 --hp lr=0.00003) ;;
        reptile)     EPISODES=1000; BATCH=4; HP=(--hp head_hidden=64 --hp inner_lr=10 --hp inner_steps=5
                                                 --hp adapt_steps=5) ;;
        metalstm)    EPISODES=1000; BATCH=4; HP=(--hp head_hidden=32 --hp inner_lr=5 --hp inner_steps=3
                                                 --hp adapt_steps=3 --hp lr=0.0001) ;;
        # MANN with feature keys (the features enter its read and write keys; docs/algorithms.md), 5 label
        # positions, 16 sequences of 80 images per step
        mann)        EPISODES=32000; BATCH=16; HP=(--hp lr=0.001 --hp feature_keys=true --hp max_ways=5
                                                  --hp grad_clip=10) ;;
        metanet)     EPISODES=1500; HP=(--hp lr=0.001) ;;  # best held-out at step 250 (73.92 %), then 68-70 %
        *) echo "unknown algorithm $algo" >&2; exit 2 ;;
    esac
    EPISODES=${HEAD_EPISODES:-$EPISODES}  # shorter runs for experiments
    MODEL="$OUT/$algo-photos.safetensors"
    start=$(date +%s)
    $MS train --algorithm "$plugin" "${COMMON[@]}" --episodes "$EPISODES" --meta-batch "$BATCH" "${HP[@]}" --out "$MODEL" 2>&1 \
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
