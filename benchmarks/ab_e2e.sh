#!/usr/bin/env bash
# Batch-1 graph decode at Llama-3.1-8B shapes (`evalsuite bench e2e`, as benchmarks/gpu_decode.sh e2e runs it)
# for several versions of the code on one GPU, one after another in one call: each LABEL=DIR is a source tree
# (e.g. `git archive <commit> | tar -x -C DIR`, carried to the device) installed into its own target folder;
# "head" is the checkout itself. Prints each run's table and writes each run's log and, in one archive
# ($OUT/ab-e2e.tgz: the device returns a limited number of files), its profile and JSON.
#   VARIANTS=bf16,W4A16 bash benchmarks/ab_e2e.sh base=.ab/base head [base=.ab/base ...]
set -u
OUT=$(realpath -m "${OUT:-/tmp/out}"); mkdir -p "$OUT"
source benchmarks/device_install.sh "$OUT"
i=0
for spec in "$@"; do
  i=$((i + 1))
  label=${spec%%=*}
  path=/tmp/site
  if [ "$spec" != "$label" ]; then
    dir=${spec#*=}
    target=/tmp/ab-$label
    [ -d "$target" ] || python3 -m pip install -q --no-deps --no-build-isolation --target "$target" "$(realpath "$dir")" \
      >"$OUT/pip-$label.log" 2>&1 || tail -5 "$OUT/pip-$label.log"
    path=$target:/tmp/site
  fi
  run="$OUT/$i-$label"
  # from /tmp: run from the checkout, `python3 -m` would import the checkout's evalsuite whatever PYTHONPATH says
  (cd /tmp && PYTHONPATH=$path timeout 240 python3 -m evalsuite bench e2e --variants "${VARIANTS:-bf16,W4A16}" \
    --batches 1 --decoders graph --no-prefill --context 128 --steps 32 --repeats 5 --profile 8 --out "$run" \
    >"$run.log" 2>&1)
  echo "== run $i: $label ($(cd /tmp && PYTHONPATH=$path python3 -c 'import evalsuite; print(evalsuite.__file__)'))"
  grep "^|" "$run.log" | head -8
done
(cd "$OUT" && tar czf ab-e2e.tgz ./*/bench-e2e* && rm -rf ./*/bench-e2e* && find . -mindepth 1 -type d -empty -delete)
