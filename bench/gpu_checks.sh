#!/usr/bin/env bash
# The checks that need a GPU, in one run of at most 5 minutes of device time (the step limits below add up to
# 290 s), from the repository root:
#   1. the CUDA tests of tests/test_packed.py, test_trainer.py and test_fused.py: the trainer on the device,
#      packs with and without dropout replayed as CUDA graphs against training alone, the fused updates;
#   2. bench/packing.py at P = 50,000 (depth 2): the trainer alone and packs of 16, 64 and 256, with and without
#      dropout, each row with its GPU peak memory and its pack's host work per epoch;
#   3. a 2-minute `archsearch search --device cuda --pack auto` at P = 50,000 on a fresh study (100 s of
#      starting trials, then the last ones finish), and its trials per hour.
# What it needs beyond the GPU image (Python 3.12 and torch; no Optuna, no network) travels in gpu-bundle/:
# MNIST's raw files and the wheels, which `make gpu-bundle` puts there on this side. On the GPU machine,
# from the repository root, with gpu-bundle carried along (the device tool: command `bash bench/gpu_checks.sh`,
# carry ["gpu-bundle"], timeout_s 330):
#     bash bench/gpu_checks.sh
# The same steps on the CPU with small limits, a dry run of this script (Optuna from this environment):
#     PYTHON=.venv/bin/python bash bench/gpu_checks.sh --device cpu
# Logs go to $OUT if set, else gpu-checks/; the last lines give each step's seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda
if [ $# -gt 0 ]; then
    [ "$1" = "--device" ] && [ $# -eq 2 ] && { [ "$2" = cpu ] || [ "$2" = cuda ]; } ||
        { echo "gpu_checks: usage: bash bench/gpu_checks.sh [--device cpu|cuda]" >&2; exit 2; }
    device="$2"
fi
bundle=gpu-bundle
[ -d "$bundle/wheels" ] && [ -d "$bundle/data/MNIST/raw" ] ||
    { echo "gpu_checks: no $bundle/ here: run make gpu-bundle, and carry $bundle to the GPU machine" >&2; exit 2; }
python="${PYTHON:-python3}"
out="${OUT:-gpu-checks}"
mkdir -p "$out"
work="$(mktemp -d)"  # the search's database and saved models: not among the few files $OUT returns
export PYTHONUNBUFFERED=1 ARCHSEARCH_DATA="$PWD/$bundle/data"

if [ "$device" = cuda ]; then
    tests_limit=40 packing_limit=100 packing_args=(--budgets 50000 --packs 16,64,256 --timeout 40)
    search_args=(--timeout 100s) search_limit=130
else  # the dry run: the same steps, small (a 2-core CPU runs each row's processes slowly)
    tests_limit=300 packing_limit=600 packing_args=(--quick --packs 2,4 --timeout 120)
    search_args=(--timeout 20s --data-limit 2000) search_limit=200
fi
started=$SECONDS
times=()
step() {  # step NAME LIMIT COMMAND...: run it under its limit, its output in $out/NAME.txt
    local name="$1" limit="$2" begun=$SECONDS
    shift 2
    echo "== $name (at most $limit s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    local status=${PIPESTATUS[0]}
    times+=("$name $((SECONDS - begun)) s (exit $status)")
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$python" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
      "CUDA", torch.version.cuda, torch.cuda.is_available())'; } 2>&1 | tee "$out/gpu.txt"
if ! "$python" -c 'import optuna' 2>/dev/null; then
    step install 20 "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$work/site" "$bundle"/wheels/*.whl
    export PYTHONPATH="$work/site"
fi
step tests "$tests_limit" "$python" -m pytest -q -n 0 -p no:cacheprovider -rs -k cuda \
    tests/test_packed.py tests/test_trainer.py tests/test_fused.py
step packing "$packing_limit" "$python" bench/packing.py --device "$device" --shapes depth2 --dropouts 0,0.2 --rounds 1 \
    --host-work "${packing_args[@]}"
search_started=$SECONDS
step search "$search_limit" "$python" -m search search --study gpu-check --budget 50000 --pack auto \
    --device "$device" --storage "sqlite:///$work/search.db" --artifacts "$work/artifacts" --trials 100000 \
    "${search_args[@]}"
"$python" - "sqlite:///$work/search.db" "$((SECONDS - search_started))" <<'PY' 2>&1 | tee -a "$out/search.txt"
import sys

import optuna
from optuna.trial import TrialState

storage, wall = sys.argv[1], float(sys.argv[2])
trials = optuna.load_study(study_name="gpu-check", storage=storage).get_trials(deepcopy=False)
complete = [t for t in trials if t.state == TrialState.COMPLETE]
pruned = [t for t in trials if t.state == TrialState.PRUNED]
ended = complete + pruned
if ended:
    span = (max(t.datetime_complete for t in ended) - min(t.datetime_start for t in ended)).total_seconds()
    print(
        f"search: {len(complete)} complete and {len(pruned)} pruned trials in {span:.0f} s of trials "
        f"({wall:.0f} s with start-up): {3600 * len(complete) / span:,.0f} complete trials/hour, "
        f"{3600 * len(ended) / span:,.0f} ended trials/hour"
    )
else:
    print(f"search: no trial ended in {wall:.0f} s")
PY
rm -rf "$work"
# The stamped table bench/packing.py wrote (docs/bench/packing-cuda.md), beside the logs, so it comes back too.
cp docs/bench/*-cuda.md "$out/" 2>/dev/null || echo "no stamped GPU table written" | tee -a "$out/times.txt"
printf '%s\n' "${times[@]}" "all $((SECONDS - started)) s on $device" | tee "$out/times.txt"
