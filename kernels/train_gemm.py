"""The FP8 GEMM of low-precision training: an E4M3 or E5M2 operand times an E4M3 operand, scales per row of
each operand (one per token, output channel or gradient row) or per tensor, fp32 accumulation and output.

    y = fp8_train_gemm(a_q, a_scale, b_q, b_scale)      # a_q: (M, K) float8_e4m3fn or float8_e5m2,
                                                         # b_q: (N, K) float8_e4m3fn; y: (M, N) fp32
    # rowwise: a_scale (M, 1), b_scale (N, 1); tensorwise: a_scale (1, 1), b_scale (1, 1)

The forward GEMM multiplies two E4M3 operands; the backward GEMMs multiply an E5M2 gradient by an E4M3
operand (Hopper's tensor cores take the mixed pair directly). Each operand's scales run along the dimension
that is not summed over, so they apply in the epilogue: the training layer quantizes the transposed operands
of the backward GEMMs from their high-precision values (see evalsuite/training/linear.py). The kernel is
`_scaled_gemm`'s, in its "fast" accumulation (as `torch._scaled_mm(use_fast_accum=True)`, the setting FP8
training recipes use); `fp8_train_gemm_ref` accumulates exactly in fp32.
"""

from __future__ import annotations

import torch

from . import _scaled_gemm
from ._launch import check_device, check_tensor

A_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
_SCALE_DTYPES = (torch.float32,)


def _scale_kind(who: str, a_q, a_scale, b_q, b_scale) -> str:
    (m, k), n = a_q.shape, b_q.shape[0]
    if tuple(a_scale.shape) == (1, 1) and tuple(b_scale.shape) == (1, 1):
        return "tensor"
    if tuple(a_scale.shape) == (m, 1) and tuple(b_scale.shape) == (n, 1):
        return "row"
    raise ValueError(
        f"{who}: scales {tuple(a_scale.shape)} and {tuple(b_scale.shape)} fit neither rowwise ({m}, 1)/({n}, 1) "
        f"nor tensorwise (1, 1)/(1, 1) scaling of a ({m}, {k}) x b ({n}, {k})"
    )


def _check(who: str, a_q, a_scale, b_q, b_scale) -> str:
    check_tensor(a_q, "a_q", who, A_DTYPES, (None, None))
    m, k = a_q.shape
    check_tensor(b_q, "b_q", who, (torch.float8_e4m3fn,), (None, k), a_q.device)
    if m == 0 or k == 0 or b_q.shape[0] == 0:
        raise ValueError(f"{who}: empty operands a_q {tuple(a_q.shape)} x b_q {tuple(b_q.shape)}")
    check_tensor(a_scale, "a_scale", who, _SCALE_DTYPES, None, a_q.device)
    check_tensor(b_scale, "b_scale", who, _SCALE_DTYPES, None, a_q.device)
    return _scale_kind(who, a_q, a_scale, b_q, b_scale)


def fp8_train_gemm_ref(a_q, a_scale, b_q, b_scale) -> torch.Tensor:
    _check("fp8_train_gemm_ref", a_q, a_scale, b_q, b_scale)
    return (a_q.float() @ b_q.float().t()) * a_scale.reshape(-1, 1) * b_scale.reshape(1, -1)  # (M, N)


def fp8_train_gemm(a_q, a_scale, b_q, b_scale) -> torch.Tensor:
    who = "fp8_train_gemm"
    kind = _check(who, a_q, a_scale, b_q, b_scale)
    check_device(a_q.device, who)
    a_q = a_q if a_q.stride(1) == 1 else a_q.contiguous()
    b_q = b_q if b_q.stride(1) == 1 else b_q.contiguous()
    return _scaled_gemm.launch(a_q, a_scale.contiguous(), b_q, b_scale.contiguous(), None, torch.float32, kind)
