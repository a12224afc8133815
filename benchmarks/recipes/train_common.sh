# Sourced by the Omniglot recipes (train_{matchingnet,siamese,relationnet,metanet,mann,reptile,reptile20,fomaml}.sh)
# after `set -euo pipefail`: their common arguments ([OMNIGLOT_DIR] [OUT_DIR] [--resume]) and one logged
# `metastudio train` run. The default paths are relative to the repository root, where the recipes run.
ROOT=${1:-../shared/data/omniglot}
OUT=${2:-runs}
RESUME=${3:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
MS=${METASTUDIO:-metastudio}  # the command to run (default: metastudio on the PATH)
RECIPES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# start_from INIT_MODEL: --resume when the script was given it, else --init INIT_MODEL
start_from() { if [ -n "$RESUME" ]; then echo "$RESUME"; else echo "--init $1"; fi; }

# train_logged LOG ARGS...: `metastudio train ARGS...` on the Omniglot Vinyals split (ARGS name the algorithm and the
# backbone), its output appended to LOG (also shown), then the run's wall time
train_logged() {
    local log=$1 start; shift
    start=$(date +%s)
    $MS train --dataset omniglot --root "$ROOT" --protocol vinyals "$@" 2>&1 | tee -a "$log"
    echo "this run's wall time: $(( $(date +%s) - start )) s" | tee -a "$log"
}

# eval_logged MODEL JSONL: the four standard Omniglot test settings (eval_omniglot.sh), appended to JSONL
eval_logged() { bash "$RECIPES/eval_omniglot.sh" "$1" "$ROOT" "$2" "${DEVICE:-cpu}"; }
