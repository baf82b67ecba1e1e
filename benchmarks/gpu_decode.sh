#!/usr/bin/env bash
# Decode-kernel GPU session (issue 17): install, GPU tests of the weight-only kernels, then a step chosen by
# the arguments: "tune" (the GEMV tile sweep), "bench" (quick kernel bench of the decode ops and act_quant),
# "e2e" (batch-1 graph decode at 8B shapes), "ncu" (Nsight Compute sections of the M = 1 GEMV at the shapes
# and formats of benchmarks/ncu_gemv.py: stall reasons, issue rate, bandwidth).
# Usage on the device machine, with .whl carried (e2e imports our pydantic-based schemes):
#   bash benchmarks/gpu_decode.sh [tests] [tune] [bench] [e2e] [ncu]   (writes under $OUT)
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ! python3 -c "import pydantic, lm_eval" 2>/dev/null; then  # the GPU image lacks some of our dependencies
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$OUT/pip-wheels.log" 2>&1 || tail -5 "$OUT/pip-wheels.log"
  export PYTHONPATH=/tmp/site
fi
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
      timeout 120 python3 -m evalsuite.kernels.bench --quick --rep 25 --ops w4a16,mxfp4,nvfp4,act_quant --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -60 ;;
    e2e)
      timeout 200 python3 -m evalsuite bench e2e --variants "${VARIANTS:-bf16,W4A16,W8A8_INT8,NVFP4}" --batches 1 \
        --decoders graph --no-prefill --context 128 --steps 32 --repeats 5 --profile 8 --out "$OUT/e2e" \
        >"$OUT/e2e.log" 2>&1; grep "^|" "$OUT/e2e.log" | tail -8 ;;
    ncu)
      # every launch of benchmarks/ncu_gemv.py's GEMV (the first two of each case compile and warm up), at the
      # GPU's own clocks, with the stall reasons per issued instruction
      timeout 200 /usr/local/cuda/bin/ncu --kernel-name regex:_gemv_kernel --clock-control none \
        --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats \
        --section SchedulerStats --section MemoryWorkloadAnalysis \
        --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
        python3 benchmarks/ncu_gemv.py >"$OUT/ncu.txt" 2>&1; echo "ncu exit $?"
      grep -E "^  [a-z_]+|Duration|Memory Throughput|DRAM Throughput|Issued Warp|No Eligible|Warp Cycles Per Issued|stalled_.*ratio +[^ ]+ +[0-9.]*[1-9]|Registers Per|Achieved Occ|Grid Size" "$OUT/ncu.txt" | head -200 ;;
  esac
done
