"""Launches the int4 tensor-core decode GEMV (`_int4_mma_gemv`) at Llama-3.1-8B's gate/up shape (M = 1) a few
times per tile, for Nsight Compute: occupancy, registers, stall reasons (issue 17).

    ncu --kernel-name regex:_int4_mma_gemv_kernel ... python3 benchmarks/ncu_mma_gemv.py

The first two launches of each tile compile and warm up; the third is the one to read."""

import torch

from evalsuite.kernels import _int4_mma_gemv as mg

N, K, GROUP = 28672, 4096, 128
TILES = [mg.pick(1), dict(num_warps=4, reps=1, prefetch=2, chains=2, per_sm=8)]  # the dispatched tile, the deepest

codes = torch.randint(0, 16, (N, K), dtype=torch.uint8, device="cuda")
words = mg.mma_layout_words(codes)
scale = torch.rand(N, K // GROUP, device="cuda")
x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
out = torch.empty(1, N, device="cuda", dtype=torch.bfloat16)
for cfg in TILES:
    for _ in range(3):
        mg.launch(x, words, scale, None, None, GROUP, out, **cfg)
    torch.cuda.synchronize()
    print(cfg, "3 launches", flush=True)
