#!/usr/bin/env bash
# Decode-kernel GPU session (issue 17): install, GPU tests of the weight-only kernels, then a step chosen by
# the arguments: "tune" (the GEMV tile sweep), "bench" (quick kernel bench of the decode ops and act_quant).
# Usage on the device machine: bash benchmarks/gpu_decode.sh tests tune|bench   (writes under $OUT)
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
for step in "$@"; do
  case $step in
    tests)
      n=$(python3 -c "import xdist" 2>/dev/null && echo "-n 12" || echo "")
      timeout 60 python3 -m pytest -q -x $n -p no:cacheprovider tests/kernels/test_weight_only.py tests/kernels/test_act_quant.py -k "gemv or fp4_gemm or w4a16_gemm or paths or act_quant or matches" 2>&1 | tail -15 | tee "$OUT/tests.log" ;;
    tune)
      timeout 160 python3 -m evalsuite.kernels.bench --tune --rep 12 --out "$OUT" 2>&1 | tee "$OUT/tune.log" | grep -v "^wo" | tail -20 ;;
    bench)
      timeout 75 python3 -m evalsuite.kernels.bench --quick --rep 25 --ops w4a16,mxfp4,nvfp4,act_quant --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -60 ;;
  esac
done
