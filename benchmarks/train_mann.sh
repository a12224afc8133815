#!/usr/bin/env bash
# Memory-Augmented Neural Network (Santoro et al. 2016), Conv-4 features, on Omniglot (Vinyals split
# with rotations): meta-train one model, then evaluate it in the paper's sequence protocol and in the
# standard one.
#
#   bash benchmarks/train_mann.sh [OMNIGLOT_DIR] [OUT_DIR] [--resume]
#
# Recipe (second run): the memory network on the frozen 64-d features of the built-in `conv4-omniglot` backbone
# (the Conv-4 Prototypical Networks meta-learned on the train characters; benchmarks/extract_conv4_omniglot.py),
# each image embedded once. The first recipe trained Conv-4 jointly, at 20 episodes/s on the 2-core CPU: the
# paper's 100,000 meta-batches would take 22 h. Episodes as in the paper: sequences of 5 classes x 10 images
# (--shots 1 --queries 9: all 50 images form the label-delayed sequence), meta-batch 16, the default sizes
# (LSTM controller 200, 128 memory rows of 40, 4 read heads, output over 20 label positions so that one
# model serves up to 20 classes), Adam 1e-3 with gradients clipped to norm 10 (the paper: RMSProp 1e-4),
# STEPS meta-batches (default 20000); validation on 200 fixed 5-way 1-shot val episodes in the standard
# protocol every 1000 steps, best kept.
# DEVICE=cuda for a GPU (benchmarks/gpu_issue6.sh runs the same recipe as mann-omniglot).
# Stop with Ctrl-C (or SIGINT / SIGTERM): the model and a resume checkpoint are saved; run the same
# command with --resume to go on.
set -euo pipefail
ROOT=${1:-../shared/data/omniglot}
OUT=${2:-runs}
RESUME=${3:-}
MODEL="$OUT/mann-omniglot.safetensors"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
MS=${METASTUDIO:-metastudio}
PY=${PY:-python}
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-20000}

start=$(date +%s)
$MS train --algorithm mann --backbone conv4-omniglot --freeze-backbone --dataset omniglot --root "$ROOT" --protocol vinyals \
    --ways 5 --shots 1 --queries 9 --meta-batch 16 --episodes $(( STEPS * 16 )) --hp lr=0.001 --hp lr_schedule=constant \
    --hp grad_clip=10 \
    --val-every 1000 --val-episodes 200 --val-ways 5 --val-shots 1 --val-queries 15 \
    --out "$MODEL" --seed 0 --device "$DEVICE" $RESUME 2>&1 | tee -a "$OUT/mann-omniglot-train.log"
echo "training wall time (this part): $(( $(date +%s) - start )) s" | tee -a "$OUT/mann-omniglot-train.log"

$PY "$(dirname "$0")/mann_sequence_eval.py" --model "$MODEL" --root "$ROOT" --sequences 1000 --device "$DEVICE" \
    --json "$OUT/mann-omniglot-sequences.json"
bash "$(dirname "$0")/eval_omniglot.sh" "$MODEL" "$ROOT" "$OUT/mann-omniglot-eval.jsonl" "$DEVICE"
