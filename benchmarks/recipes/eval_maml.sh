#!/usr/bin/env bash
# Evaluate a MAML model (second or first order) on Omniglot's four standard settings.
#
#   bash benchmarks/recipes/eval_maml.sh MODEL [OMNIGLOT_DIR] [RESULTS_PREFIX]
#
# 1. For each setting, the number of adaptation steps (an `adaptation` hyperparameter: a trained
#    model takes another value with --hp adapt_steps=N) is chosen on 200 episodes of the *val*
#    split among STEPS (default "1 3 10") steps of the model's inner_lr: a model meta-trained with one
#    inner step on 5-way tasks adapts best with a different number of steps for 5 shots or 20 ways.
#    SETTINGS (default "5:1 5:5 20:1 20:5", ways:shots) limits the settings evaluated.
# 2. With the chosen steps, 1000 *test* episodes per setting, batch norm on support-set statistics
#    (the default: a query never affects another) and on each batch's statistics (transductive,
#    as in MAML's paper).
# Writes RESULTS_PREFIX-val.jsonl and RESULTS_PREFIX-test.jsonl (default: next to the model).
set -euo pipefail
MODEL=${1:?model file}; ROOT=${2:-../shared/data/omniglot}; PREFIX=${3:-${MODEL%.safetensors}}
DEVICE=${DEVICE:-cpu}; VAL_EPISODES=${VAL_EPISODES:-200}; TEST_EPISODES=${TEST_EPISODES:-1000}
STEPS=${STEPS:-1 3 10}; SETTINGS=${SETTINGS:-5:1 5:5 20:1 20:5}
MS=${METASTUDIO:-metastudio}
run() {  # split ways shots episodes hp...
    local split=$1 ways=$2 shots=$3 episodes=$4; shift 4
    local hp=(); for h in "$@"; do hp+=(--hp "$h"); done
    $MS eval --model "$MODEL" --dataset omniglot --root "$ROOT" --split "$split" --ways "$ways" --shots "$shots" \
        --queries 15 --episodes "$episodes" --device "$DEVICE" --json "${hp[@]}" 2>/dev/null
}
for setting in $SETTINGS; do
    set -- ${setting/:/ }
    best=""; best_acc=-1
    for steps in $STEPS; do
        line=$(run val "$1" "$2" "$VAL_EPISODES" adapt_steps=$steps)
        echo "$line" >>"$PREFIX-val.jsonl"
        acc=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['accuracy'])" "$line")
        echo "val ${1}w${2}s adapt_steps=$steps: $acc"
        if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$acc" "$best_acc"; then
            best=$steps; best_acc=$acc
        fi
    done
    for bn in support transductive; do
        line=$(run test "$1" "$2" "$TEST_EPISODES" adapt_steps=$best batch_norm=$bn)
        echo "$line" | tee -a "$PREFIX-test.jsonl"
    done
done
