#!/usr/bin/env bash
# The algorithms accuracy benchmark (CPU is enough): the embedded model and its outlier-channel copy.
#   bash benchmarks/algorithms.sh [OUT_DIR]
set -euo pipefail
out=${1:-evalsuite-runs/algorithms}
python -m evalsuite.reference.outliers --out "$out/tiny-outliers-model"
evalsuite run benchmarks/suites/algorithms.yaml --out "$out/tiny"
evalsuite run benchmarks/suites/algorithms.yaml --model "$out/tiny-outliers-model" --out "$out/tiny-outliers"
python benchmarks/algorithms_table.py "$out/tiny" "$out/tiny-outliers" | tee "$out/algorithms.md"
