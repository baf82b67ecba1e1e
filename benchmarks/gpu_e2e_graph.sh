#!/usr/bin/env bash
# Issue 17, end-to-end decode on one GPU in about 5 minutes: the graph decoder (decode_graph.GraphDecoder: our
# step, its non-GEMM work compiled by Inductor, the whole step one CUDA graph) against the HF path (HF forward
# over a static cache, each step a CUDA graph) and against the same step run eagerly, at Llama-3.1-8B shapes
# with seeded random weights (bench_e2e.build_model), batch 1, for bf16, W4A16, NVFP4 and W8A8_INT8.
#   1. the GPU tests of the graph decoder: same greedy tokens as HF's eager forward in float32, and each
#      quantized variant's kernels replayed from the captured step (tests/test_decode_graph.py, CUDA only);
#   2. `evalsuite bench e2e`: tok/s, share of the weights' roofline and ratio against bf16, side by side.
# Usage on the device machine, from the repository root, with .whl carried (writes under $OUT; about 5 minutes;
# DECODERS=hf,graph drops the eager column):
#   bash benchmarks/gpu_e2e_graph.sh          # batch 1
#   bash benchmarks/gpu_e2e_graph.sh 1,32     # batches 1 and 32 (about a minute more)
set -u
BATCHES=${1:-1}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ! python3 -c "import pydantic" 2>/dev/null; then  # the GPU image lacks some of our dependencies: the offline wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$OUT/pip-wheels.log" 2>&1 || tail -5 "$OUT/pip-wheels.log"
  export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_decode_graph.py -k "cuda_graph or captured" 2>&1 | tail -25 | tee "$OUT/tests.log"
timeout 240 python3 -m evalsuite bench e2e --variants bf16,W4A16,NVFP4,W8A8_INT8 --batches "$BATCHES" --decoders "${DECODERS:-hf,graph,eager}" \
  --no-prefill --context 128 --steps 32 --repeats 5 --out "$OUT" 2>&1 | grep -v "it/s\]" | tee "$OUT/e2e-graph.log" | tail -40
echo "bench exit: ${PIPESTATUS[0]} (124: cut at the time limit; the JSON and Markdown hold the variants done)"
ls -la "$OUT"
