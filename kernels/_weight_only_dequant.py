"""Weight-only codes to weights inside Triton kernels: the dequantization helpers that the fused GEMM in
`_weight_only` inlines, and the kernel that writes a whole (N, K) weight in the activation dtype for the
large-M path (dequantize once, then one cuBLAS matmul). Both dequantize exactly as the references do:
(code - zero) * scale in fp32 (E2M1 value * E8M0 / E4M3 scale for FP4), then one rounding.

Formats: FMT 0 int4 (two codes per byte, column 2j in the low nibble of byte j), 1 int8 codes, 2 MXFP4,
3 NVFP4 (see `_weight_only.FMT_*`). NVFP4's global scale `gs` is one value or one per output row (a fused
layer's); the helpers take it as (BLOCK_N, 1), broadcast where the one value was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl

from ._bits import bf16_rne, e4m3_value, exp2_int
from ._launch import interpreting

if TYPE_CHECKING:
    from ._weight_only import WeightOnlyConfig

TWO_POW_23 = tl.constexpr(8388608.0)
TWO_POW_126 = tl.constexpr(8.507059173023462e37)


@triton.jit
def _group_values(
    ptr, offs_wn, stride, k0, offs_c, K, group_size, num_groups,
    GROUPS_PER_TILE: tl.constexpr, BLOCK_N: tl.constexpr, COLS: tl.constexpr, OTHER: tl.constexpr,
):  # fmt: skip
    """Per-group values for a tile of COLS columns whose first column is k0 (`offs_c`: the columns, used when
    the groups don't line up with the tile): (BLOCK_N, 1) when the tile lies in one group, else (BLOCK_N, COLS)."""
    if GROUPS_PER_TILE == 1:
        v = tl.load(ptr + offs_wn * stride + k0 // group_size)[:, None]
    elif GROUPS_PER_TILE > 1:
        offs_g = k0 // group_size + tl.arange(0, GROUPS_PER_TILE)
        v = tl.load(ptr + offs_wn[:, None] * stride + offs_g[None, :], mask=offs_g[None, :] < num_groups, other=OTHER)
        v = tl.broadcast_to(v[:, :, None], (BLOCK_N, GROUPS_PER_TILE, COLS // GROUPS_PER_TILE))
        v = tl.reshape(v, (BLOCK_N, COLS))
    else:
        g = offs_c // group_size
        v = tl.load(ptr + offs_wn[:, None] * stride + g[None, :], mask=offs_c[None, :] < K, other=OTHER)
    return v


@triton.jit
def _dequant(
    codes, offs_wn, k0, offs_c, K, group_size, num_groups, s_ptr, z_ptr, stride_sn, stride_zn, gs,
    FMT: tl.constexpr, HAS_ZP: tl.constexpr, GROUPS_PER_TILE: tl.constexpr, BLOCK_N: tl.constexpr,
    COLS: tl.constexpr,
):  # fmt: skip
    """int32 codes (BLOCK_N, COLS) -> fp32 weights, exactly the references' dequantization."""
    if FMT == 0 or FMT == 1:
        s = _group_values(s_ptr, offs_wn, stride_sn, k0, offs_c, K, group_size, num_groups,
                          GROUPS_PER_TILE, BLOCK_N, COLS, 0.0)  # fmt: skip
        if HAS_ZP:
            z = _group_values(z_ptr, offs_wn, stride_zn, k0, offs_c, K, group_size, num_groups,
                              GROUPS_PER_TILE, BLOCK_N, COLS, 0).to(tl.float32) + TWO_POW_23  # fmt: skip
        elif FMT == 0:
            z = TWO_POW_23 + 8.0
        else:
            z = TWO_POW_23 + 128.0
        # (2**23 + code) read straight from the bits, minus (2**23 + zero): exact (code - zero) in fp32
        v = (codes | 0x4B000000).to(tl.float32, bitcast=True) - z
        return v * s
    else:
        # E2M1 bits placed as an fp32 with exponent field 0..3: that is the value times 2**-126 (code 1, 0.5,
        # is the subnormal 2**-127); multiplying by 2**126 is exact and restores it.
        v = (((codes & 7) << 22) | ((codes & 8) << 28)).to(tl.float32, bitcast=True) * TWO_POW_126
        if FMT == 2:
            e = _group_values(s_ptr, offs_wn, stride_sn, k0, offs_c, K, group_size, num_groups,
                              GROUPS_PER_TILE, BLOCK_N, COLS, 127).to(tl.int32)  # fmt: skip
            s = exp2_int(e - 127)
        else:
            e = _group_values(s_ptr, offs_wn, stride_sn, k0, offs_c, K, group_size, num_groups,
                              GROUPS_PER_TILE, BLOCK_N, COLS, 0).to(tl.int32)  # fmt: skip
            s = tl.math.div_rn(e4m3_value(e), gs)  # the reference's scale / global_scale
        return v * s


@triton.jit
def _load_codes(w_rows, k0, offs_k, K, FMT: tl.constexpr, EVEN_K: tl.constexpr, BLOCK_K: tl.constexpr):
    """(BLOCK_N, BLOCK_K) int32 codes of columns k0 .. k0 + BLOCK_K - 1 (masked columns read code 0)."""
    if FMT == 1:
        if EVEN_K:
            packed = tl.load(w_rows + offs_k[None, :])
        else:
            packed = tl.load(w_rows + offs_k[None, :], mask=offs_k[None, :] < K, other=0)
        return packed.to(tl.int32)
    offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)  # byte j holds columns 2j (low nibble) and 2j + 1
    if EVEN_K:
        packed = tl.load(w_rows + offs_b[None, :]).to(tl.int32)  # (BLOCK_N, BLOCK_K / 2)
    else:
        packed = tl.load(w_rows + offs_b[None, :], mask=offs_b[None, :] * 2 < K, other=0).to(tl.int32)
    return tl.interleave(packed & 15, packed >> 4)


@triton.jit
def dequant_tile(
    w_rows, offs_wn, k0, offs_k, K, group_size, num_groups, s_ptr, z_ptr, stride_sn, stride_zn, gs,
    FMT: tl.constexpr, HAS_ZP: tl.constexpr, GROUPS_PER_TILE: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """fp32 weights (BLOCK_N, BLOCK_K) of columns k0 .. k0 + BLOCK_K - 1, the one dequantized tile that both the
    fused GEMM and the dequantize kernel use. Where the two nibbles of a byte may lie in different groups
    (4-bit codes, groups neither holding nor inside the tile), even and odd columns dequantize separately."""
    if FMT != 1 and GROUPS_PER_TILE == 0:
        offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        packed = tl.load(w_rows + offs_b[None, :], mask=offs_b[None, :] * 2 < K, other=0).to(tl.int32)
        lo = _dequant(packed & 15, offs_wn, k0, offs_b * 2, K, group_size, num_groups, s_ptr, z_ptr,
                      stride_sn, stride_zn, gs, FMT, HAS_ZP, 0, BLOCK_N, BLOCK_K // 2)  # fmt: skip
        hi = _dequant(packed >> 4, offs_wn, k0, offs_b * 2 + 1, K, group_size, num_groups, s_ptr, z_ptr,
                      stride_sn, stride_zn, gs, FMT, HAS_ZP, 0, BLOCK_N, BLOCK_K // 2)  # fmt: skip
        return tl.interleave(lo, hi)
    codes = _load_codes(w_rows, k0, offs_k, K, FMT, EVEN_K, BLOCK_K)
    return _dequant(codes, offs_wn, k0, offs_k, K, group_size, num_groups, s_ptr, z_ptr, stride_sn,
                    stride_zn, gs, FMT, HAS_ZP, GROUPS_PER_TILE, BLOCK_N, BLOCK_K)  # fmt: skip


@triton.jit
def _dequant_kernel(
    # pointers
    w_ptr,
    s_ptr,
    z_ptr,
    gs_ptr,
    out_ptr,
    # sizes
    N,
    K,
    group_size,
    num_groups,
    # strides
    stride_wn,
    stride_sn,
    stride_zn,
    stride_on,
    stride_gs,
    # meta-parameters
    FMT: tl.constexpr,
    HAS_ZP: tl.constexpr,
    GROUPS_PER_TILE: tl.constexpr,
    EVEN_K: tl.constexpr,
    BF16_RNE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """W (N, K) in the activation dtype, exactly the references' dequantize (one rounding of the fp32 value)."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = tl.program_id(1) * BLOCK_K
    offs_k = k0 + tl.arange(0, BLOCK_K)
    offs_wn = tl.where(offs_n < N, offs_n, 0).to(tl.int64)
    w_rows = w_ptr + offs_wn[:, None] * stride_wn
    if FMT == 3:
        gs = tl.load(gs_ptr + offs_wn * stride_gs).to(tl.float32)[:, None]  # (BLOCK_N, 1)
    else:
        gs = 1.0
    w = dequant_tile(w_rows, offs_wn, k0, offs_k, K, group_size, num_groups, s_ptr, z_ptr, stride_sn, stride_zn,
                     gs, FMT, HAS_ZP, GROUPS_PER_TILE, EVEN_K, BLOCK_N, BLOCK_K)  # fmt: skip
    if BF16_RNE:
        w = bf16_rne(w)
    out_ptrs = out_ptr + offs_n[:, None].to(tl.int64) * stride_on + offs_k[None, :]
    tl.store(out_ptrs, w.to(out_ptr.dtype.element_ty), mask=(offs_n[:, None] < N) & (offs_k[None, :] < K))


def _groups_per_tile(group_size: int, block_k: int) -> int:
    """1: every tile lies in one group; >1: a tile holds this many whole groups; 0: neither (gathered)."""
    if group_size % block_k == 0:
        return 1
    if block_k % group_size == 0 and group_size & (group_size - 1) == 0 and group_size >= 2:
        return block_k // group_size
    return 0


def global_scale_stride(global_scale: torch.Tensor | None) -> int:
    """0 for one global scale (or none), 1 for one per output row: the kernels read row n's at gs_ptr + n * stride."""
    return 0 if global_scale is None or global_scale.numel() == 1 else 1


def dequantize(
    w: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    global_scale: torch.Tensor | None,
    group_size: int,
    fmt: int,
    k: int,
    dtype: torch.dtype,
    config: WeightOnlyConfig | None = None,
) -> torch.Tensor:
    """(N, K) weights in `dtype`, bit-identical to dequantize_wna16 / dequantize_fp4 followed by .to(dtype)."""
    n = w.shape[0]
    block_n, block_k = (config.block_n, config.block_k) if config else (64, 64)
    out = torch.empty((n, k), dtype=dtype, device=w.device)
    gpt = _groups_per_tile(group_size, block_k)
    _dequant_kernel[(triton.cdiv(n, block_n), triton.cdiv(k, block_k))](
        w, scale, zero_point if zero_point is not None else scale, global_scale if global_scale is not None else scale,
        out, n, k, group_size, scale.shape[1],
        w.stride(0), scale.stride(0), zero_point.stride(0) if zero_point is not None else 0, out.stride(0),
        global_scale_stride(global_scale),
        FMT=fmt, HAS_ZP=zero_point is not None, GROUPS_PER_TILE=gpt, EVEN_K=k % block_k == 0,
        BF16_RNE=interpreting() and dtype == torch.bfloat16, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
    )  # fmt: skip
    return out
