"""W8A8 INT8 GEMM: int8 activations with per-token scales times int8 weights with per-channel scales.

    y = int8_gemm(a_q, a_scale, b_q, b_scale, bias=None, out_dtype=torch.bfloat16)
    # a_q: (M, K) int8, a_scale: (M, 1) fp32, b_q: (N, K) int8, b_scale: (N, 1) fp32, bias: (N,) -> y: (M, N)

The products are accumulated exactly in int32; scales and bias are applied in fp32 in the epilogue.
"""

from __future__ import annotations

import torch

from . import _scaled_gemm
from ._launch import check_device, check_tensor, out_dtype_check


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


def check_scaled_gemm_args(who, a_q, a_scale, b_q, b_scale, bias, out_dtype, dtype):
    """Shared checks of int8_gemm and fp8_gemm; returns (M, N, K)."""
    name = str(dtype).replace("torch.", "")
    check_tensor(a_q, "a_q", who, (dtype,), (None, None))
    device = a_q.device
    check_device(device, who)
    m, k = a_q.shape
    check_tensor(b_q, "b_q", who, (dtype,), (None, k), device)
    n = b_q.shape[0]
    if m == 0 or n == 0 or k == 0:
        raise ValueError(f"{who}: empty operands a_q {tuple(a_q.shape)} x b_q {tuple(b_q.shape)}")
    if a_q.stride(1) != 1 or b_q.stride(1) != 1:
        raise ValueError(f"{who}: a_q and b_q must be contiguous along K (the {name} (M, K) / (N, K) layout)")
    check_tensor(a_scale, "a_scale", who, (torch.float32, torch.bfloat16, torch.float16), None, device)
    check_tensor(b_scale, "b_scale", who, (torch.float32, torch.bfloat16, torch.float16), None, device)
    if bias is not None:
        check_tensor(bias, "bias", who, (torch.float32, torch.bfloat16, torch.float16), (n,), device)
    out_dtype_check(out_dtype, who)
    return m, n, k


def int8_gemm(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    b_q: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    m, n, k = check_scaled_gemm_args("int8_gemm", a_q, a_scale, b_q, b_scale, bias, out_dtype, torch.int8)
    if tuple(a_scale.shape) != (m, 1) or tuple(b_scale.shape) != (n, 1):
        raise ValueError(
            f"int8_gemm: a_scale must be ({m}, 1) per token and b_scale ({n}, 1) per channel, got "
            f"{tuple(a_scale.shape)} and {tuple(b_scale.shape)} (expand a per-tensor scale to these shapes)"
        )
    return _scaled_gemm.launch(a_q, a_scale, b_q, b_scale, bias, out_dtype, "row")
