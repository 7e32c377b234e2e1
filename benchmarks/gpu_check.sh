#!/usr/bin/env bash
# The GPU check of issue 16: certification and training throughput of ViT-B/16 at 224x224 on
# one GPU, a smoke workflow on CUDA, and the projected GPU-hours of the paper's tables, as one
# table (benchmarks/gpu_check.py says what each row is). Under 8 minutes on one H100/H200.
#
#   benchmarks/gpu_check.sh                       # on the GPU machine, from the repository root
#   benchmarks/gpu_check.sh --dry                 # tiny sizes on the CPU: checks the script only
#   benchmarks/gpu_check.sh --json gpu_check.json --fmnist-dir /path/to/fashion-mnist
#
# PYTHON picks the interpreter (default: the project's .venv, else python3 on PATH). The
# repository's src/ comes first on PYTHONPATH, so a GPU image's own Python with torch and timm
# needs no install of the project; packages it lacks can be carried as wheels in .gpu-wheels/
# (benchmarks/README.md). GPU_CHECK_LIMIT_S (default 480) stops the check; the rows printed by
# then are kept, and so is the --json file, written after every section.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".gpu-wheels/*.whl" > /dev/null; then
    site=$(mktemp -d)
    trap 'rm -rf "$site"' EXIT
    "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$site" .gpu-wheels/*.whl
    export PYTHONPATH="$PYTHONPATH:$site"  # after src/ and the caller's, before site-packages
fi
export PYTHONUNBUFFERED=1
# One GPU: the first visible one unless the caller chose.
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
limit="${GPU_CHECK_LIMIT_S:-480}"
status=0
# --foreground: Ctrl-C still reaches the check; its SIGTERM handler ends the smoke workflow
timeout --foreground --kill-after=10 "$limit" "$PYTHON" benchmarks/gpu_check.py "$@" \
    || status=$?
if [[ $status -eq 124 ]]; then
    echo "gpu_check: stopped after $limit s (GPU_CHECK_LIMIT_S); the rows above are what it" \
         "measured" >&2
fi
exit "$status"
