#!/usr/bin/env bash
# One device call for the LayerOps decision (issue 17): install as gpu_tests.sh does, the A/B of
# benchmarks/layer_ops_ab.py (bf16, then W4A16 and NVFP4 with layer ops off, forced on, and by default), then
# the GPU tests of the kernels and the graph decoder. The A/B's profiles come back as $OUT/ab.tgz.
#   bash benchmarks/gpu_layer_ops.sh [VARIANTS]
set -u
export OUT=$(realpath -m "${OUT:-/tmp/out}"); mkdir -p "$OUT"
source benchmarks/device_install.sh "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv | tee "$OUT/gpu.txt"
root=$PWD
# from /tmp: run from the checkout, the checkout's folders would shadow the installed package
(cd /tmp && timeout "${AB_LIMIT_S:-330}" python3 "$root/benchmarks/layer_ops_ab.py" "$OUT/ab" "${1:-W4A16,NVFP4}" \
  >"$OUT/ab.log" 2>&1; echo "layer_ops_ab exit $?")
grep -A8 "^bf16 " "$OUT/ab.log"
PYTEST_LIMIT_S=${PYTEST_LIMIT_S:-200} bash benchmarks/gpu_tests.sh tests/kernels tests/test_decode_graph.py | tail -12
(cd "$OUT" && tar czf ab.tgz ab && rm -rf ab)
