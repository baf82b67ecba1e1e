"""The weight-only GEMM kernel behind `w4a16_gemm` (int4/int8 codes, group scales, optional zero points) and
`fp4_gemm` (MXFP4 / NVFP4): y = x @ dequant(W).T with x in bf16/fp16/fp32.

Layout (canonical, see w4a16_gemm.py and fp4_gemm.py): W is (N, ceil(K/2)) uint8 with column 2j in the low
nibble of byte j (4-bit formats) or (N, K) uint8 (8-bit codes); scales (N, G) per group of `group_size` columns.

The kernel computes the transposed product, acc (BLOCK_N, BLOCK_M) = W_tile (BLOCK_N, BLOCK_K) @ x_tile.T, so
the dequantized weights are the dot's first operand and stay in registers (Hopper's wgmma reads A from
registers), and the token dimension M is the narrow one: M=1 decode pads to a 16-wide tile, not a 64-high one.
Weights dequantize exactly as the references do it -- (code - zero) * scale in fp32, then one rounding to the
activation dtype -- so kernel and reference differ only in the order of the fp32 accumulation.

Decode (small M) splits K over SPLIT_K programs that write fp32 partial sums; a second small kernel adds them
up (deterministically, in split order), adds the bias and casts. Large M (M >= DEQUANT_GEMM_MIN_M) dequantizes W
once (`_weight_only_dequant.dequantize`) and calls cuBLAS. Every call records the path it took (`paths.record`):
the GEMV, this GEMM, or dequantize-then-cuBLAS, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import paths
from ._bits import bf16_rne
from ._launch import interpreting
from ._weight_only_dequant import _groups_per_tile, _load_codes, dequant_tile, dequantize, global_scale_stride
from ._weight_only_gemv import GEMV_MAX_M, codes_per_word, gemv_applies, launch_gemv

FMT_INT4, FMT_INT8, FMT_MXFP4, FMT_NVFP4 = 0, 1, 2, 3
KERNEL_NAMES = ("w4a16_gemm[int4]", "w4a16_gemm[int8]", "fp4_gemm[mxfp4]", "fp4_gemm[nvfp4]")  # by FMT
# From this M on, dequantizing W once and calling cuBLAS beats the fused kernel. Measured on an H100 (bf16,
# 8192^2, CUDA-graph replays; benchmarks/NOTES-kernels.md run 2): fused 133 vs 75 us at M=128, a tie near
# M=256, dequant+cuBLAS 165 vs 209 us at M=512. Re-measure with `evalsuite bench kernels --only weight_only_large`
# (the rows at M = 256, 1024, 4096 time both paths on the same weights). The interpreter follows the same rule.
DEQUANT_GEMM_MIN_M = 256
WHY_GEMV = f"M <= {GEMV_MAX_M}: the CUDA-core GEMV"
WHY_GEMM = f"{GEMV_MAX_M} < M < DEQUANT_GEMM_MIN_M ({DEQUANT_GEMM_MIN_M}): the fused GEMM"
WHY_GEMM_NOT_GEMV = (
    f"M <= {GEMV_MAX_M}, but K or the group size is not a whole number of 32-bit words (or W is not 4-byte "
    "aligned), which the GEMV needs: the fused GEMM"
)
WHY_DEQUANT = (
    f"M >= DEQUANT_GEMM_MIN_M ({DEQUANT_GEMM_MIN_M}): W dequantized to the activation dtype, then one dense matmul "
    "(cuBLAS on a GPU; measured faster than the fused GEMM there)"
)
WHY_GIVEN = "a config given by the caller (benchmark or test)"


@dataclass(frozen=True)
class WeightOnlyConfig:
    block_n: int
    block_m: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    swap_ab: bool = True
    epilogue_scale: bool = True  # when the codes allow it (integer formats, tiles inside one group)
    dequant_gemm: bool = False  # large M: dequantize W once into a workspace, then one cuBLAS matmul
    gemv: bool = False  # M <= GEMV_MAX_M: the CUDA-core GEMV of _weight_only_gemv (block_k counts columns)
    # GEMV, when K is whole tiles: load W one tile ahead of the arithmetic; without it, num_stages > 1 stages
    # every load of a step through shared memory (asynchronous copies)
    prefetch: bool = True


@triton.jit
def _weight_only_kernel(
    # pointers
    x_ptr,
    w_ptr,
    s_ptr,
    z_ptr,
    gs_ptr,
    bias_ptr,
    out_ptr,
    # sizes
    M,
    N,
    K,
    group_size,
    num_groups,
    k_per_split,
    # strides
    stride_xm,
    stride_wn,
    stride_sn,
    stride_zn,
    stride_om,
    stride_os,
    stride_gs,
    # meta-parameters
    FMT: tl.constexpr,
    HAS_ZP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    GROUPS_PER_TILE: tl.constexpr,
    EVEN_K: tl.constexpr,
    SWAP_AB: tl.constexpr,
    EPI_MAGIC: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,
    BF16_RNE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """SWAP_AB: acc (BLOCK_N, BLOCK_M) = W_tile @ x_tile.T with W from registers (decode); else acc
    (BLOCK_M, BLOCK_N) = x_tile @ W_tile.T (prefill). EPI_MAGIC > 0 (integer codes, tiles inside one group):
    the dot runs on the exact values EPI_MAGIC + code, read straight from the bits, and the epilogue of each
    tile applies (part - (EPI_MAGIC + zero) * sum(x)) * scale, so no per-weight arithmetic is left. NVFP4's
    global scale is one value (stride_gs 0) or one per output row (stride_gs 1, a fused layer's)."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_wn = tl.where(offs_n < N, offs_n, 0).to(tl.int64)  # edge rows read row 0 and are never stored
    offs_xm = tl.where(offs_m < M, offs_m, 0).to(tl.int64)  # edge tokens read token 0, never stored
    w_rows = w_ptr + offs_wn[:, None] * stride_wn
    if FMT == 3:
        gs = tl.load(gs_ptr + offs_wn * stride_gs).to(tl.float32)[:, None]  # (BLOCK_N, 1)
    else:
        gs = 1.0

    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        if SWAP_AB:
            x_ptrs = x_ptr + offs_xm[None, :] * stride_xm + offs_k[:, None]  # (BLOCK_K, BLOCK_M)
            x_mask = offs_k[:, None] < K
        else:
            x_ptrs = x_ptr + offs_xm[:, None] * stride_xm + offs_k[None, :]  # (BLOCK_M, BLOCK_K)
            x_mask = offs_k[None, :] < K
        if EVEN_K:
            xv = tl.load(x_ptrs)
        else:
            xv = tl.load(x_ptrs, mask=x_mask, other=0.0)
        if DOT_IN_FP32:  # the interpreter multiplies bf16 operands as raw integers; fp32 products are exact
            xd = xv.to(tl.float32)
        else:
            xd = xv

        if EPI_MAGIC > 0:
            codes = _load_codes(w_rows, k0, offs_k, K, FMT, EVEN_K, BLOCK_K)
            if EPI_MAGIC == 128:
                wv = (codes.to(tl.int16) | 0x4300).to(tl.bfloat16, bitcast=True)  # 128 + code
            else:
                wv = (codes.to(tl.int16) | 0x6400).to(tl.float16, bitcast=True)  # 1024 + code
            if DOT_IN_FP32:
                wv = wv.to(tl.float32)
            s = tl.load(s_ptr + offs_wn * stride_sn + k0 // group_size).to(tl.float32)  # (BLOCK_N,)
            if HAS_ZP:
                z = tl.load(z_ptr + offs_wn * stride_zn + k0 // group_size).to(tl.float32) + EPI_MAGIC
            elif FMT == 0:
                z = tl.full((BLOCK_N,), EPI_MAGIC + 8.0, tl.float32)
            else:
                z = tl.full((BLOCK_N,), EPI_MAGIC + 128.0, tl.float32)
            if SWAP_AB:
                part = tl.dot(wv, xd, input_precision="ieee" if DOT_IN_FP32 else DOT_PRECISION)
                sx = tl.sum(xv.to(tl.float32), axis=0)  # (BLOCK_M,)
                acc += (part - z[:, None] * sx[None, :]) * s[:, None]
            else:
                part = tl.dot(xd, tl.trans(wv), input_precision="ieee" if DOT_IN_FP32 else DOT_PRECISION)
                sx = tl.sum(xv.to(tl.float32), axis=1)  # (BLOCK_M,)
                acc += (part - sx[:, None] * z[None, :]) * s[None, :]
        else:
            w = dequant_tile(w_rows, offs_wn, k0, offs_k, K, group_size, num_groups, s_ptr, z_ptr, stride_sn,
                             stride_zn, gs, FMT, HAS_ZP, GROUPS_PER_TILE, EVEN_K, BLOCK_N, BLOCK_K)  # fmt: skip
            if BF16_RNE:
                w = bf16_rne(w)
            w = w.to(xv.dtype)  # (BLOCK_N, BLOCK_K): the reference's rounding of the dequantized weight
            if DOT_IN_FP32:
                w = w.to(tl.float32)
            if SWAP_AB:
                acc = tl.dot(w, xd, acc, input_precision="ieee" if DOT_IN_FP32 else DOT_PRECISION)
            else:
                acc = tl.dot(xd, tl.trans(w), acc, input_precision="ieee" if DOT_IN_FP32 else DOT_PRECISION)

    if SWAP_AB:
        out = tl.trans(acc)  # (BLOCK_M, BLOCK_N)
    else:
        out = acc
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if SPLIT_K == 1:
        if HAS_BIAS:
            out += tl.load(bias_ptr + offs_wn).to(tl.float32)[None, :]
        if BF16_RNE:
            out = bf16_rne(out)
        out_ptrs = out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :]
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        out_ptrs = out_ptr + pid_k * stride_os + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :]
        tl.store(out_ptrs, out, mask=mask)


@triton.jit
def _split_k_reduce_kernel(
    # pointers
    ws_ptr,
    bias_ptr,
    out_ptr,
    # sizes
    M,
    N,
    # strides
    stride_os,
    # meta-parameters
    SPLIT_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BF16_RNE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out = sum of the SPLIT_K fp32 partials, in split order, + bias, cast."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M * N
    acc = tl.load(ws_ptr + offs, mask=mask, other=0.0)
    for s in range(1, SPLIT_K):
        acc += tl.load(ws_ptr + s * stride_os + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs % N, mask=mask, other=0.0).to(tl.float32)
    if BF16_RNE:
        acc = bf16_rne(acc)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


MIN_SPLIT_TILES = 4  # integer GEMV: K steps a split keeps at least


def _decode_block_k(group_size: int) -> int:
    """A power of two: 128, or the group when it is a smaller power of two (tiles then lie inside groups)."""
    if group_size % 128 == 0 or group_size < 16 or group_size & (group_size - 1):
        return 128
    return group_size


def _gemv_config(m: int, n: int, k: int, fmt: int, sms: int) -> WeightOnlyConfig:
    """GEMV tiles from the H100 sweeps (M = 1). Single calls (benchmarks/tune-h100-run5-gemv-prefetch.json and
    tune-h100-run6-gemv-8b.json): 64 rows x 256 columns per step with 4 warps was fastest or within noise at
    N = K = 8192 and at Llama-3.1-8B's shapes, for int4 and FP4 alike (the former 128-row tile: 0-10% slower).
    Integer weights split K for about four programs per SM, FP4 for about three (int4 at 8192^2: 27.8 us at
    four, 30.3 at three; MXFP4: 35.5 at four, 30.0 at three). Tall integer weights (N >= 4K, gate/up) take 32
    rows with one warp (int4 at 28672 x 4096: 39.6 us against 41.7).
    Back to back on distinct weights, as a decode step runs them (benchmarks/gemv-chain-sweep-h100/, 2026-12-07):
    - integer splits keep at least MIN_SPLIT_TILES steps each: 8B o (K = 4096, 16 steps) split 4 took 8.6 us
      against 9.5 split 8, where the three-deep staging had two steps to overlap;
    - wide integer weights (K >= 3N, down) take 32 rows with one warp at about eight programs per SM: 8B down
      18.7 us against 19.7 with 64 rows and 4 warps;
    - tall FP4 weights (gate/up) take 16 rows with one warp: NVFP4 8B gate/up, SiLU-gated, 38.0 us against 40.6
      with 64 rows and 4 warps (MXFP4 follows NVFP4: the same loop but for the scale's decode).
    Loads: integer weights, and FP4 ones with N >= 4K, stage every load of a step three steps deep through
    shared memory (benchmarks/gemv-ab-h100/gemv-ab-run4-staged.json, side by side on an H100, M = 1: int4 5-16%
    faster at 8B q/k/v, gate/up, down and 70B o, 8B o 3% slower; NVFP4 gate/up 53.9 -> 45.0 us); smaller
    FP4 weights load W one tile ahead instead (staged, 4-8% slower at 8B q/k/v, o and down)."""
    if interpreting():  # small tiles, two splits: the CPU tests cover the edges and the reduction
        return WeightOnlyConfig(8, 1, 64, 2 if k > 64 else 1, 4, 1, gemv=True)
    fp4 = fmt in (FMT_MXFP4, FMT_NVFP4)
    tall, wide = n >= 4 * k, k >= 3 * n
    block_k, per_sm = 256, 3 if fp4 else 4
    if tall:
        block_n, warps = (16, 1) if fp4 else (32, 1)
    elif wide and not fp4:
        block_n, warps, per_sm = 32, 1, 8
    else:
        block_n, warps = 64, 4
    split_k = gemv_split_k(n, k, block_n, block_k, per_sm, sms)
    if not fp4:
        split_k = max(1, min(split_k, triton.cdiv(k, block_k) // MIN_SPLIT_TILES))
    staged = tall or not fp4
    return WeightOnlyConfig(block_n, 1, block_k, split_k, warps, 3 if staged else 2, gemv=True, prefetch=not staged)


def gemv_split_k(n: int, k: int, block_n: int, block_k: int, per_sm: int, sms: int = 132) -> int:
    """K splits for about `per_sm` GEMV programs per SM (at most one K tile per split)."""
    return max(1, min(triton.cdiv(k, block_k), per_sm * sms // triton.cdiv(n, block_n)))


DEQUANT_CONFIG = WeightOnlyConfig(64, 64, 64, dequant_gemm=True)  # the dequantize kernel's tiles


def pick_config(m: int, n: int, k: int, group_size: int, fmt: int, gemv: bool = False) -> WeightOnlyConfig:
    """Shape heuristic (tuned on H100, see benchmarks/NOTES-kernels.md); `gemv`: the GEMV applies."""
    if gemv:
        return _gemv_config(m, n, k, fmt, 132)
    if m >= DEQUANT_GEMM_MIN_M:
        return DEQUANT_CONFIG
    return fused_config(m, n, k, group_size, fmt)


def fused_config(m: int, n: int, k: int, group_size: int, fmt: int) -> WeightOnlyConfig:
    """Tiles of the fused GEMM at any M (the benchmark times it past DEQUANT_GEMM_MIN_M too)."""
    if interpreting():
        return WeightOnlyConfig(32, 16, 32, 2 if k > 64 else 1, 4, 1, swap_ab=m <= 16)
    sms = 132
    if m <= 16:
        if fmt == FMT_INT4 and n >= 4 * k:  # tall weights (gate_up): mma.sync with 256-wide K tiles was faster
            split_k = max(1, min(triton.cdiv(k, 256), 4 * sms // triton.cdiv(n, 64)))
            return WeightOnlyConfig(64, 16, 256, split_k, 4, 3, swap_ab=False, epilogue_scale=False)
        block_n, block_k = 64, _decode_block_k(group_size) if fmt == FMT_INT4 else 128
        split_k = max(1, min(triton.cdiv(k, block_k), 4 * sms // triton.cdiv(n, block_n)))
        return WeightOnlyConfig(block_n, 16, block_k, split_k, 4, 4, swap_ab=True)
    block_m = min(128, triton.next_power_of_2(m))
    tiles = triton.cdiv(n, 128) * triton.cdiv(m, block_m)
    split_k = max(1, min(triton.cdiv(k, 128), 2 * sms // tiles))
    return WeightOnlyConfig(128, block_m, 64, split_k, 8 if block_m >= 64 else 4, 3, swap_ab=True,
                            epilogue_scale=False)  # fmt: skip


def _epilogue_magic(fmt: int, x_dtype: torch.dtype, groups_per_tile: int, epilogue_scale: bool) -> int:
    """The offset whose bits turn codes into exact floats (128 + code in bf16, 1024 + code in fp16), or 0
    where the epilogue-scale path does not apply."""
    if not epilogue_scale or groups_per_tile != 1 or fmt not in (FMT_INT4, FMT_INT8):
        return 0
    if x_dtype == torch.float16:
        return 1024
    if x_dtype == torch.bfloat16 and fmt == FMT_INT4:  # bf16 holds 128 + code exactly only below 256
        return 128
    return 0


def launch(
    x: torch.Tensor,
    w: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    global_scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    group_size: int,
    fmt: int,
    config: WeightOnlyConfig | None = None,
    gated: bool = False,
    norm: tuple[torch.Tensor, float] | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Allocate and launch; arguments are already checked. x: (M, K) with K contiguous. `gated` (W = [gate; up],
    N even): return silu_gate of the output, (M, N / 2), computed in the GEMV's epilogue where the GEMV runs
    and by `silu_gate` after the other paths. `norm` (weight, eps): x is a decoder's residual stream h and the
    product is taken with `rms_norm_ref(h, weight, eps)`, normalized in the GEMV's prologue where it runs.
    `residual` (M, N): return residual + the output, added in the GEMV's epilogue where it runs. The other
    paths compute both with the references, around the product."""
    (m, k), n = x.shape, w.shape[0]
    if config is None:
        gemv = gemv_applies(m, k, group_size, fmt, w)
        cfg = pick_config(m, n, k, group_size, fmt, gemv)
        why = (
            WHY_GEMV if gemv else WHY_DEQUANT if cfg.dequant_gemm else WHY_GEMM if m > GEMV_MAX_M else WHY_GEMM_NOT_GEMV
        )
    else:
        cfg, why = config, WHY_GIVEN
    path = paths.TRITON_GEMV if cfg.gemv else paths.DEQUANT_CUBLAS if cfg.dequant_gemm else paths.TRITON_GEMM
    paths.record(KERNEL_NAMES[fmt], path, why, m)
    if cfg.gemv:
        return _launch_gemv(x, w, scale, zero_point, global_scale, bias, group_size, fmt, cfg, gated, norm, residual)
    if norm is not None:
        x = rms_norm_ref(x, *norm)
    y = _launch_gemm(x, w, scale, zero_point, global_scale, bias, group_size, fmt, cfg)
    return epilogue_ref(y, gated, residual)


def rms_norm_ref(h: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's Llama RMSNorm (also Mistral's and Qwen's): in fp32, rounded to h's dtype, then times the weight."""
    h32 = h.float()
    h32 = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h32.to(h.dtype)


def epilogue_ref(y: torch.Tensor, gated: bool, residual: torch.Tensor | None) -> torch.Tensor:
    """What the GEMV's epilogue does after the product, in torch: `silu_gate` where gated, then the residual add."""
    y = silu_gate(y) if gated else y
    return y if residual is None else residual + y


def silu_gate(y: torch.Tensor) -> torch.Tensor:
    """(M, 2I) output of a fused [gate; up] layer -> (M, I) silu(gate) * up, in fp32 from the output's values,
    rounded once to its dtype: what the GEMV's gated epilogue computes (its reference), and what the graph
    decoder's compiled SiLU-gate computes from the two outputs."""
    gate, up = y.float().chunk(2, dim=-1)
    return (torch.nn.functional.silu(gate) * up).to(y.dtype)


def _launch_gemm(x, w, scale, zero_point, global_scale, bias, group_size, fmt, cfg) -> torch.Tensor:
    (m, k), n = x.shape, w.shape[0]
    if cfg.dequant_gemm:
        w_full = dequantize(w, scale, zero_point, global_scale, group_size, fmt, k, x.dtype, cfg)  # (N, K)
        y = x @ w_full.t()  # (M, N): the reference's own matmul
        return y if bias is None else y + bias.to(y.dtype)
    k_tiles = triton.cdiv(k, cfg.block_k)
    split_k = max(1, min(cfg.split_k, k_tiles))
    k_per_split = triton.cdiv(k_tiles, split_k) * cfg.block_k
    split_k = triton.cdiv(k, k_per_split)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    target = out if split_k == 1 else torch.empty((split_k, m, n), dtype=torch.float32, device=x.device)
    dummy = scale  # stands in for absent optional tensors (never read)
    zp = zero_point if zero_point is not None else dummy
    gs = global_scale if global_scale is not None else dummy
    rne = interpreting() and x.dtype == torch.bfloat16
    gpt = _groups_per_tile(group_size, cfg.block_k)
    grid = (triton.cdiv(n, cfg.block_n), triton.cdiv(m, cfg.block_m), split_k)
    _weight_only_kernel[grid](
        x, w, scale, zp, gs, bias if bias is not None else dummy, target,
        m, n, k, group_size, scale.shape[1], k_per_split,
        x.stride(0), w.stride(0), scale.stride(0), zero_point.stride(0) if zero_point is not None else 0,
        n if split_k > 1 else out.stride(0), m * n, global_scale_stride(global_scale),
        FMT=fmt, HAS_ZP=zero_point is not None, HAS_BIAS=bias is not None, SPLIT_K=split_k,
        GROUPS_PER_TILE=gpt, EVEN_K=k % cfg.block_k == 0, SWAP_AB=cfg.swap_ab,
        EPI_MAGIC=_epilogue_magic(fmt, x.dtype, gpt, cfg.epilogue_scale),
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        DOT_IN_FP32=interpreting() and x.dtype == torch.bfloat16,
        BF16_RNE=rne,
        BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    if split_k > 1:
        _reduce(target, bias, out, split_k, rne, dummy)
    return out


def _launch_gemv(x, w, scale, zero_point, global_scale, bias, group_size, fmt, cfg, gated, norm, residual):
    (m, k), n = x.shape, w.shape[0]
    if not gemv_applies(1, k, group_size, fmt, w):
        raise ValueError(f"weight-only GEMV: K={k} and group_size={group_size} must be multiples of "
                         f"{codes_per_word(fmt)} and W 4-byte aligned; pick another config")  # fmt: skip
    block_w = cfg.block_k // codes_per_word(fmt)
    w_tiles = triton.cdiv(k // codes_per_word(fmt), block_w)
    split_k = max(1, min(cfg.split_k, w_tiles))
    w_per_split = triton.cdiv(w_tiles, split_k) * block_w
    split_k = triton.cdiv(k // codes_per_word(fmt), w_per_split)
    out = torch.empty((m, n // 2 if gated else n), dtype=x.dtype, device=x.device)
    rne = interpreting() and x.dtype == torch.bfloat16
    launch_gemv(x, w, scale, zero_point, global_scale, bias, group_size, fmt, cfg, out, split_k, w_per_split, rne,
                gated, norm, residual)  # fmt: skip
    return out


def _reduce(target, bias, out, split_k, rne, dummy) -> None:
    m, n = out.shape
    block = 1024
    _split_k_reduce_kernel[(triton.cdiv(m * n, block),)](
        target, bias if bias is not None else dummy, out, m, n, m * n,
        SPLIT_K=split_k, HAS_BIAS=bias is not None, BF16_RNE=rne, BLOCK=block, num_warps=4,
    )  # fmt: skip
