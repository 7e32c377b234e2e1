#!/usr/bin/env bash
# The GPU check of issue 16: certification and training throughput of ViT-B/16 at 224x224 on
# one GPU, a smoke workflow on CUDA, and the projected GPU-hours of the paper's tables, as one
# table (benchmarks/gpu_check.py says what each row is). Under 8 minutes on one H100/H200.
#
#   benchmarks/gpu_check.sh                       # on the GPU machine, from the repository root
#   benchmarks/gpu_check.sh --dry                 # tiny sizes on the CPU: checks the script only
#   benchmarks/gpu_check.sh --json gpu_check.json --fmnist-dir /path/to/fashion-mnist
#
# PYTHON picks the interpreter (default: the project's .venv, else python3 on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# One GPU: the first visible one unless the caller chose.
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
