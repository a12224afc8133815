#!/usr/bin/env bash
# Wheels for a GPU machine that has no network (Python 3.12 there, torch already installed), into .whl/:
# this checkout (metastudio, rebuilt every time: it carries the current code and its plugins) and, once,
# learn2learn 0.2.0 built from its source for Python 3.12 (C files regenerated with `cythonize -3`, as in
# setup_learn2learn_env.sh) with the pure-Python packages its import needs and the machine lacks
# (gym, gym-notices, qpth; cvxpy is replaced by an empty module in benchmarks/harnesses/maml_speed.py).
#
#   bash benchmarks/tools/build_gpu_wheels.sh        # needs the network once, and a python3.12 here
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
WHL="$REPO/.whl"
mkdir -p "$WHL"
rm -f "$WHL"/metastudio-*.whl
python3 -m pip wheel -q --no-deps -w "$WHL" "$REPO"
rm -rf "$REPO/build" "$REPO"/*.egg-info
if ! ls "$WHL"/learn2learn-0.2.0-cp312-*.whl >/dev/null 2>&1; then
    PY312=${PY312:-$(command -v python3.12 || ls -d "$HOME"/.pyenv/versions/3.12*/bin/python3.12 | head -1)}
    WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
    "$PY312" -m venv "$WORK/v"
    "$WORK/v/bin/pip" install -q "cython>=3" setuptools wheel numpy
    "$WORK/v/bin/pip" download -q learn2learn==0.2.0 gym==0.26.2 qpth==0.0.18 --no-deps --no-binary :all: -d "$WORK"
    tar xzf "$WORK/learn2learn-0.2.0.tar.gz" -C "$WORK"
    "$WORK/v/bin/cythonize" -3 -f "$WORK"/learn2learn-0.2.0/learn2learn/data/*.pyx
    "$WORK/v/bin/pip" wheel -q --no-deps --no-build-isolation -w "$WHL" "$WORK/learn2learn-0.2.0" \
        "$WORK/gym-0.26.2.tar.gz" "$WORK/qpth-0.0.18.tar.gz"
    "$WORK/v/bin/pip" download -q --no-deps -d "$WHL" gym-notices==0.1.0
fi
ls -la "$WHL"
