"""W8A8 int8 decode (M <= DECODE_MAX_M tokens) in one kernel: per-token activation quantization fused into a
CUDA-core int8 GEMV, bit for bit `act_quant(x, "int8", "token")` followed by `int8_gemm`.

    y = w8a8_gemv(x, b_q, b_scale, bias=None, out_dtype=torch.bfloat16)
    # x: (M, K) float, b_q: (N, K) int8, b_scale: (N, 1) fp32, bias: (N,) -> y: (M, N)
    y = w8a8_gemv_ref(x, b_q, b_scale, bias, out_dtype)   # act_quant_ref, then int8_gemm_ref

At decode the two-kernel path pays a launch and a round trip of the codes through memory for a few kilobytes
of activations, and act_quant alone, latency-bound at M = 1, takes about a fifth of the GEMM's time. Here each
program computes its token's absmax and scale from the whole row (a few kilobytes, read from L2 by every
program of the token) exactly as `act_quant` does, quantizes the columns of its K range with the same
`_quantize`, and multiplies them with its rows of W in int32, which is exact: the sum does not depend on the
order, so K may be split over SPLIT_K programs whose int32 partials the last-arriving one adds (the split-K
GEMV's scheme, `_weight_only_gemv`). Scales and bias are applied in `int8_gemm`'s order, in fp32, compiled
without FP fusion (as int8_gemm is): a GPU would otherwise fuse the last multiply and the bias into one FMA,
one rounding where the reference has two (1 ulp apart in fp32 outputs on an H100).
On NVIDIA GPUs four products and their sum are one `dp4a` (four int8 weights of a 32-bit word against four
packed codes); elsewhere (the interpreter) each byte is sign-extended and multiplied.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import paths
from ._bits import bf16_rne
from ._launch import check_device, check_tensor, interpreting, num_sms, nvidia_ptx, out_dtype_check
from ._weight_only_gemv import split_counters
from .act_quant import _absmax, _nan_max, _quantize, _scale_of, act_quant_ref
from .int8_gemm import int8_gemm_ref

WHO = "w8a8_gemv"
DECODE_MAX_M = 4  # above this, the tensor-core GEMM's one pass over W beats a CUDA-core pass per token
WHY = f"M <= {DECODE_MAX_M}: act_quant fused into the CUDA-core int8 GEMV"
BLOCK_N, BLOCK_W = 64, 64  # rows per program, 32-bit words (4 codes each) per step


def w8a8_gemv_ref(
    x: torch.Tensor,
    b_q: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    a_q, a_scale = act_quant_ref(x, "int8", "token")
    return int8_gemm_ref(a_q, a_scale, b_q, b_scale, bias, out_dtype)


@triton.jit
def _w8a8_gemv_kernel(
    x_ptr, w_ptr, bs_ptr, bias_ptr, out_ptr, ws_ptr, count_ptr,
    N, K, KW, w_per_split,
    stride_xm, stride_wn, stride_om,
    HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, BF16_RNE: tl.constexpr, DP4A: tl.constexpr,
    EXACT_DIV: tl.constexpr, ROW_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """Program (row block, token, K split). KW: 32-bit words per row of W (K / 4). The token's scale comes from
    the whole row, read in ROW_BLOCK pieces, as `_act_quant_row_kernel` computes it."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    x_row = x_ptr + pid_m.to(tl.int64) * stride_xm
    amax = tl.zeros((ROW_BLOCK,), tl.float32)
    for k0 in range(0, K, ROW_BLOCK):
        offs = k0 + tl.arange(0, ROW_BLOCK)
        amax = _nan_max(amax, tl.abs(tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)))
    scale = _scale_of(_absmax(amax, 0), 127.0)
    rcp = tl.math.div_rn(1.0, scale)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_wn = tl.where(offs_n < N, offs_n, 0).to(tl.int64)  # edge rows read row 0 and are never stored
    w_rows = w_ptr + offs_wn[:, None] * stride_wn
    acc = tl.zeros((BLOCK_N, BLOCK_W), tl.int32)
    w_lo = pid_k * w_per_split
    w_hi = tl.minimum(w_lo + w_per_split, KW)
    for w0 in range(w_lo, w_hi, BLOCK_W):
        offs_w = w0 + tl.arange(0, BLOCK_W)
        ok = offs_w < w_hi
        words = tl.load(w_rows + offs_w[None, :], mask=ok[None, :], other=0)
        xw = tl.zeros((BLOCK_W,), tl.int32)
        for j in tl.static_range(4):
            xj = tl.load(x_row + offs_w * 4 + j, mask=ok, other=0.0).to(tl.float32)
            code = _quantize(xj, scale, rcp, -127.0, 127.0, False, EXACT_DIV, False)  # int32 in [-127, 127]
            if DP4A:  # pack the four codes in the order of the word's bytes
                xw = xw | ((code & 0xFF) << (8 * j))
            else:  # byte j of each word, sign-extended, times its code
                acc += ((words << (24 - 8 * j)) >> 24) * code[None, :]
        if DP4A:  # all four byte products of each word and their sum in one instruction
            acc = tl.inline_asm_elementwise(
                "dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r",
                [words, tl.broadcast_to(xw[None, :], (BLOCK_N, BLOCK_W)), acc], dtype=tl.int32, is_pure=True, pack=1,
            )  # fmt: skip
    total = tl.sum(acc, axis=1)  # (BLOCK_N,) int32, exact
    mask = offs_n < N
    out_ptrs = out_ptr + pid_m.to(tl.int64) * stride_om + offs_n
    if SPLIT_K == 1:
        _epilogue(out_ptrs, total, scale, bs_ptr, bias_ptr, offs_wn, mask, HAS_BIAS, BF16_RNE)
    else:
        ws_ptrs = ws_ptr + (pid_m.to(tl.int64) * N + offs_n) * SPLIT_K
        tl.store(ws_ptrs + pid_k, total, mask=mask)
        tl.debug_barrier()  # every thread's partial is written before the counter says so
        counter = count_ptr + pid_m * tl.num_programs(0) + pid_n
        if tl.atomic_add(counter, 1, sem="acq_rel") == SPLIT_K - 1:
            total = tl.zeros((BLOCK_N,), tl.int32)
            for s in range(SPLIT_K):  # read from L2 (.cg): L1 may hold stale lines from an earlier call
                total += tl.load(ws_ptrs + s, mask=mask, other=0, cache_modifier=".cg")
            _epilogue(out_ptrs, total, scale, bs_ptr, bias_ptr, offs_wn, mask, HAS_BIAS, BF16_RNE)
            tl.atomic_xchg(counter, 0)


