#!/usr/bin/env bash
# `make gpu-check`: the prepared GPU check (bench/gpu_check.py) on a machine that may have no Rust toolchain and no
# .git: it needs the binary (target/gpu-check/relaxflow from `make gpu-prep`, or target/release/relaxflow), data/mnist
# and a Python with torch. Arguments go to bench/gpu_check.py (e.g. --device cpu for a dry run, --out DIR).
#
# Python: $PYTHON, else .venv/bin/python, else /opt/torch/.venv/bin/python, else python3 -- the first that imports
# torch. The binary was linked on the build machine (its rpath points at that machine's torch), so torch's libraries
# are taken from the chosen Python's torch/lib through LD_LIBRARY_PATH, ahead of whatever was set.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
    local py
    for py in "${PYTHON:-}" .venv/bin/python /opt/torch/.venv/bin/python python3; do
        [ -n "$py" ] || continue
        if [ -x "$py" ] || command -v "$py" >/dev/null 2>&1; then
            if "$py" -c 'import torch' >/dev/null 2>&1; then
                echo "$py"
                return 0
            fi
        fi
    done
    return 1
}

if ! PY=$(pick_python); then
    echo "gpu-check: no Python that imports torch (tried \$PYTHON, .venv/bin/python, /opt/torch/.venv/bin/python, python3)" >&2
    exit 2
fi
TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# A build with the feature `cuda-graphs` also links CUDA's runtime library from the wheel's nvidia package.
CUDART_DIR="$TORCH_LIB/../../nvidia/cu13/lib"
if [ -d "$CUDART_DIR" ]; then
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(cd "$CUDART_DIR" && pwd)"
fi
# The NCCL build (target/gpu-check/relaxflow-nccl) links the wheel's NCCL.
NCCL_DIR="$TORCH_LIB/../../nvidia/nccl/lib"
if [ -d "$NCCL_DIR" ]; then
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(cd "$NCCL_DIR" && pwd)"
fi
echo "gpu-check: python $PY, torch libraries from $TORCH_LIB" >&2
exec "$PY" bench/gpu_check.py --python "$PY" "$@"
