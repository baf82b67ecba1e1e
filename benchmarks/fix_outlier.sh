#!/usr/bin/env bash
# From a failed gate to a passing checkpoint, on the embedded model's outlier-channel copy (CPU is enough):
# the algorithms benchmark's INT3-g128 variant fails a 99% lower-bound gate on the academic average;
# `evalsuite fix` ranks the layer types by measured sensitivity, keeps the fewest it finds in float, verifies
# the recipe with a full run, and the recipe is exported as a compressed-tensors checkpoint and scored again.
#   bash benchmarks/fix_outlier.sh [WORK_DIR] [RESULTS_DIR]
# WORK_DIR (default evalsuite-runs/fix-outlier) holds the model, the runs and the checkpoint; RESULTS_DIR
# (default benchmarks/fix-outlier) gets what is committed: fix.json, the diagnosis, the readback scores, timing.
set -euo pipefail
# run with the evalsuite of the environment first on PATH (e.g. PATH=/path/to/venv/bin:$PATH bash ...)
work=${1:-evalsuite-runs/fix-outlier}
results=${2:-benchmarks/fix-outlier}
by=${FIX_BY:-type}
docs=${FIX_DOCS:-32}
mkdir -p "$work" "$results"
log="$results/log.txt"
: >"$log"
step() {  # step NAME COMMAND...: runs it, appends its output and wall time to the log
  local name=$1 start
  shift
  start=$(date +%s)
  echo "+ $*" | tee -a "$log"
  "$@" 2>&1 | grep -v -e 'it/s' -e 's/it' -e '^\s*$' | tee -a "$log"
  echo "$name: $(($(date +%s) - start)) s" | tee -a "$log" "$results/timing.txt"
}
: >"$results/timing.txt"
[ -d "$work/model" ] || step model python -m evalsuite.reference.outliers --out "$work/model"
step run evalsuite run benchmarks/suites/fix-outlier.yaml --model "$work/model" --out "$work/run"
set +e
step gate evalsuite gate "$work/run" --config benchmarks/suites/fix-outlier-gate.yaml
set -e
step fix evalsuite fix "$work/run" --gate benchmarks/suites/fix-outlier-gate.yaml --variant INT3-g128 \
  --by "$by" --docs "$docs"
cp "$work/run/fix/INT3-g128/fix.json" "$work/run/fix/INT3-g128/suite.yaml" "$results/"
cp "$work/run/report.md" "$results/report.md"
# a recipe with every layer in float has nothing to export: the export says so and the readback is skipped
if step export evalsuite export "$work/run/fix/INT3-g128/suite.yaml" --variant INT3-g128-fixed --out "$work/checkpoint"; then
  python benchmarks/fix_readback.py "$work" "$results" | tee -a "$log"
fi
