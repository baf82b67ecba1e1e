"""W8A8 FP8 GEMM: E4M3 activations times E4M3 weights, with tensorwise, rowwise or 128x128 block scales.

    y = fp8_gemm(a_q, a_scale, b_q, b_scale, bias=None, out_dtype=torch.bfloat16)
    # a_q: (M, K) float8_e4m3fn, b_q: (N, K) float8_e4m3fn
    # tensorwise: a_scale (1, 1), b_scale (1, 1)
    # rowwise:    a_scale (M, 1), b_scale (N, 1)
    # block:      a_scale (M, ceil(K/128)) per token and 128 columns, b_scale (ceil(N/128), ceil(K/128))

Products of E4M3 values are exact in fp32 and scaled in the epilogue (per K-block for block scales). How they
are summed is the `accumulation` argument, and on Hopper it decides the error:

- "fast" (the default): the tensor core's own accumulator, a few bits short of fp32 on sm_90. This is what
  `torch._scaled_mm(use_fast_accum=True)`, vLLM's FP8 linear layers and Triton's default do: the numbers a
  deployed FP8 model produces. Max error about 4e-3 of the output's range at K = 4096 on an H200.
- "precise": partial sums are promoted into an fp32 register every 128 columns of K, as cuBLAS does without
  fast accumulation (about 1.6e-4 at K = 4096), at about a quarter less throughput on large GEMMs.

Other GPUs accumulate fp8 in fp32 in both modes, and block scales promote at every 128-column block anyway.
The reference `fp8_gemm_ref` accumulates in fp32: "precise" is what it measures closely.
"""

from __future__ import annotations

import torch

from . import _scaled_gemm
from .int8_gemm import check_scaled_gemm_args

BLOCK = 128
ACCUMULATIONS = ("fast", "precise")


def scale_kind(a_q: torch.Tensor, a_scale: torch.Tensor, b_q: torch.Tensor, b_scale: torch.Tensor) -> str:
    """'tensor', 'row' or 'block' from the scale shapes; anything else is an error naming the shapes."""
    (m, k), n = a_q.shape, b_q.shape[0]
    kb, nb = -(-k // BLOCK), -(-n // BLOCK)
    if a_scale.numel() == 1 and b_scale.numel() == 1:
        return "tensor"
    if tuple(a_scale.shape) == (m, 1) and tuple(b_scale.shape) == (n, 1):
        return "row"
    if tuple(a_scale.shape) == (m, kb) and tuple(b_scale.shape) == (nb, kb):
        return "block"
    raise ValueError(
        f"fp8_gemm: scales of shape {tuple(a_scale.shape)} and {tuple(b_scale.shape)} fit no scaling for "
        f"a ({m}, {k}) x b ({n}, {k}): use (1, 1)/(1, 1), ({m}, 1)/({n}, 1) or ({m}, {kb})/({nb}, {kb})"
    )


def expand_block_scales(a_scale, b_scale, m: int, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    a_full = a_scale.float().repeat_interleave(BLOCK, dim=1)[:, :k]  # (M, K)
    b_full = b_scale.float().repeat_interleave(BLOCK, dim=0).repeat_interleave(BLOCK, dim=1)[:n, :k]  # (N, K)
    return a_full, b_full


def fp8_gemm_ref(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    b_q: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    kind = scale_kind(a_q, a_scale, b_q, b_scale)
    a, b = a_q.float(), b_q.float()  # (M, K), (N, K)
    if kind == "block":
        a_full, b_full = expand_block_scales(a_scale, b_scale, a.shape[0], b.shape[0], a.shape[1])
        out = (a * a_full) @ (b * b_full).t()
    else:
        out = (a @ b.t()) * a_scale.float().reshape(-1, 1) * b_scale.float().reshape(1, -1)
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def fp8_gemm(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    b_q: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    accumulation: str = "fast",
) -> torch.Tensor:
    if accumulation not in ACCUMULATIONS:
        raise ValueError(f"fp8_gemm: accumulation {accumulation!r} is not one of {', '.join(ACCUMULATIONS)}")
    check_scaled_gemm_args("fp8_gemm", a_q, a_scale, b_q, b_scale, bias, out_dtype, torch.float8_e4m3fn)
    kind = scale_kind(a_q, a_scale, b_q, b_scale)
    if kind == "block":
        a_scale, b_scale = a_scale.contiguous(), b_scale.contiguous()
    return _scaled_gemm.launch(a_q, a_scale, b_q, b_scale, bias, out_dtype, kind, precise=accumulation == "precise")
