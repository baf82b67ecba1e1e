"""The scaled low-precision GEMM kernel behind `int8_gemm` and `fp8_gemm`: C = (A @ B.T) with tensorwise,
rowwise (per token x per channel) or 128x128 block scales, optional bias.

    a: (M, K) int8 or float8_e4m3fn, b: (N, K) same dtype (the nn.Linear weight layout, K contiguous)

int8 accumulates exactly in int32. fp8 products are exact in fp32; on Hopper (sm_90) the tensor core adds them
into an accumulator a few bits short of fp32 unless the kernel promotes its partial sums into an fp32 register
every PROMOTE_K columns of K (`max_num_imprecise_acc` of `tl.dot`): PROMOTE_K None keeps Triton's default
(never on sm_90, the "fast" accumulation of `_scaled_mm(use_fast_accum=True)`), 128 promotes as cuBLAS does
by default. Other GPUs accumulate fp8 in fp32 either way. Scales and bias are applied in fp32 (per K block
for block scales, so block scaling promotes every 128 columns in both modes; in the epilogue otherwise). int8
launches compile without FP fusion, so the epilogue rounds each multiply and the bias add apart as the
reference does (fused, the last two would round once).
Programs are visited in grouped order (GROUP_M rows of tiles at a time) so that consecutive programs share
A and B tiles in L2.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import paths
from ._bits import bf16_rne
from ._launch import interpreting, num_sms

SCALE_KINDS = {"tensor": 0, "row": 1, "block": 2}
KERNEL_NAMES = {(dtype, kind): f"{dtype}_gemm[{kind}]" for dtype in ("int8", "fp8") for kind in SCALE_KINDS}
WHY_TMA = "the persistent TMA GEMM (16-bit output, few waves)"
WHY_TILED = "the tiled GEMM"
BLOCK = 128  # side of a block scale
PROMOTE_EVERY = 128  # fp8 "precise": columns of K per fp32 promotion, as cuBLAS without fast accumulation


@dataclass(frozen=True)
class GemmConfig:
    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    persistent: bool = False  # one program per SM looping over tiles, operands through TMA descriptors


@triton.jit
def _scaled_gemm_kernel(
    # pointers
    a_ptr,
    b_ptr,
    c_ptr,
    a_scale_ptr,
    b_scale_ptr,
    bias_ptr,
    # sizes
    M,
    N,
    K,
    # strides
    stride_am,
    stride_bn,
    stride_cm,
    stride_asm,
    stride_bsn,
    # meta-parameters
    SCALE_KIND: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACC_INT: tl.constexpr,
    EVEN_K: tl.constexpr,
    PROMOTE_K: tl.constexpr,
    BF16_RNE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_am = tl.where(offs_m < M, offs_m, 0)  # edge rows read row 0 (valid memory) and are never stored
    offs_bn = tl.where(offs_n < N, offs_n, 0)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_am[:, None].to(tl.int64) * stride_am + offs_k[None, :]  # (BM, BK)
    b_ptrs = b_ptr + offs_bn[None, :].to(tl.int64) * stride_bn + offs_k[:, None]  # (BK, BN): B.T

    if ACC_INT:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - kb * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if SCALE_KIND == 2:
            a_s = tl.load(a_scale_ptr + offs_am * stride_asm + kb)  # (BM,)
            b_s = tl.load(b_scale_ptr + (offs_bn // 128) * stride_bsn + kb)  # (BN,)
            acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        elif ACC_INT:
            acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(a, b, acc, max_num_imprecise_acc=PROMOTE_K)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K

    out = acc.to(tl.float32)
    if SCALE_KIND == 0:
        out = out * tl.load(a_scale_ptr) * tl.load(b_scale_ptr)
    elif SCALE_KIND == 1:
        a_s = tl.load(a_scale_ptr + offs_am * stride_asm)
        b_s = tl.load(b_scale_ptr + offs_bn * stride_bsn)
        out = out * a_s[:, None] * b_s[None, :]
    if HAS_BIAS:
        out = out + tl.load(bias_ptr + offs_bn).to(tl.float32)[None, :]
    if BF16_RNE:
        out = bf16_rne(out)
    c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def _tile_of(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (tile_id // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((tile_id % num_pid_in_group) % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _scaled_gemm_tma_kernel(
    # descriptors and pointers
    a_desc,
    b_desc,
    c_ptr,
    a_scale_ptr,
    b_scale_ptr,
    bias_ptr,
    # sizes
    M,
    N,
    K,
    # strides
    stride_cm,
    stride_asm,
    stride_bsn,
    # meta-parameters
    SCALE_KIND: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACC_INT: tl.constexpr,
    PROMOTE_K: tl.constexpr,
    BF16_RNE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    NUM_SMS: tl.constexpr,
):
    """Persistent variant for tensorwise/rowwise scales: NUM_SMS programs walk the tiles in grouped order;
    A and B tiles arrive through TMA (out-of-bounds rows and columns read as zero)."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    num_tiles = num_pid_m * num_pid_n
    tile_id_c = tl.program_id(0) - NUM_SMS  # the epilogue recomputes its tile (keeps the pipeliner simple)
    for tile_id in tl.range(tl.program_id(0), num_tiles, NUM_SMS, flatten=True):
        pid_m, pid_n = _tile_of(tile_id, num_pid_m, num_pid_n, GROUP_M)
        if ACC_INT:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kb in range(k_tiles):
            a = a_desc.load([pid_m * BLOCK_M, kb * BLOCK_K])  # (BM, BK)
            b = b_desc.load([pid_n * BLOCK_N, kb * BLOCK_K])  # (BN, BK)
            if ACC_INT:
                acc = tl.dot(a, b.T, acc, out_dtype=tl.int32)
            else:
                acc = tl.dot(a, b.T, acc, max_num_imprecise_acc=PROMOTE_K)
        tile_id_c += NUM_SMS
        pid_m, pid_n = _tile_of(tile_id_c, num_pid_m, num_pid_n, GROUP_M)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_sm = tl.where(offs_m < M, offs_m, 0)
        offs_sn = tl.where(offs_n < N, offs_n, 0)
        out = acc.to(tl.float32)
        if SCALE_KIND == 0:
            out = out * tl.load(a_scale_ptr) * tl.load(b_scale_ptr)
        else:
            a_s = tl.load(a_scale_ptr + offs_sm * stride_asm)
            b_s = tl.load(b_scale_ptr + offs_sn * stride_bsn)
            out = out * a_s[:, None] * b_s[None, :]
        if HAS_BIAS:
            out = out + tl.load(bias_ptr + offs_sn).to(tl.float32)[None, :]
        if BF16_RNE:
            out = bf16_rne(out)
        c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
        tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def _tma_ok(a: torch.Tensor, b: torch.Tensor) -> bool:
    """TMA needs 16-byte aligned bases and row strides (K a multiple of 16 for 1-byte operands)."""
    return all(
        t.stride(1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0 for t in (a, b)
    )


@functools.cache
def pick_config(m: int, n: int, k: int, kind: str, is_int8: bool, num_sms: int = 132, out_bytes: int = 2) -> GemmConfig:
    """Shape heuristic, from the H100 sweep in benchmarks/NOTES-kernels.md: 128x256x128 tiles for large M,
    persistent (TMA) while the tile count is under ~8 waves, where wave quantization costs most."""
    if interpreting():  # small tiles keep the interpreter fast; the arithmetic is the same
        return GemmConfig(16 if m <= 16 else 32, 32, 128 if kind == "block" else 32, 4, 4, 1)
    if kind == "block":  # the per-K-block rescale keeps a second accumulator live: 128x128 tiles
        return GemmConfig(16 if m <= 16 else (64 if m <= 64 else 128), 64 if m <= 64 else 128, 128, 8, 4, 3)
    if m <= 16:
        return GemmConfig(16, 64, 256, 8, 4, 4)
    if m <= 64:
        return GemmConfig(64, 64, 128, 8, 4, 4)
    if m <= 256:
        return GemmConfig(128, 128, 128, 8, 8, 4)
    tiles = triton.cdiv(m, 128) * triton.cdiv(n, 256)
    if tiles < 8 * num_sms and out_bytes == 2:  # an fp32 epilogue tile would not fit next to 4 stages
        return GemmConfig(128, 256, 128, 8, 8, 4, persistent=True)
    return GemmConfig(128, 256, 128, 8, 8, 3)


def launch(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    kind: str,
    config: GemmConfig | None = None,
    precise: bool = False,
) -> torch.Tensor:
    """Allocate C and launch; arguments are already checked. `config` overrides the heuristic (benchmarks);
    `precise` promotes fp8 partial sums to fp32 every min(128, block_k) columns (see the module note)."""
    (m, k), n = a.shape, b.shape[0]
    is_int8 = a.dtype == torch.int8
    out_bytes = torch.empty((), dtype=out_dtype).element_size()
    cfg = config or pick_config(m, n, k, kind, is_int8, num_sms(a.device), out_bytes)
    if kind == "block" and cfg.block_k != BLOCK:
        raise ValueError(f"block-scaled GEMM needs block_k == {BLOCK}, got {cfg.block_k}")
    c = torch.empty((m, n), dtype=out_dtype, device=a.device)
    a_scale = a_scale.float()
    b_scale = b_scale.float()
    rne = interpreting() and out_dtype == torch.bfloat16
    promote_k = min(PROMOTE_EVERY, cfg.block_k) if precise and not is_int8 else None
    persistent = cfg.persistent and kind != "block" and _tma_ok(a, b)
    paths.record(
        KERNEL_NAMES["int8" if is_int8 else "fp8", kind], paths.TRITON_GEMM, WHY_TMA if persistent else WHY_TILED, m
    )
    if persistent:
        from triton.tools.tensor_descriptor import TensorDescriptor

        sms = num_sms(a.device)
        tiles = triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n)
        _scaled_gemm_tma_kernel[(min(sms, tiles),)](
            TensorDescriptor.from_tensor(a, [cfg.block_m, cfg.block_k]),
            TensorDescriptor.from_tensor(b, [cfg.block_n, cfg.block_k]),
            c, a_scale, b_scale, bias if bias is not None else c,
            m, n, k, c.stride(0), a_scale.stride(0), b_scale.stride(0),
            SCALE_KIND=SCALE_KINDS[kind], HAS_BIAS=bias is not None, ACC_INT=is_int8, PROMOTE_K=promote_k,
            BF16_RNE=rne,
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m, NUM_SMS=sms,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=not is_int8,
        )  # fmt: skip
        return c
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
    _scaled_gemm_kernel[grid](
        a, b, c, a_scale, b_scale, bias if bias is not None else c,
        m, n, k,
        a.stride(0), b.stride(0), c.stride(0), a_scale.stride(0), b_scale.stride(0),
        SCALE_KIND=SCALE_KINDS[kind], HAS_BIAS=bias is not None, ACC_INT=is_int8, EVEN_K=k % cfg.block_k == 0,
        PROMOTE_K=promote_k, BF16_RNE=rne,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=not is_int8,
    )  # fmt: skip
    return c
