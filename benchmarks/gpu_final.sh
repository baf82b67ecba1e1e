#!/usr/bin/env bash
# One device call (with .whl carried) for a session whose device time is short: the whole test suite on the
# GPU, the decode-kernel bench, then the issue-19 scaling sweep with whatever time is left, each step capped
# so the call ends inside its limit. Results are packed into $OUT/results.tgz (the device returns few files).
#   [DECODE_BENCH=0] bash benchmarks/gpu_final.sh [CALL_LIMIT_S, default 570]
set -o pipefail
limit=${1:-570}
start=$(date +%s)
R=${OUT:-/tmp/out}; mkdir -p "$R/tests" "$R/decode" "$R/sweep"
left() { echo $(( limit - ($(date +%s) - start) - ${1:-0} )); }
OUT=$R/tests PYTEST_LIMIT_S=${PYTEST_LIMIT_S:-200} bash benchmarks/gpu_tests.sh > "$R/tests/stdout.txt" 2>&1
grep -E "passed|failed" "$R/tests/stdout.txt" | tail -2
grep -E "^(FAILED|ERROR)" "$R/tests/stdout.txt" | head -20
if [ "${DECODE_BENCH:-1}" = 1 ]; then
  OUT=$R/decode bash benchmarks/gpu_decode.sh bench > "$R/decode/stdout.txt" 2>&1
  grep -A14 "^targets" "$R/decode/stdout.txt"
fi
sweep_s=$(left 25)
echo "sweep budget ${sweep_s}s"
if [ "$sweep_s" -gt 120 ]; then
  SWEEP_WALL_S=$sweep_s OUT=$R/sweep timeout $(( sweep_s + 15 )) bash benchmarks/scaling_gpu.sh > "$R/sweep/stdout.txt" 2>&1
  tail -20 "$R/sweep/stdout.txt"
fi
cd "$R" && tar czf /tmp/results.tgz tests decode sweep && rm -rf tests decode sweep && mv /tmp/results.tgz "$R/"
echo "total $(( $(date +%s) - start ))s"
