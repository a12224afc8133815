#!/bin/sh
# Matching Networks, Conv-4, Omniglot (Vinyals split with rotations): train, then the four test settings.
# Add --resume to the train command to continue an interrupted run.
set -e
ROOT=${ROOT:-../shared/data/omniglot}
metastudio train --algorithm matchingnet --backbone conv4 --dataset omniglot --root "$ROOT" --protocol vinyals \
    --ways 60 --shots 1 --queries 5 --episodes 10000 --hp lr_step=2500 --val-every 500 --val-episodes 100 \
    --val-ways 20 --out runs/matchingnet-omniglot.safetensors --seed 0 --device cpu "$@"
for setting in "5 1" "5 5" "20 1" "20 5"; do
    set -- $setting
    metastudio eval --model runs/matchingnet-omniglot.safetensors --dataset omniglot --root "$ROOT" --split test \
        --ways "$1" --shots "$2" --queries 15 --episodes 1000 --device cpu --json
done
