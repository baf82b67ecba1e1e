# Sourced by the device-call scripts (benchmarks/gpu_*.sh, ab_e2e.sh): install evalsuite on the GPU machine as a
# user would, offline: the carried wheelhouse (.whl, built by shared/device/wheelhouse.sh) and any extra wheels
# into /tmp/site, then `pip install -e .`; pip's output goes to LOG_DIR/pip-wheels.log and LOG_DIR/pip.log, and
# their last lines to the terminal if an install fails. Exports what the runs need (PYTHONPATH=/tmp/site, the
# offline switches). Returns 1 if an install failed: callers that cannot go on without it write `|| exit 1`.
#   source benchmarks/device_install.sh LOG_DIR [EXTRA_WHEEL ...]
device_install() {
  local log=$1 status=0
  shift
  mkdir -p "$log"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    "$@" >"$log/pip-wheels.log" 2>&1 || { tail -5 "$log/pip-wheels.log"; status=1; }
  python3 -m pip install -q --no-deps --no-build-isolation -e . >"$log/pip.log" 2>&1 || { tail -5 "$log/pip.log"; status=1; }
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  return $status
}
device_install "$@"
