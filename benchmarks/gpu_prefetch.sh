#!/usr/bin/env bash
# One device call (with .whl carried) for the graph decoder's L2 prefetch (evalsuite/weight_prefetch.py, issue 17):
# install as a user would; on an H200 first the table (benchmarks/gpu_table.sh, TABLE_S seconds); then
# batch-1 decode at Llama-3.1-8B shapes with the plain step and the step with several prefetch fractions side by
# side in one process (`bench e2e --decoders graph,graph-prefetch=O/GU,...`, each profiled); with an act_quant
# patch applied, benchmarks/act_quant_ab.py; then the whole test suite on the GPU with the time left. Everything
# is packed into $OUT/prefetch.tgz.
#   [TABLE_S=150] [VARIANTS=bf16,W4A16,NVFP4] [FRACTIONS="1/0.5 1/0.5/last ..."] bash benchmarks/gpu_prefetch.sh
set -u
start=$(date +%s)
limit=${CALL_LIMIT_S:-580}
left() { echo $(( limit - ($(date +%s) - start) - ${1:-0} )); }
export OUT=$(realpath -m "${OUT:-/tmp/out}"); R=$OUT/prefetch; mkdir -p "$R"
source benchmarks/device_install.sh "$R"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "$gpu" | tee "$R/gpu.txt"
root=$PWD
if [[ "$gpu" == *H200* ]]; then  # the table first: H200s come rarely
  CALL_LIMIT_S=${TABLE_S:-150} OUT=$R bash benchmarks/gpu_table.sh | grep -v "^|---"
fi
decoders=graph
for f in ${FRACTIONS:-1/0.25 1/0.5 1/0.5/last 0/0.5/last 0/0.625/last 1/0}; do decoders+=",graph-prefetch=$f"; done
# from /tmp: run from the checkout, the checkout's folders would shadow the installed package
(cd /tmp && timeout "$(left 130)" python3 -m evalsuite bench e2e --variants "${VARIANTS:-bf16,W4A16,NVFP4}" --batches 1 \
  --decoders "$decoders" --no-prefill --context 128 --steps 32 --repeats 5 --profile 8 --out "$R/e2e" >"$R/e2e.log" 2>&1
  echo "e2e exit $? at $(( $(date +%s) - start ))s"; grep "^|" "$R/e2e.log" | head -5)
if grep -q ROW_PROGRAMS_PER_SM kernels/act_quant.py && [ "$(left)" -gt 240 ]; then
  cap=$(left 200); [ "$cap" -gt 90 ] && cap=90  # leave the suite its time
  (cd /tmp && timeout "$cap" python3 "$root/benchmarks/act_quant_ab.py" "$R/aq" >"$R/aq-ab.log" 2>&1
   echo "act_quant_ab exit $?"; cat "$R/aq-ab.log")
fi
if [ "$(left)" -gt 60 ]; then  # the whole suite on the GPU with the time left (as benchmarks/gpu_tests.sh runs it)
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout -s INT "$(left 15)" python3 -m pytest -q -n $(( $(nproc) - 2 )) \
    --timeout 300 -p no:cacheprovider -p no:benchmark -rfE --tb=short --junitxml "$R/junit.xml" tests >"$R/pytest.log" 2>&1
  echo "pytest exit $? at $(( $(date +%s) - start ))s"; grep -v "^\[gw" "$R/pytest.log" | tail -25
fi
(cd "$OUT" && tar czf prefetch.tgz prefetch && rm -rf prefetch)
echo "total $(( $(date +%s) - start ))s"
