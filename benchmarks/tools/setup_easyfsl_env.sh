#!/usr/bin/env bash
# Create benchmarks/.venv-easyfsl: one environment holding both easyfsl and this project, so that
# benchmarks/harnesses/throughput.py can time the two side by side in one process.
#
#   bash benchmarks/tools/setup_easyfsl_env.sh          # create or complete the environment
#   bash benchmarks/tools/setup_easyfsl_env.sh --force  # re-run every pip install
#
# Idempotent: when the environment already has the pinned versions and this checkout installed
# in editable mode, it only says so. The first run downloads/installs ~5 GB (torch and its
# CUDA libraries) and takes a few minutes. PYTHON picks the interpreter (default: python3,
# which must be 3.11 or newer, like the project).
set -euo pipefail

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
EASYFSL_VERSION=1.5.0 # the version benchmarks/harnesses/throughput.py was written and tested against

BENCHMARKS="$(cd "$(dirname "$0")/.." && pwd)"
REPO="$(cd "$BENCHMARKS/.." && pwd)"
VENV="$BENCHMARKS/.venv-easyfsl"
PY="$VENV/bin/python"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

check() {
    "$PY" - "$REPO" "$TORCH_VERSION" "$TORCHVISION_VERSION" "$EASYFSL_VERSION" <<'EOF' 2>/dev/null
import os, sys
repo, want_torch, want_tv, want_easyfsl = sys.argv[1:]
from importlib.metadata import version
import metastudio
ok = (version("torch").split("+")[0] == want_torch
      and version("torchvision").split("+")[0] == want_tv
      and version("easyfsl") == want_easyfsl
      and os.path.realpath(metastudio.__file__).startswith(os.path.realpath(repo) + os.sep))
sys.exit(0 if ok else 1)
EOF
}

if [ ! -x "$PY" ]; then
    echo "creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi

if [ "$FORCE" = 0 ] && check; then
    echo "$VENV is ready (torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION, easyfsl $EASYFSL_VERSION, metastudio from $REPO)"
    exit 0
fi

# torch/torchvision first and pinned, so that easyfsl's loose "torch>=1.5" cannot pull another one.
"$PY" -m pip install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
# easyfsl 1.5.0 needs matplotlib>=3.0, pandas>=1.5, torch>=1.5, torchvision>=0.7, tqdm>=4.1.
"$PY" -m pip install "easyfsl==$EASYFSL_VERSION" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
# This checkout, editable, so that its plugins (entry points) and its current code are used.
"$PY" -m pip install -e "$REPO" "torch==$TORCH_VERSION"

if ! check; then
    echo "error: $VENV does not have the expected versions after installing" >&2
    exit 1
fi
"$PY" -c "import torch, torchvision, easyfsl, metastudio; print('ready:', '$VENV'); print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| easyfsl', easyfsl.__version__, '| metastudio', metastudio.__version__)"
