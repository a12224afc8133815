#!/usr/bin/env bash
# Meta-train several Omniglot models side by side on one CUDA GPU, in one call of at most 10 minutes:
#   bash benchmarks/tools/build_gpu_wheels.sh                  # here, before each GPU call
#   [MODELS="maml-omniglot ..."] [SPEED=0] bash benchmarks/recipes/gpu_train_side_by_side.sh OMNIGLOT_DIR OUT_DIR [TRAIN_SECONDS]
# 1. installs the wheels of .whl/ (this checkout, learn2learn for Python 3.12 and what it needs) and
#    decodes Omniglot once into the dataset cache (the later processes read the cache);
# 2. unless SPEED=0: times MAML against learn2learn on the GPU, alone on it (benchmarks/harnesses/maml_speed.py:
#    loop, grouped, vmap, learn2learn; SPEED_IMPLS="metastudio-grouped vmap" for some of them);
# 3. meta-trains MODELS side by side on the one GPU, each for TRAIN_SECONDS (default 300), stopped
#    with SIGINT so that each model and its resume checkpoint are saved. Recipes (in train() below):
#    maml-omniglot / fomaml-omniglot: Finn et al.'s 5-way 1-shot (meta-batch 32, 15 queries, one inner
#    step of 0.4, Adam 1e-3, 3 adaptation steps), second / first order; maml20-omniglot: maml-omniglot's
#    weights (--init resources/models/maml-omniglot.safetensors) meta-trained further on 20-way 1-shot tasks
#    (meta-batch 16, its one step of 0.4); reptile-omniglot: train_reptile.sh's; metalstm-omniglot: 5 learned
#    updates; metanet-omniglot: train_metanet.sh's; mann-omniglot: train_mann.sh's. Default MODELS: maml,
#    fomaml, reptile and metalstm. A model whose resume checkpoint is in RESUME_DIR (default .carry/maml-resume,
#    carried) continues from it. Without one (.carry does not outlive a checkout), fomaml5-omniglot,
#    reptile-omniglot and maml20-omniglot start from the shipped models in resources/models (see their
#    recipes). The GPU tests run beside;
# 4. evaluates the models on 1000 Omniglot test episodes of the four standard settings, with batch
#    norm on support-set statistics (the default), and maml-omniglot with transductive batch norm too
#    (EVAL=0 skips this: partial models are followed on the validation numbers of their logs);
# 5. packs logs, eval results and models (with resume checkpoints) into OUT_DIR/results.tar (the device
#    tool brings back at most 8 files), after training and again at the end.
set -uo pipefail
ROOT=${1:?omniglot folder}; OUT=${2:?output folder}; TRAIN_SECONDS=${3:-300}
MODELS=${MODELS:-maml-omniglot fomaml-omniglot reptile-omniglot metalstm-omniglot}; RESUME_DIR=${RESUME_DIR:-.carry/maml-resume}; SPEED=${SPEED:-1}; EVAL=${EVAL:-1}
SPEED_IMPLS=${SPEED_IMPLS:-all}
WORK=/tmp/gpu-side-by-side; LOG=$WORK/logs; MODELDIR=$WORK/models  # packed into OUT_DIR/results.tar
rm -rf "$WORK"; mkdir -p "$LOG" "$MODELDIR" "$OUT"
export PYTHONUNBUFFERED=1 METASTUDIO_CACHE_DIR=/tmp/metastudio-cache
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}; EVAL_EPISODES=${EVAL_EPISODES:-1000}; EVAL_TIMEOUT=${EVAL_TIMEOUT:-150}; SPEED_ITERS=${SPEED_ITERS:-20}  # smaller for a dry run
pack() { tar cf "$OUT/results.tar.tmp" -C "$WORK" logs models && mv "$OUT/results.tar.tmp" "$OUT/results.tar"; }
trap pack EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tail -2
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
{ date -u; nvidia-smi -L 2>/dev/null; nproc; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
    | tee "$LOG/machine.txt"

echo "== decoding Omniglot into the cache"
time $PY -c "
from metastudio_builtins.datasets.omniglot import load_omniglot
for split in ('train', 'val', 'test'):
    print(split, load_omniglot('$ROOT', split, 'vinyals').images.shape)"

echo "== MAML speed against learn2learn (alone on the GPU)"
if [ "$SPEED" = 1 ]; then
    for impl in $SPEED_IMPLS; do
        timeout 150 $PY benchmarks/harnesses/maml_speed.py --root "$ROOT" --device "$DEVICE" --iters "$SPEED_ITERS" --warmup 3 \
            --impl "$impl" --json "$LOG/cuda-maml-speed-$impl.json" 2>&1 | grep -v -i gym | tail -12
    done
fi

echo "== training ${MODELS} side by side (${TRAIN_SECONDS} s), GPU tests beside them"
train() {  # name: continues from RESUME_DIR/<name>.resume.safetensors where that exists
    local name=$1 resume="" recipe backbone=conv4
    local maml5="--algorithm maml --ways 5 --shots 1 --queries 15 --meta-batch 32 --episodes 1920000 --hp inner_lr=0.4
                 --hp inner_steps=1 --hp adapt_steps=3 --hp lr=0.001 --hp lr_schedule=constant"
    case $name in
        maml-omniglot) recipe=$maml5 ;;
        fomaml-omniglot) recipe="$maml5 --hp first_order=true" ;;
        fomaml5-omniglot)  # first order with 5 inner steps of 0.1 (Finn et al.'s 20-way inner loop), starting from the
            # one-step first-order model's weights (fomaml-omniglot plateaued at 95.5 % val with one step of 0.4)
            # Without a resume checkpoint it goes on from the shipped model (this recipe's step 500) at a lower rate,
            # 1e-4: validation fell after step 500 at 5e-4.
            recipe="$maml5 --hp first_order=true --hp inner_steps=5 --hp inner_lr=0.1 --hp adapt_steps=5"
            if [ -f "$RESUME_DIR/$name.resume.safetensors" ]; then recipe="$recipe --hp lr=0.0005"
            else recipe="$recipe --hp lr=0.0001 --init resources/models/fomaml-omniglot.safetensors"; fi ;;
        maml20-omniglot)  # the 5-way model's weights, meta-trained further on 20-way tasks with its one step of 0.4
            # (Finn et al.'s own 20-way model: 5 steps of 0.1 from scratch, 60,000 meta-iterations, out of reach here)
            recipe="--algorithm maml --ways 20 --shots 1 --queries 15 --meta-batch 16 --episodes 960000 --hp inner_lr=0.4
                    --hp inner_steps=1 --hp adapt_steps=1 --hp lr=0.001 --hp lr_schedule=constant"
            [ -f "$RESUME_DIR/$name.resume.safetensors" ] || recipe="$recipe --init resources/models/maml-omniglot.safetensors" ;;
        reptile-omniglot)  # train_reptile.sh's recipe (its CPU resume checkpoint continues here). Without a
            # resume checkpoint: the rest of that schedule from the shipped model (its step 6,000 of 40,000), the meta step
            # falling linearly from 0.85 (where the schedule was at step 6,000) to 0 over the 34,000 meta-iterations left.
            local reptile="--hp lr_schedule=linear --hp inner_steps=5 --hp inner_batch=10 --hp inner_lr=0.1
                    --hp adapt_steps=20 --hp train_on=episode --hp batch_norm=support"
            if [ -f "$RESUME_DIR/$name.resume.safetensors" ]; then
                recipe="--algorithm reptile --ways 5 --shots 1 --queries 9 --meta-batch 5 --episodes 200000 --hp lr=1.0 $reptile"
            else
                recipe="--algorithm reptile --ways 5 --shots 1 --queries 9 --meta-batch 5 --episodes 170000 --hp lr=0.85
                        $reptile --init resources/models/reptile-omniglot.safetensors"
            fi ;;
        reptile20-omniglot)  # train_reptile20.sh's recipe (20-way tasks), from the shipped 20-way model
            # where there is one, else from the 5-way one; the meta step falls linearly from 0.5 over 40,000 meta-iterations
            local from=resources/models/reptile20-omniglot.safetensors
            [ -f "$from" ] || from=resources/models/reptile-omniglot.safetensors
            recipe="--algorithm reptile --ways 20 --shots 1 --queries 9 --meta-batch 5 --episodes 200000 --hp lr=0.5
                    --hp lr_schedule=linear --hp inner_steps=10 --hp inner_batch=20 --hp inner_lr=0.1 --hp adapt_steps=20
                    --hp train_on=episode --hp batch_norm=support"
            [ -f "$RESUME_DIR/$name.resume.safetensors" ] || recipe="$recipe --init $from" ;;
        metalstm-omniglot)  # Ravi & Larochelle's 5-way 1-shot setting: 5 learned updates, Adam 1e-3
            recipe="--algorithm metalstm --ways 5 --shots 1 --queries 15 --meta-batch 16 --episodes 960000
                    --hp inner_steps=5 --hp adapt_steps=5 --hp lr=0.001 --hp lr_schedule=constant" ;;
        metanet-omniglot)  # train_metanet.sh's recipe (its CPU resume checkpoint continues here)
            recipe="--algorithm metanet --ways 20 --shots 1 --queries 5 --episodes 30000 --hp lr=0.001 --hp lr_schedule=step
                    --hp lr_step=7500" ;;
        mann-omniglot)  # train_mann.sh's recipe (frozen conv4-omniglot features)
            backbone="conv4-omniglot --freeze-backbone"
            recipe="--algorithm mann --ways 5 --shots 1 --queries 9 --meta-batch 16 --episodes 640000 --hp lr=0.001
                    --hp lr_schedule=constant --hp grad_clip=10 --hp feature_transform=cl2n --hp max_ways=5
                    --hp feature_keys=true" ;;
        *) echo "unknown model $name"; return 1 ;;
    esac
    if [ -f "$RESUME_DIR/$name.resume.safetensors" ]; then
        cp "$RESUME_DIR/$name".*safetensors "$MODELDIR"/; resume=--resume
    fi
    local val="--val-every 500 --val-episodes 200"
    local ways=5
    [ "$name" = reptile-omniglot ] && val="--val-every 2000 --val-episodes 200"
    [ "$name" = maml20-omniglot ] && ways=20
    [ "$name" = reptile20-omniglot ] && { val="--val-every 2000 --val-episodes 100"; ways=20; }
    [ "$name" = metanet-omniglot ] && { val="--val-every 2000 --val-episodes 100"; ways=20; }
    timeout -s INT -k 90 "$TRAIN_SECONDS" $PY -m metastudio train --backbone $backbone --dataset omniglot \
        --root "$ROOT" --protocol vinyals $recipe $val --val-ways $ways --val-shots 1 --val-queries 15 \
        --out "$MODELDIR/$name.safetensors" --seed 0 --device "$DEVICE" $resume >>"$LOG/$name-train.log" 2>&1
}
for name in $MODELS; do train "$name" & done
timeout 200 $PY -m pytest -q -p no:cacheprovider tests/engine/test_gpu.py >"$LOG/pytest_gpu.txt" 2>&1 &
sleep 60; nvidia-smi 2>/dev/null --query-gpu=utilization.gpu,memory.used --format=csv | tee "$LOG/nvidia-smi.txt"
wait
tail -3 "$LOG/pytest_gpu.txt"
for name in $MODELS; do
    grep -E "validation|completed|stopped|error|Error" "$LOG/$name-train.log" | tail -4
