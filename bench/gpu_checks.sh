#!/usr/bin/env bash
# The checks that need a GPU, in one short run on a machine that has one, from the repository root:
# the engine's tests (its CUDA tests among them, which skip without a GPU), then the GPU benchmarks,
# bench/pack_size.py (the packs `--pack auto` takes there) and bench/packing.py (trials per hour).
#
# It needs python3 with torch, numpy, pytest and pytest-xdist (no Optuna: these touch the engine only) and
# MNIST's four gzip files in data/MNIST/raw/ (git-ignored; the default data root), since such a machine
# may have no network. Each step has its own time limit, so the whole run ends within about 9 minutes;
# logs go to $OUT if set, else gpu-checks/.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-checks}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 ARCHSEARCH_DATA="$PWD/data"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.is_available())' \
    2>&1 | tee -a "$out/gpu.txt"

timeout 150 python3 -m pytest -q -p no:randomly -p no:cacheprovider -n 8 -rs \
    tests/test_packed.py tests/test_trainer.py tests/test_fused.py 2>&1 | tee "$out/tests.txt"
timeout 90 python3 bench/pack_size.py --device cuda 2>&1 | tee "$out/pack_size.txt"
timeout 300 python3 bench/packing.py --device cuda --budgets 50000 --rounds 1 2>&1 | tee "$out/packing.txt"
# The stamped tables the two benchmarks wrote (docs/bench/*-cuda.md), beside the logs, so they come back too.
cp docs/bench/*-cuda.md "$out/" 2>/dev/null || echo "no stamped GPU tables written" | tee -a "$out/gpu.txt"
