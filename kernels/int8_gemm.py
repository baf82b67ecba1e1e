"""W8A8 INT8 GEMM: int8 activations with per-token scales times int8 weights with per-channel scales.

    y = int8_gemm(a_q, a_scale, b_q, b_scale, bias=None, out_dtype=torch.bfloat16)
    # a_q: (M, K) int8, a_scale: (M, 1) fp32, b_q: (N, K) int8, b_scale: (N, 1) fp32, bias: (N,) -> y: (M, N)

The products are accumulated exactly in int32; scales and bias are applied in fp32 in the epilogue.
"""

from __future__ import annotations

import torch


def int_matmul_exact(a_q: torch.Tensor, b_q: torch.Tensor) -> torch.Tensor:
    """(M, K) int8 x (N, K) int8 -> (M, N) int32, exactly (float64 holds every partial sum of int8 products)."""
    return (a_q.double() @ b_q.double().t()).to(torch.int32)


def int8_gemm_ref(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    b_q: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    acc = int_matmul_exact(a_q, b_q)  # (M, N) int32
    out = acc.float() * a_scale.reshape(-1, 1).float() * b_scale.reshape(1, -1).float()
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)
