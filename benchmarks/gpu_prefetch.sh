#!/usr/bin/env bash
# One device call (with .whl carried) for the graph decoder's L2 prefetch (evalsuite/weight_prefetch.py, issue 17):
# install as a user would; on an H200 first the table (benchmarks/gpu_table.sh, TABLE_S seconds); then
# batch-1 decode at Llama-3.1-8B shapes with the plain step and the step with several prefetch fractions side by
# side in one process (`bench e2e --decoders graph,graph-prefetch=O/GU,...`, each profiled); the tests on the GPU
# (TESTS, default the whole suite) leaving AQ_S seconds; then, with an act_quant patch applied,
# benchmarks/act_quant_ab.py. Everything is packed into $OUT/prefetch.tgz.
#   [CALL_LIMIT_S=580] [TABLE_S=150] [VARIANTS=bf16,W4A16,NVFP4] [FRACTIONS="1/0.5 1/0.5/last ..."] [TESTS=tests]
#   [AQ_S=75] bash benchmarks/gpu_prefetch.sh
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
if [ "$(left)" -gt 60 ]; then  # the tests on the GPU (TESTS: the whole suite), as benchmarks/gpu_tests.sh runs them
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout -s INT "$(left ${AQ_S:-75})" python3 -m pytest -q -n $(( $(nproc) - 2 )) \
    --timeout 300 -p no:cacheprovider -p no:benchmark -rfE --tb=short --junitxml "$R/junit.xml" ${TESTS:-tests} >"$R/pytest.log" 2>&1
  echo "pytest exit $? at $(( $(date +%s) - start ))s"; grep -v "^\[gw" "$R/pytest.log" | tail -25
fi
if grep -q ROW_PROGRAMS_PER_SM kernels/act_quant.py && [ "$(left)" -gt 60 ]; then
  cap=$(left 15); [ "$cap" -gt 90 ] && cap=90
  (cd /tmp && timeout "$cap" python3 "$root/benchmarks/act_quant_ab.py" "$R/aq" >"$R/aq-ab.log" 2>&1
   echo "act_quant_ab exit $?"; cat "$R/aq-ab.log")
fi
(cd "$OUT" && tar czf prefetch.tgz prefetch && rm -rf prefetch)
echo "total $(( $(date +%s) - start ))s"
