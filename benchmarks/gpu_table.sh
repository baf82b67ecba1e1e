#!/usr/bin/env bash
# One device call (with .whl carried, and .ab when A/B trees are named) for issue 17's GPU table: install as a
# user would, the issue's kernel bench (`evalsuite bench kernels --quick --rep 60`), its end-to-end decode
# (`evalsuite bench e2e`, batch 1, graph decoder, 8B shapes), then, with the time left, benchmarks/ab_e2e.sh over
# the trees named in AB (e.g. AB="patched=.ab/patched head"); with MMA128=1, before that, bf16 and W4A16 with the
# int4 codes in the tensor-core GEMV's order (`--decode-order mma128`). Each step is capped so the call ends inside
# CALL_LIMIT_S; everything is packed into $OUT/table.tgz (the device returns few files).
#   [AB="..."] [MMA128=1] [CALL_LIMIT_S=580] bash benchmarks/gpu_table.sh
set -u
limit=${CALL_LIMIT_S:-580}
start=$(date +%s)
left() { echo $(( limit - ($(date +%s) - start) - ${1:-0} )); }
export OUT=$(realpath -m "${OUT:-/tmp/out}"); R=$OUT/table; mkdir -p "$R"
source benchmarks/device_install.sh "$R"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$R/gpu.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__,
'transformers', transformers.__version__)" | tee -a "$R/gpu.txt"
root=$PWD
# from /tmp: run from the checkout, the checkout's folders would shadow the installed package
cd /tmp
timeout "${KBENCH_S:-230}" python3 -m evalsuite bench kernels --quick --rep 60 --out "$R/kbench" >"$R/kbench.log" 2>&1
echo "kernel bench exit $? at $(( $(date +%s) - start ))s"; grep -A14 "^targets" "$R/kbench.log"
timeout "$(left 10)" python3 -m evalsuite bench e2e --variants "${VARIANTS:-bf16,W4A16,W8A8_INT8,MXFP4,NVFP4}" \
  --batches 1 --decoders graph --no-prefill --context 128 --steps 32 --repeats 5 --profile 8 --out "$R/e2e" \
  >"$R/e2e.log" 2>&1
echo "e2e exit $? at $(( $(date +%s) - start ))s"; grep "^|" "$R/e2e.log" | head -9
if [ "${MMA128:-0}" = 1 ] && [ "$(left)" -gt 90 ]; then  # W4A16 with its codes in the tensor-core GEMV's order
  timeout "$(left 10)" python3 -m evalsuite bench e2e --variants bf16,W4A16 --decode-order mma128 --batches 1 \
    --decoders graph --no-prefill --context 128 --steps 32 --repeats 5 --profile 8 --out "$R/e2e-mma128" \
    >"$R/e2e-mma128.log" 2>&1
  echo "e2e mma128 exit $? at $(( $(date +%s) - start ))s"; grep "^|" "$R/e2e-mma128.log" | head -4
fi
cd "$root"
if [ -n "${AB:-}" ] && [ "$(left)" -gt 200 ]; then
  OUT=$R/ab timeout "$(left 10)" bash benchmarks/ab_e2e.sh $AB
fi
(cd "$OUT" && tar czf table.tgz table && rm -rf table)
echo "total $(( $(date +%s) - start ))s"
