#!/usr/bin/env bash
# Where the time goes on one GPU (issues 16 and 17), in one device call of about 8 minutes on an H100, with
# .whl carried; everything lands under $OUT:
#   1. the GPU tests of what the profile runs: weight-only kernels, fused linears, the graph decoder and its
#      attention kernel, the profiler itself, the W8A8 decode GEMV, the scaled GEMMs, the quantized layers end
#      to end, and scoring with its SDPA choice (tests.log);
#   2. `bench harness --profile`: bf16 log-likelihood tasks at --scale ${SCALE:-0.02}, ours against lm-eval's HF
#      backend, then our requests once more under the profiler (harness/bench-harness{,-profile}.md);
#   3. `bench e2e --profile 8`: batch-1 decode of bf16, W4A16 and NVFP4 at Llama-3.1-8B shapes with the graph
#      decoder, tok/s beside each step's kernels by kind (e2e/bench-e2e{,-profile}.md);
#   (step "attn", not in the default STEPS) `bench kernels --only decode_attention`: the decode attention kernel
#      against its compiled reference over the whole cache, with a splits x keys-per-step sweep (attn/);
#   4. (step "spread", not in the default STEPS) fp32 log-likelihood equality at --scale 0.005, at most 16
#      documents a task, with lm-eval against itself at batch size 1 as the yardstick (spread/bench-harness.md).
# STEPS (default "tests,e2e,harness") picks the steps; VARIANTS and TASKS override the defaults above.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# tokenizers keep their default (parallel) in the benches, as a user has it; only pytest's workers turn it off
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-tests,e2e,harness}
mkdir -p "$OUT"
if ! python3 -c "import lm_eval" 2>/dev/null; then  # the GPU image lacks lm-eval and some of our dependencies
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$OUT/pip-wheels.log" 2>&1 || tail -5 "$OUT/pip-wheels.log"
  export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
# DEADLINE (seconds from the start, default none) caps every step's timeout so that the steps end within one
# device call; a step with less than 40 s left is skipped and says so
cap() { local left=$(( ${DEADLINE:-100000} - SECONDS - 15 )); echo $(( $1 < left ? $1 : left )); }
step() {
  case ",$STEPS," in *",$1,"*) ;; *) return 1 ;; esac
  if (( $(cap 40) < 40 )); then echo "== $1: skipped, DEADLINE=$DEADLINE s reached"; return 1; fi
}
if step tests; then
  started=$SECONDS
  TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 timeout -s INT $(cap 200) python3 -m pytest -q -n 8 -p no:cacheprovider -rfE --tb=short \
    tests/kernels/test_weight_only.py tests/kernels/test_fused_linears_triton.py tests/test_fused_linears.py \
    tests/test_decode_graph.py tests/test_kernel_profile.py tests/kernels/test_decode_attention.py \
    tests/kernels/test_w8a8_gemv.py tests/kernels/test_scaled_gemm.py tests/test_e2e.py tests/test_lm.py \
    tests/test_lm_prefix.py tests/test_sdpa_backends.py >"$OUT/tests.log" 2>&1
  echo "== tests: exit $? after $((SECONDS - started)) s"; grep -v "^\[gw" "$OUT/tests.log" | tail -15
fi
if step harness; then
  started=$SECONDS
  timeout -s INT $(cap 230) python3 -m evalsuite bench harness --shape llama-3.1-8b --device cuda --dtype bfloat16 \
    --scale "${SCALE:-0.02}" --tasks "${TASKS:-mmlu,hellaswag,arc_challenge}" --budget-s 170 --profile \
    --out "$OUT/harness" >"$OUT/harness.log" 2>&1
  echo "== harness: exit $? after $((SECONDS - started)) s"; grep "^|" "$OUT/harness/bench-harness.md" 2>/dev/null
  grep -A10 "^\*\*" "$OUT/harness/bench-harness-profile.md" 2>/dev/null
fi
if step e2e; then
  started=$SECONDS
  timeout -s INT $(cap 240) python3 -m evalsuite bench e2e --variants "${VARIANTS:-bf16,W4A16,NVFP4}" --batches 1 \
    --decoders graph --no-prefill --context 128 --steps 32 --repeats 5 --profile 8 --out "$OUT/e2e" \
    >"$OUT/e2e.log" 2>&1
  echo "== e2e: exit $? after $((SECONDS - started)) s"; grep "^|\|FAILED\|Error" "$OUT/e2e.log" | tail -12
  grep -A8 "^\*\*" "$OUT/e2e/bench-e2e-profile.md" 2>/dev/null
fi
if step attn; then
  started=$SECONDS
  timeout -s INT $(cap 120) python3 -m evalsuite bench kernels --only decode_attention --rep 40 --out "$OUT/attn" \
    >"$OUT/attn.log" 2>&1
  echo "== attn: exit $? after $((SECONDS - started)) s"; grep "^B=\|Error" "$OUT/attn.log"
fi
if step spread; then
  started=$SECONDS
  timeout -s INT $(cap 150) python3 -m evalsuite bench harness --shape llama-3.1-8b --device cuda --dtype float32 \
    --scale 0.005 --limit 16 --tasks "${TASKS:-mmlu,hellaswag,arc_challenge}" --budget-s 110 --reference-spread \
    --out "$OUT/spread" >"$OUT/spread.log" 2>&1
  echo "== spread: exit $? after $((SECONDS - started)) s"; grep "^|" "$OUT/spread/bench-harness.md" 2>/dev/null
  grep -o '"lm_eval_batch1_loglikelihood_diff": [^,]*' "$OUT/spread/bench-harness.json" 2>/dev/null
fi
if step scoring; then  # the scoring path after a change to it: its GPU tests, bf16 speed, a profiled run, fp32 equality
  started=$SECONDS
  TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 timeout -s INT $(cap 120) python3 -m pytest -q -n 8 -p no:cacheprovider -rfE --tb=short \
    tests/test_lm_prefix.py tests/test_lm.py tests/test_kernel_profile.py tests/test_bench_harness.py \
    >"$OUT/tests.log" 2>&1
  echo "== tests: exit $? after $((SECONDS - started)) s"; grep -v "^\[gw" "$OUT/tests.log" | tail -5
  for run in "bf16 170 --dtype bfloat16 --scale ${SCALE:-0.02} --budget-s 120" \
             "bf16-profiled 100 --dtype bfloat16 --scale ${SCALE:-0.02} --tasks mmlu,arc_challenge --profile" \
             "fp32 100 --dtype float32 --scale 0.005 --limit 16 --budget-s 80"; do
    set -- $run; name=$1 limit=$2; shift 2; started=$SECONDS
    timeout -s INT "$(cap $limit)" python3 -m evalsuite bench harness --shape llama-3.1-8b --device cuda \
      --tasks "${TASKS:-mmlu,hellaswag,arc_challenge}" "$@" --out "$OUT/$name" >"$OUT/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - started)) s"; grep "^|" "$OUT/$name/bench-harness.md" 2>/dev/null
  done
  grep -B2 -A40 "^\*\*" "$OUT/bf16-profiled/bench-harness-profile.md" 2>/dev/null | head -120
fi
