#!/usr/bin/env bash
# Prototypical Networks on a CUDA GPU (a machine without network), in one go:
#   bash benchmarks/recipes/gpu_protonet_check.sh OMNIGLOT_DIR OUT_DIR [EPISODES]
# installs this checkout (wheels for missing packages may lie in .whl/), runs the GPU tests,
# the throughput comparison with easyfsl, the documented ProtoNet Omniglot training on the GPU
# and its evaluation on the four test settings, writing logs and JSON into OUT_DIR.
set -uo pipefail
ROOT=${1:?omniglot folder}; OUT=${2:?output folder}; EPISODES=${3:-8000}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 METASTUDIO_CACHE_DIR=/tmp/metastudio-cache
PY=${PY:-python3}
{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } | tee "$OUT/machine.txt"
# Packages missing there (and this project, built here with `pip wheel --no-deps -w .whl .`) travel as wheels.
$PY -m pip install -q --no-index --no-deps .whl/*.whl 2>&1 | tail -2
$PY -m metastudio plugins | tee -a "$OUT/machine.txt"

echo "== GPU tests"
$PY -m pytest -q -p no:cacheprovider tests/engine/test_gpu.py tests/data/test_datasets.py 2>&1 | tail -4 | tee "$OUT/pytest_gpu.txt"

echo "== throughput vs easyfsl"
timeout 200 $PY benchmarks/harnesses/throughput.py --root "$ROOT" --device cuda --episodes 300 --warmup 20 \
    --json "$OUT/throughput_gpu.json" 2>&1 | tail -20 | tee "$OUT/throughput_gpu.txt"

echo "== training ($EPISODES episodes)"
start=$(date +%s)
$PY -m metastudio train --algorithm protonet --backbone conv4 --dataset omniglot --root "$ROOT" --protocol vinyals \
    --ways 60 --shots 1 --queries 5 --episodes "$EPISODES" --val-every 500 --val-episodes 100 --val-ways 20 \
    --out /tmp/gpu-run/protonet-omniglot.safetensors --seed 0 --device cuda 2>&1 | grep -v '^step [0-9]*/' | tee "$OUT/train_gpu.log"
echo "training wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/train_gpu.log"
cp /tmp/gpu-run/protonet-omniglot.safetensors "$OUT/protonet-omniglot-gpu.safetensors"

echo "== evaluation"
for setting in "5 1" "5 5" "20 1" "20 5"; do
    set -- $setting
    $PY -m metastudio eval --model /tmp/gpu-run/protonet-omniglot.safetensors --dataset omniglot --root "$ROOT" \
        --split test --ways "$1" --shots "$2" --queries 15 --episodes 1000 --device cuda --json 2>/dev/null | tee -a "$OUT/eval_gpu.jsonl"
done
