"""Shared parametrization for the kernel tests: the device, the GPU-only mark, GEMM tolerances."""

from __future__ import annotations

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device (these shapes are too slow for the CPU interpreter)"),
]

# GEMM kernel vs reference on the same quantized inputs, outputs of order 1: (atol, rtol) per output dtype.
# The interpreter matches the references almost bit for bit; on the GPU the fp32 accumulation order differs.
GEMM_TOL = {torch.bfloat16: (2e-2, 1.6e-2), torch.float16: (2e-3, 2e-3), torch.float32: (2e-4, 1e-4)}
# Hopper's fp8 tensor cores sum into an accumulator a few bits short of fp32. "fast" keeps every partial sum
# there and departs from the fp32 reference by up to ~1e-3 relative at these shapes; "precise" promotes the
# sums to fp32 every 128 columns of K (as cuBLAS does), so within one 128-column chunk it errs as "fast" does
# (K <= 128 is one chunk) and its error does not grow with K beyond that: both take FP8_FAST_TOL here, and
# test_fp8_accumulation_errs_as_scaled_mm_in_the_same_mode holds each mode to _scaled_mm's error in that mode.
HOPPER = ON_GPU and torch.cuda.get_device_capability() == (9, 0)
FP8_FAST_TOL = (1e-2, 1e-2)


def fp8_gemm_tol(out_dtype: torch.dtype, accumulation: str) -> tuple[float, float]:
    """(atol, rtol) of the fp8 GEMM against its fp32-accumulating reference, outputs of order 1; on Hopper
    either mode (see above), elsewhere the tensor cores accumulate fp8 products in fp32."""
    if HOPPER:
        return tuple(max(a, b) for a, b in zip(GEMM_TOL[out_dtype], FP8_FAST_TOL, strict=True))
    return GEMM_TOL[out_dtype]


def shapes(cpu: list[tuple[int, ...]], gpu: list[tuple[int, ...]]) -> list:
    """pytest params with readable ids: the CPU grid (also run on the GPU), then GPU-only larger shapes."""
    params = [pytest.param(s, id="x".join(map(str, s))) for s in cpu]
    return params + [pytest.param(s, id="gpu-" + "x".join(map(str, s)), marks=GPU) for s in gpu]
