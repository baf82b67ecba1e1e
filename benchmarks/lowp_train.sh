#!/usr/bin/env bash
# Continue training the embedded model with each precision recipe (same seed, data and steps), then judge the
# checkpoints as variants of the bf16 control (CPU is enough: the GEMMs are emulated, see the README).
#   bash benchmarks/lowp_train.sh [STEPS]
set -euo pipefail
steps=${1:-30}
out=evalsuite-runs/lowp-train
for recipe in bf16 fp8 fp8-smooth fp8-smooth-adam8 mxfp4-quartet; do
  evalsuite train --recipe "$recipe" --from embedded:tiny --steps "$steps" --batch 8 --seq-len 128 \
    --lr 3e-4 --warmup 3 --seed 0 --out "$out/ckpt/$recipe" --log-every 10
done
evalsuite run benchmarks/suites/lowp-train.yaml --out "$out/run"
mkdir -p benchmarks/lowp-train
for recipe in bf16 fp8 fp8-smooth fp8-smooth-adam8 mxfp4-quartet; do
  cp "$out/ckpt/$recipe/training.json" "benchmarks/lowp-train/training-$recipe.json"
done
cp "$out/run/report.md" "$out/run/results.json" benchmarks/lowp-train/