@triton.jit
def _epilogue(out_ptrs, total, a_scale, bs_ptr, bias_ptr, offs_wn, mask, HAS_BIAS: tl.constexpr,
              BF16_RNE: tl.constexpr):  # fmt: skip
    """int8_gemm's epilogue: fp32(acc) * a_scale * b_scale, + bias, rounded to the output dtype."""
    out = total.to(tl.float32) * a_scale * tl.load(bs_ptr + offs_wn)
    if HAS_BIAS:
        out = out + tl.load(bias_ptr + offs_wn).to(tl.float32)
    if BF16_RNE:
        out = bf16_rne(out)
    tl.store(out_ptrs, out.to(out_ptrs.dtype.element_ty), mask=mask)


def pick_split_k(n: int, kw: int, m: int, sms: int) -> int:
    """K splits for about four programs per SM over all row blocks and tokens, at least one step each."""
    tiles = triton.cdiv(n, BLOCK_N) * m
    return max(1, min(triton.cdiv(4 * sms, tiles), triton.cdiv(kw, BLOCK_W)))


def w8a8_gemv(
    x: torch.Tensor,
    b_q: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    split_k: int | None = None,
) -> torch.Tensor:
    """See the module docstring; `split_k` overrides the heuristic (tests)."""
    check_tensor(x, "x", WHO, (torch.bfloat16, torch.float16, torch.float32), (None, None))
    device = x.device
    check_device(device, WHO)
    m, k = x.shape
    check_tensor(b_q, "b_q", WHO, (torch.int8,), (None, k), device)
    n = b_q.shape[0]
    if m == 0 or m > DECODE_MAX_M:
        raise ValueError(f"{WHO}: x has {m} rows; the decode GEMV takes 1 to {DECODE_MAX_M} (int8_gemm takes more)")
    if k % 4 or n == 0:
        raise ValueError(f"{WHO}: K={k} must be a positive multiple of 4 (W is read as 32-bit words), N={n} > 0")
    check_tensor(b_scale, "b_scale", WHO, (torch.float32, torch.bfloat16, torch.float16), (n, 1), device)
    if bias is not None:
        check_tensor(bias, "bias", WHO, (torch.float32, torch.bfloat16, torch.float16), (n,), device)
    out_dtype_check(out_dtype, WHO)
    if x.stride(1) != 1 or b_q.stride(1) != 1 or b_q.data_ptr() % 4 or b_q.stride(0) % 4:
        raise ValueError(f"{WHO}: x and b_q must be contiguous along K and b_q's rows 4-byte aligned")
    words = b_q.view(torch.int32)  # (N, K / 4)
    kw = k // 4
    split_k = max(1, min(split_k or pick_split_k(n, kw, m, num_sms(device)), triton.cdiv(kw, BLOCK_W)))
    w_per_split = triton.cdiv(triton.cdiv(kw, BLOCK_W), split_k) * BLOCK_W
    split_k = triton.cdiv(kw, w_per_split)
    out = torch.empty((m, n), dtype=out_dtype, device=device)
    b_scale = b_scale.float().reshape(n)
    grid = (triton.cdiv(n, BLOCK_N), m, split_k)
    ws, counters = out, out
    if split_k > 1:
        ws = torch.empty((m, n, split_k), dtype=torch.int32, device=device)
        counters = split_counters(device, grid[0] * m)
    paths.record(WHO, paths.TRITON_GEMV, WHY, m)
    _w8a8_gemv_kernel[grid](
        x, words, b_scale, bias if bias is not None else b_scale, out, ws, counters,
        n, k, kw, w_per_split, x.stride(0), words.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, SPLIT_K=split_k, BF16_RNE=interpreting() and out_dtype == torch.bfloat16,
        DP4A=nvidia_ptx(device), EXACT_DIV=interpreting(), ROW_BLOCK=min(triton.next_power_of_2(k), 4096),
        BLOCK_N=BLOCK_N, BLOCK_W=BLOCK_W, num_warps=4, enable_fp_fusion=False,
    )  # fmt: skip
    return out
