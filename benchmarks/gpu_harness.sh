#!/usr/bin/env bash
# Leaderboard-shaped harness bench on one GPU (issue 16), in one device call of about 5 minutes on an H100:
#   1. bf16 at --scale ${SCALE:-0.02}: MMLU, HellaSwag, ARC-C, GSM8K, Llama-3.1-8B shapes, ours vs lm-eval's HF backend
#   2. fp32 equality at --scale 0.005, at most 16 documents a task (log-likelihoods within 1e-4, same generations),
#      with lm-eval against itself at batch size 1 (--reference-spread) as the yardstick for the difference
#   3. MMLU (96 questions) with --ablations: our runner without prefix sharing, without context packing too
# Every step writes its JSON and Markdown into $OUT/<step>/ after each task and starts no task past its
# --budget-s; `timeout` is the hard stop behind it. Usage: bash benchmarks/gpu_harness.sh
# BF16_TASKS / FP32_TASKS (e.g. gsm8k) limit step 1 / 2 to those tasks; ABLATIONS=0 skips step 3.
# CPU smoke test (a venv's python, nothing installed):
#   PY=/path/venv/bin/python INSTALL=0 DEVICE=cpu SHAPE=tiny SCALE=0.002 FP32_SCALE=0.001 bash benchmarks/gpu_harness.sh
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=${OUT:-/tmp/out}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-llama-3.1-8b}
SCALE=${SCALE:-0.02}
FP32_SCALE=${FP32_SCALE:-0.005}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ "${INSTALL:-1}" = 1 ]; then
  if ! $PY -c "import lm_eval" 2>/dev/null; then  # the GPU image has no lm-eval: the offline wheels
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      >"$OUT/pip-wheels.log" 2>&1 || tail -5 "$OUT/pip-wheels.log"
    export PYTHONPATH=/tmp/site
  fi
  $PY -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"
fi
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv | tee "$OUT/gpu.txt"
bench() {  # step name, hard limit (s), then the bench arguments
  local name=$1 limit=$2
  shift 2
  local started=$SECONDS
  timeout -s INT "$limit" $PY -m evalsuite bench harness --shape "$SHAPE" --device "$DEVICE" \
    --out "$OUT/$name" "$@" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - started)) s"
  grep -v "it/s\]\|it/s$" "$OUT/$name.log" | grep "^|\|^Model\|skipped\|Error\|error" | tail -25
}
bench bf16 170 --dtype bfloat16 --scale "$SCALE" --budget-s 125 ${BF16_TASKS:+--tasks "$BF16_TASKS"}
bench fp32 110 --dtype float32 --scale "$FP32_SCALE" --limit 16 --budget-s 75 --reference-spread ${FP32_TASKS:+--tasks "$FP32_TASKS"}
[ "${ABLATIONS:-1}" = 1 ] && bench bf16-mmlu-ablations 60 --dtype bfloat16 --scale "$SCALE" --tasks mmlu --limit 96 --ablations
ls -R "$OUT" | head -30
