#!/usr/bin/env bash
# Issue 19's scaling sweep on one GPU (device tool, .whl carried: pydantic and the
# wheels benchmarks/gpu_tests.sh installs): bf16 and mxfp4-quartet over five
# model sizes and three token counts sized to the time left, the GEMM throughput of each precision, then the
# fit. Everything lands in $OUT as it is measured (sweep.json first), so a cut run keeps what it has.
#   bash benchmarks/scaling_gpu.sh [extra flags for benchmarks/scaling_gpu.py, e.g. --precisions bf16,mxfp4-quartet,fp8]
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
budget=$(( ${SWEEP_WALL_S:-345} - ($(date +%s) - start) ))
python3 -c "import torch, triton, transformers, scipy, matplotlib; print('torch', torch.__version__, 'triton',
triton.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())" 2>&1 | tee "$OUT/versions.txt"
python3 benchmarks/scaling_gpu.py --out "$OUT" --budget-s "$budget" "$@" 2>&1 | tee "$OUT/scaling_gpu.log"
