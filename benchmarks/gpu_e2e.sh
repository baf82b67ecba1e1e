#!/usr/bin/env bash
# On the GPU machine (device tool), with .whl carried: install, then the GPU end-to-end check, the end-to-end
# speed benchmark and the harness benchmark against lm-eval's HF backend. Logs and JSON go to $OUT.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi -L
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" 2>&1 | tee "/tmp/$name.log" | grep -v "it/s\]" | tail -40; }
case " $* " in *" check "*) step check 150 python3 -m evalsuite run benchmarks/suites/gpu-check.yaml --out /tmp/check --noise-floor;; esac
case " $* " in *" e2e "*) step e2e 200 python3 -m evalsuite bench e2e --out "$OUT";; esac
case " $* " in *" harness "*)
  step harness-fp32 150 python3 -m evalsuite bench harness --shape llama-3.1-8b --device cuda --dtype float32 --out "$OUT/harness-fp32"
  step harness-bf16 120 python3 -m evalsuite bench harness --shape llama-3.1-8b --device cuda --dtype bfloat16 --out "$OUT/harness-bf16";;
esac
cp /tmp/check/results.json "$OUT"/check-results.json 2>/dev/null; cp /tmp/check.log "$OUT"/ 2>/dev/null
ls -la "$OUT"
