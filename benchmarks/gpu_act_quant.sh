#!/usr/bin/env bash
# One device call (with .whl carried) for act_quant's row programs (issue 17): install as a user would, the GPU
# tests of act_quant and the W8A8 GEMV that shares its quantizer, benchmarks/act_quant_ab.py (one program per row
# against programs looping over rows, side by side). On an H200 also, first, the table
# (benchmarks/gpu_table.sh, TABLE_S seconds) and, unless MMA=0, batch-1 decode with the W4A16 codes in the
# tensor-core GEMV's order (`bench e2e --decode-order mma128`) and that GEMV's probe (benchmarks/mma_gemv_probe.py):
# on an H100 it ran slower than the CUDA-core GEMV, which issues about twice its instructions, so an H200 may
# balance them otherwise. Everything is packed into $OUT/act-quant.tgz.
#   [TABLE_S=150] [MMA=0] bash benchmarks/gpu_act_quant.sh
set -u
start=$(date +%s)
export OUT=$(realpath -m "${OUT:-/tmp/out}"); R=$OUT/aq; mkdir -p "$R"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >"$R/pip-wheels.log" 2>&1 || tail -5 "$R/pip-wheels.log"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$R/pip.log" 2>&1 || tail -5 "$R/pip.log"
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "$gpu" | tee "$R/gpu.txt"
root=$PWD
if [[ "$gpu" == *H200* ]]; then  # the table first: H200s come rarely
  CALL_LIMIT_S=${TABLE_S:-150} OUT=$R bash benchmarks/gpu_table.sh | grep -v "^|---"
fi
timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider tests/kernels/test_act_quant.py tests/kernels/test_w8a8_gemv.py \
  tests/test_gpu_compile.py 2>&1 | tail -4 | tee "$R/tests.log"
# from /tmp: run from the checkout, the checkout's folders would shadow the installed package
(cd /tmp && timeout 200 python3 "$root/benchmarks/act_quant_ab.py" "$R" >"$R/ab.log" 2>&1; echo "act_quant_ab exit $?")
cat "$R/ab.log"
echo "at $(( $(date +%s) - start ))s"
if [[ "$gpu" == *H200* ]] && [ "${MMA:-1}" = 1 ]; then
  (cd /tmp && timeout 120 python3 -m evalsuite bench e2e --variants bf16,W4A16 --decode-order mma128 --batches 1 \
    --decoders graph --no-prefill --context 128 --steps 32 --repeats 5 --profile 8 --out "$R/e2e-mma128" \
    >"$R/e2e-mma128.log" 2>&1; echo "e2e mma128 exit $?"; grep "^|" "$R/e2e-mma128.log" | head -4)
  (cd /tmp && timeout $(( 570 - ($(date +%s) - start) )) python3 "$root/benchmarks/mma_gemv_probe.py" "$R/mma" \
    >"$R/mma-probe.log" 2>&1; echo "mma probe exit $?"; grep -A12 "^| shape" "$R/mma-probe.log")
fi
(cd "$OUT" && tar czf act-quant.tgz aq && rm -rf aq)
echo "total $(( $(date +%s) - start ))s"
