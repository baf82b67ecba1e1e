#!/usr/bin/env bash
# From a failed gate to a passing checkpoint, on the embedded model's outlier-channel copy (CPU is enough):
# a variant of the suite fails a 99% lower-bound gate on the academic average; `evalsuite fix` ranks the layer
# types by measured sensitivity, keeps the fewest it finds in float, verifies the recipe with a full run, and
# the recipe is exported as a compressed-tensors checkpoint and scored again (benchmarks/fix_readback.py).
#   bash benchmarks/fix_outlier.sh [WORK_DIR] [RESULTS_DIR]
#   FIX_SUITE=benchmarks/suites/fix-outlier-w8a8.yaml FIX_VARIANT=W8A8_INT8 FIX_SCALE=128 bash benchmarks/fix_outlier.sh
# Settings (environment): FIX_SUITE (default benchmarks/suites/fix-outlier.yaml), FIX_VARIANT (INT3-g128),
# FIX_SCALE (the outlier copy's --scale, default 32), FIX_BY (type), FIX_DOCS (32), FIX_KEEP (float),
# FIX_MEASURE (bisect), FIX_BUDGET (model calls, default 2000). WORK_DIR (default evalsuite-runs/fix-outlier/SLUG, SLUG the variant's name in lower
# case with - for _) holds the model, the runs and the checkpoint; RESULTS_DIR (default
# benchmarks/fix-outlier/SLUG) gets what is committed: fix.json, the recipe's suite.yaml, the report with the
# diagnosis, the readback scores, log.txt and timing.txt.
set -euo pipefail
# run with the evalsuite of the environment first on PATH (e.g. PATH=/path/to/venv/bin:$PATH bash ...)
suite=${FIX_SUITE:-benchmarks/suites/fix-outlier.yaml}
variant=${FIX_VARIANT:-INT3-g128}
scale=${FIX_SCALE:-32}
by=${FIX_BY:-type}
docs=${FIX_DOCS:-32}
keep=${FIX_KEEP:-float}
measure=${FIX_MEASURE:-bisect}
budget=${FIX_BUDGET:-2000}
slug=$(echo "$variant" | tr '[:upper:]_' '[:lower:]-')
work=${1:-evalsuite-runs/fix-outlier/$slug}
results=${2:-benchmarks/fix-outlier/$slug}
gate=benchmarks/suites/fix-outlier-gate.yaml
mkdir -p "$work" "$results"
log="$results/log.txt"
: >"$log"
: >"$results/timing.txt"
step() {  # step NAME COMMAND...: runs it, appends its output and wall time to the log; returns its exit status
  local name=$1 start rc=0
  shift
  start=$(date +%s)
  echo "+ $*" | tee -a "$log"
  "$@" 2>&1 | { grep -v -e 'it/s' -e 's/it' -e '^\s*$' || true; } | tee -a "$log" || rc=$?
  echo "$name: $(($(date +%s) - start)) s" | tee -a "$log" "$results/timing.txt"
  return "$rc"
}
echo "suite $suite, variant $variant, outlier scale $scale, --by $by --docs $docs --keep-as $keep --measure $measure" \
  "--budget $budget" | tee -a "$log"
model="$work/model-x$scale"
[ -d "$model" ] || step model python -m evalsuite.reference.outliers --out "$model" --scale "$scale"
step run evalsuite run "$suite" --model "$model" --out "$work/run"
step gate evalsuite gate "$work/run" --config "$gate" || true  # exit 1: the variant fails, as expected
fixed=0
step fix evalsuite fix "$work/run" --gate "$gate" --variant "$variant" --by "$by" --docs "$docs" --keep-as "$keep" \
  --measure "$measure" --budget "$budget" || fixed=$?
cp "$work/run/fix/$variant/fix.json" "$work/run/report.md" "$results/"
[ "$fixed" -eq 0 ] || exit "$fixed"  # no recipe passed: nothing to export
cp "$work/run/fix/$variant/suite.yaml" "$results/"
# a recipe with every layer in float has nothing to export: the export says so and the readback is skipped
if step export evalsuite export "$work/run/fix/$variant/suite.yaml" --variant "$variant-fixed" --out "$work/checkpoint"
then
  python benchmarks/fix_readback.py "$work" "$results" "$variant" | tee -a "$log"
fi
