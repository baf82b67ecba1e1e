#!/usr/bin/env bash
# One device call (with .whl carried): the whole test suite on the GPU, then the FP8 kernel benchmark in both
# accumulation modes. Everything lands in $OUT: pytest.log, junit.xml, kernels-<gpu>.json/.md, bench.log.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PYTEST_LIMIT_S=${PYTEST_LIMIT_S:-400} bash benchmarks/gpu_tests.sh "$@"
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
timeout "${BENCH_LIMIT_S:-150}" python3 -m evalsuite.kernels.bench --ops fp8,fp8_precise,fp8_block --quick --rep 40 \
  --jobs 12 --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -45
