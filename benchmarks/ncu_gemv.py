"""Launches the weight-only decode GEMV (M = 1) a few times at each measured shape and format, for Nsight
Compute to profile (issue 17: where the GEMV's time goes, measured). Run by `gpu_decode.sh ncu`:

    ncu --kernel-name regex:_gemv_kernel ... python3 benchmarks/ncu_gemv.py

Each (format, shape) case launches CALLS times in the order printed; the first two compile and warm up, the
third is the one to read."""

import torch

from evalsuite.kernels import _weight_only
from evalsuite.kernels.bench_weight_only import weights

SHAPES = {"70b-o": (8192, 8192), "8b-gate_up": (28672, 4096), "8b-down": (4096, 14336)}
FORMATS = ("int4", "nvfp4")
CALLS = 3

for fmt in FORMATS:
    for name, (n, k) in SHAPES.items():
        wt = weights(fmt, n, k, "cuda")
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        cfg = _weight_only.pick_config(1, n, k, wt["group"], wt["fmt"], gemv=True)  # the GEMV, as dispatched
        for _ in range(CALLS):
            _weight_only.launch(x, wt["w"], wt["scale"], None, wt["global_scale"], None, wt["group"], wt["fmt"], cfg)
        torch.cuda.synchronize()
        print(f"{fmt} {name} N={n} K={k}: {CALLS} launches", flush=True)