done

pack
[ "$EVAL" = 1 ] || exit 0
echo "== evaluation, 1000 test episodes per setting"
evals() {  # EVAL_MODELS (default: every trained model) in the four settings, both batch-norm modes; then
           # EXTRA_EVALS ("FILE:WAYS:SHOTS:BN ...")
    for name in ${EVAL_MODELS:-$MODELS}; do
        for setting in "5 1" "5 5" "20 1" "20 5"; do
            for bn in support transductive; do echo "$MODELDIR/$name.safetensors $setting $bn"; done
        done
    done
    for spec in ${EXTRA_EVALS:-}; do echo "${spec//:/ }"; done
}
run_eval() {  # model-file ways shots batch_norm
    [ -f "$1" ] || return 0
    timeout "$EVAL_TIMEOUT" $PY -m metastudio eval --model "$1" --dataset omniglot --root "$ROOT" --split test \
        --ways "$2" --shots "$3" --queries 15 --episodes "$EVAL_EPISODES" --hp batch_norm="$4" --device "$DEVICE" --json 2>>"$LOG/eval.err"
}
export -f run_eval; export MODELDIR ROOT PY LOG DEVICE EVAL_EPISODES EVAL_TIMEOUT
evals | xargs -P ${EVAL_JOBS:-8} -L 1 bash -c 'run_eval "$@"' _ >>"$LOG/eval.jsonl"
$PY -c "
import json
for line in open('$LOG/eval.jsonl'):
    r = json.loads(line)
    print(f\"{r['model'].split('/')[-1]:32s} {r['ways']:>2}w{r['shots']}s {r['hyperparameters']['batch_norm']:12s} \"
          f\"{r['accuracy']:.2f} ± {r['ci95']:.2f}\")"
exit 0
