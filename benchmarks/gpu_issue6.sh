#!/usr/bin/env bash
# Issue 6 (MAML, Reptile, LSTM meta-learner) on a CUDA GPU in one call of at most 10 minutes:
#   bash benchmarks/build_gpu_wheels.sh                         # here, before each GPU call
#   bash benchmarks/gpu_issue6.sh OMNIGLOT_DIR OUT_DIR [TRAIN_SECONDS] [--resume]
# 1. installs the wheels of .whl/ (this checkout, learn2learn for Python 3.12 and what it needs);
# 2. runs the GPU tests (grouped tasks = the loop; flat memory over 200 adaptations);
# 3. times MAML against learn2learn on the GPU (benchmarks/maml_speed.py: loop, grouped, learn2learn);
# 4. meta-trains second-order MAML, 5-way 1-shot (Finn et al.'s recipe: meta-batch 32, one inner step of
#    0.4, Adam 1e-3, 3 adaptation steps at test time), for TRAIN_SECONDS (default 240), stopped with SIGINT so
#    that the model and its resume checkpoint are saved into OUT_DIR (carry them back to continue with
#    --resume, on the GPU or on the CPU);
# 5. evaluates that model on 1000 Omniglot test episodes, 5-way 1-shot.
set -uo pipefail
ROOT=${1:?omniglot folder}; OUT=${2:?output folder}; TRAIN_SECONDS=${3:-240}; RESUME=${4:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 METASTUDIO_CACHE_DIR=/tmp/metastudio-cache
PY=${PY:-python3}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tail -2
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } | tee "$OUT/machine.txt"

echo "== GPU tests"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -6 | tee "$OUT/pytest_gpu.txt"

echo "== MAML speed against learn2learn"
timeout 150 $PY benchmarks/maml_speed.py --root "$ROOT" --device cuda --iters 20 --warmup 3 \
    --json "$OUT/cuda-maml-speed.json" 2>&1 | grep -v -i gym | tail -40

echo "== MAML training (${TRAIN_SECONDS} s)"
MODEL="$OUT/maml-omniglot.safetensors"
[ -n "$RESUME" ] && [ -f maml-resume/maml-omniglot.resume.safetensors ] && cp maml-resume/maml-omniglot* "$OUT"/
timeout -s INT -k 60 "$TRAIN_SECONDS" $PY -m metastudio train --algorithm maml --backbone conv4 --dataset omniglot \
    --root "$ROOT" --protocol vinyals --ways 5 --shots 1 --queries 15 --meta-batch 32 --episodes 1920000 \
    --hp inner_lr=0.4 --hp inner_steps=1 --hp adapt_steps=3 --hp lr=0.001 --hp lr_schedule=constant \
    --val-every 500 --val-episodes 200 --val-ways 5 --val-shots 1 --val-queries 15 \
    --out "$MODEL" --seed 0 --device cuda $RESUME 2>&1 | grep -v '^step [0-9]*[1-9]00/' | tee -a "$OUT/maml-train.log"

echo "== evaluation, 5-way 1-shot"
[ -f "$MODEL" ] && timeout 120 $PY -m metastudio eval --model "$MODEL" --dataset omniglot --root "$ROOT" --split test \
    --ways 5 --shots 1 --queries 15 --episodes 1000 --device cuda --json 2>/dev/null | tee -a "$OUT/maml-eval.jsonl"
exit 0
