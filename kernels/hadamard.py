"""Fast Walsh-Hadamard transform over the last dimension (a power of two), normalised so H @ H.T = I.

    y = hadamard_ref(x)       # (..., n) -> (..., n), n a power of two; y = x @ H_n / sqrt(n)

Used to rotate weights offline and activations online before quantization (QuaRot-style): rotating both
sides of a matmul by the same orthogonal H leaves the float product unchanged while spreading outliers.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._bits import bf16_rne
from ._launch import check_device, check_tensor, interpreting


def check_power_of_two(n: int) -> None:
    if n < 1 or n & (n - 1):
        raise ValueError(f"hadamard: the last dimension must be a power of two, got {n}")


def hadamard_ref(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    check_power_of_two(n)
    y = x.float().reshape(-1, n)  # (R, n)
    h = 1
    while h < n:
        y = y.reshape(-1, n // (2 * h), 2, h)  # butterflies of span h
        y = torch.stack([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], dim=2)
        h *= 2
    return (y.reshape(x.shape) / math.sqrt(n)).to(x.dtype)


@triton.jit
def _hadamard_kernel(
    # pointers
    x_ptr,
    y_ptr,
    # sizes
    R,
    # strides
    stride_xr,
    stride_yr,
    # meta-parameters
    sqrt_n,
    N: tl.constexpr,
    LOG_N: tl.constexpr,
    ROWS: tl.constexpr,
    BF16_RNE: tl.constexpr,
):
    """ROWS rows per program, each held whole in registers; butterflies of span 1, 2, 4, ... in the same order
    and fp32 arithmetic as hadamard_ref, so the sums match it bit for bit; then the 1/sqrt(n) scaling."""
    offs_r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    offs_n = tl.arange(0, N)
    rows = tl.where(offs_r < R, offs_r, 0).to(tl.int64)[:, None]
    y = tl.load(x_ptr + rows * stride_xr + offs_n[None, :]).to(tl.float32)  # (ROWS, N)
    for i in tl.static_range(LOG_N):
        y3 = tl.reshape(y, (ROWS, N >> (i + 1), 2, 1 << i))  # blocks of 2h, h = 2**i
        a, b = tl.split(tl.permute(y3, (0, 1, 3, 2)))  # pairs (j, j + h) of each block of 2h
        y = tl.reshape(tl.permute(tl.join(a + b, a - b), (0, 1, 3, 2)), (ROWS, N))
    y = tl.math.div_rn(y, sqrt_n)
    if BF16_RNE:
        y = bf16_rne(y)
    tl.store(y_ptr + offs_r[:, None].to(tl.int64) * stride_yr + offs_n[None, :], y.to(y_ptr.dtype.element_ty),
             mask=offs_r[:, None] < R)  # fmt: skip


def hadamard(x: torch.Tensor) -> torch.Tensor:
    check_tensor(x, "x", "hadamard", (torch.float32, torch.bfloat16, torch.float16))
    check_device(x.device, "hadamard")
    if x.dim() < 1 or x.numel() == 0:
        raise ValueError(f"hadamard: x must be non-empty with shape (..., n), got {tuple(x.shape)}")
    n = x.shape[-1]
    check_power_of_two(n)
    x2 = x.reshape(-1, n)  # (R, n)
    x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    rows = max(1, min(16, 2048 // n, triton.next_power_of_2(x2.shape[0])))
    num_warps = 4 if n <= 2048 else (8 if n <= 8192 else 16)
    _hadamard_kernel[(triton.cdiv(x2.shape[0], rows),)](
        x2, y, x2.shape[0], x2.stride(0), y.stride(0), math.sqrt(n),
        N=n, LOG_N=n.bit_length() - 1, ROWS=rows, BF16_RNE=interpreting() and x.dtype == torch.bfloat16,
        num_warps=num_warps,
    )  # fmt: skip
    return y.reshape(x.shape)
