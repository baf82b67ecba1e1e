#!/usr/bin/env bash
# One device call: install, GPU kernel tests, tile sweep, benchmark. Logs and JSON/Markdown land in $OUT.
# usage (repo root): bash benchmarks/gpu_run.sh [tests] [tune] [bench] [quick]
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install --no-deps --no-build-isolation -q -e . 2>&1 | tail -2
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu --format=csv
for step in "$@"; do
  case $step in
    tests) timeout 90 python3 -m pytest -q -n 12 -p no:cacheprovider tests/kernels > "$OUT/tests.txt" 2>&1; grep -E "passed|failed|^FAILED|^E  .*differ" "$OUT/tests.txt" | tail -30 ;;
    gemmtests) timeout 120 python3 -m pytest -q -n 12 -p no:cacheprovider tests/kernels/test_scaled_gemm.py > "$OUT/tests.txt" 2>&1; grep -E "passed|failed|^FAILED" "$OUT/tests.txt" | tail -20 ;;
    tune) timeout 170 python3 -m evalsuite.kernels.bench --tune --rep 40 --jobs 12 --out "$OUT" 2>&1 | tee "$OUT/tune.txt" ;;
    bench) timeout 200 python3 -m evalsuite.kernels.bench --rep 40 --jobs 10 --out "$OUT" 2>&1 | tee "$OUT/bench.txt" ;;
    quick) timeout 150 python3 -m evalsuite.kernels.bench --quick --rep 60 --jobs 12 --out "$OUT" 2>&1 | tee "$OUT/bench.txt" ;;
  esac
done
