"""Decode GEMV for weight-only formats (M <= GEMV_MAX_M): y = x @ dequant(W).T on CUDA cores, bound by the
bytes of W rather than by instructions.

Each program reads W as 32-bit words (8 int4/FP4 codes or 4 int8 codes in K order, the canonical packing seen
through an int32 view: no layout change, no shuffle) and keeps the tile in the layout it was loaded in:
- integer codes: code j becomes the exact fp32 2**(23 - P) + code with one mask-or (an exponent set above the
  code where it lies, at bit P), and one subtraction of 2**(23 - P) + zero leaves code - zero exactly (the zero
  point costs nothing per code); one FMA with x per code, one with the group's scale per word and row, and no
  cross-thread reduction until the end;
- E2M1 codes: on NVIDIA GPUs two codes become an fp16 pair (value * 2**-14, exactly) with two shifts and a
  `lop3`, then one conversion each; elsewhere sign, exponent and mantissa bits go to their fp32 places
  (value * 2**-126, exactly) and one multiply restores the value. The fp16 pairs' 2**-14 is undone in the
  group scale, once per row and group (E8M0, or E4M3; the global scale, one value or one per output row,
  divides the result once). An E4M3 scale byte is widened by Triton's float8 cast where that is exact (GPUs
  with FP8 conversions, one instruction for two bytes, and the interpreter), else decoded with integer
  operations (`_bits.e4m3_value`, about 12 instructions): the NVFP4 loop at 8B gate/up shapes has 665 SASS
  instructions a step against 758 before, at q/k/v 669 against 747 (static counts, Triton 3.9 for sm_90,
  `benchmarks/gemv_sass.py`); in the batch-1 step on an H100 NVFP4's gate/up took 32.3 us a layer against 35.4
  in an earlier call (not side by side; benchmarks/layer-ops-h100-1207/v2/).
K is split over SPLIT_K programs when N alone does not fill the GPU. Each writes its fp32 partial sums to a
workspace and counts itself in on a per-tile counter; the program that arrives last adds the partials in
split order (the order `_weight_only._split_k_reduce_kernel` adds them, so the result does not depend on which
program is last) and writes the output, then puts the counter back to zero for the next call. One launch
instead of two: at decode shapes the second kernel's launch cost a tenth of the GEMV.
GATED (a fused gate/up layer, W = [gate; up] with N = 2I rows): each program takes HALF = BLOCK_N / 2 rows of
gate and the same rows of up, and its epilogue writes silu(gate) * up (M, I), from the two outputs rounded to
out's dtype as the layer would round them, in fp32, rounded once (`_weight_only.silu_gate`, the reference):
the SiLU-gate kernel that would follow the GEMV, and its read of the (M, 2I) output, are gone.
On Hopper and later the GEMV can be launched as a programmatic dependent launch (PDL, `PDL_MODE` 1 or 2): its
programs may then start while the kernel before it in the stream is finishing, read only the layer's constants
(the global scale; in mode 2 also a prefetch of their first W tiles into L2) and wait for that kernel
(`griddepcontrol.wait`) before they read x or write anything; after their loop they let the next such kernel
launch. It is off: in batch-1 graph decode at Llama-3.1-8B shapes on an H100 it made W4A16 slower, 322 (mode 1)
and 315 (mode 2) tok/s against 330 with plain launches (`benchmarks/pdl_ab.py`, `benchmarks/pdl-ab-h100/`). A
second design, measured 2026-12-07 and taken out again, was slower still: the decode attention and the GEMV let
their dependents launch at their start, and only o (after the attention) and down (after the gated gate/up GEMV)
were dependent launches, prefetching eight tiles each: 331 against 355 tok/s. The early o and down programs
took SM room and bandwidth from the kernels they waited on (gate/up 25.5 -> 28.9 us, attention 8.5 -> 10.5 us a
layer; `benchmarks/pdl-ab-h100/run3-early-trigger/`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from ._bits import bf16_rne, e4m3_value, exp2_int, normed_element, rounded_to
from ._launch import fp8_widening, nvidia_ptx, programmatic_launch
from ._weight_only_dequant import global_scale_stride

GEMV_MAX_M = 4  # above this, FMAs per weight (one per token) cost more than the tensor-core path
TWO_POW_126 = tl.constexpr(8.507059173023462e37)
NORM_PER_THREAD = 32  # the NORM prologue's block: this many values of the row per thread
PDL_MODE = 0  # 0: ordinary launch; 1: PDL; 2: PDL and each program's first two W tiles prefetched into L2


@triton.jit
def _shift(w, SHIFT: tl.constexpr):
    """w << SHIFT for SHIFT >= 0, else w >> -SHIFT (the bits that matter never come from the sign fill)."""
    if SHIFT >= 0:
        r = w << SHIFT
    else:
        r = w >> (-SHIFT)
    return r


@triton.jit
def _code_value(w, w_hi, J: tl.constexpr, FMT: tl.constexpr, PTX: tl.constexpr, z0, z4, z8, z12):
    """fp32 (BLOCK_N, BLOCK_W) from code J of each word (w_hi: the word shifted right by 16): code - zero for
    integer formats (zP: 2**(23 - P) + zero, for a code at bit P), the E2M1 value for FP4 (times 2**-14 with
    PTX)."""
    if FMT <= 1:
        # Integer code c at bits P .. P+BITS-1 (P <= 15, the upper half read from w_hi) stays where it is; an
        # exponent of 2**(23 - P) above it makes the float 2**(23 - P) + c, and subtracting 2**(23 - P) + zero
        # (exact: zero < 2**8 <= 2**(23 - P)) leaves c - zero exactly, both operands within a factor of two:
        # one mask-or and one add per code, no shift.
        BITS: tl.constexpr = 8 if FMT == 1 else 4
        P: tl.constexpr = (J * BITS) % 16
        src = w_hi if J * BITS >= 16 else w
        MASK: tl.constexpr = ((1 << BITS) - 1) << P
        EXP: tl.constexpr = (150 - P) << 23
        if PTX:  # (src & MASK) | EXP in one instruction; LLVM emits an AND and an OR that ptxas leaves apart
            v = tl.inline_asm_elementwise(
                "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,r,r", [src, MASK, EXP], dtype=tl.int32, is_pure=True, pack=1
            )
        else:
            v = (src & MASK) | EXP
        if P == 0:
            off = z0
        elif P == 4:
            off = z4
        elif P == 8:
            off = z8
        else:
            off = z12
        v = v.to(tl.float32, bitcast=True) - off
    elif PTX:
        # E2M1 as fp16, two codes at once: codes J % 4 and J % 4 + 4 sit 16 bits apart, so one shift takes the
        # exponent and mantissa bits of both to fp16 bits 9 .. 11 of each half and another takes the signs to bit
        # 15: value * 2**-14 exactly (E2M1's 0.5 becomes an fp16 subnormal), and one conversion per code. The
        # caller multiplies the sum by 2**14 once per word. Codes J and J + 4 build the same pair (CSE'd).
        K4: tl.constexpr = J % 4
        signs = _shift(w, 12 - 4 * K4) & -2147450880  # 0x80008000
        pair = tl.inline_asm_elementwise(
            "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,r,r", [_shift(w, 9 - 4 * K4), 0x0E000E00, signs],
            dtype=tl.int32, is_pure=True, pack=1,
        )  # fmt: skip
        if J >= 4:
            v = tl.inline_asm_elementwise(
                "{ .reg .b16 l, h; mov.b32 {l, h}, $1; cvt.f32.f16 $0, h; }", "=r,r", [pair],
                dtype=tl.float32, is_pure=True, pack=1,
            )  # fmt: skip
        else:
            v = tl.inline_asm_elementwise(
                "{ .reg .b16 l, h; mov.b32 {l, h}, $1; cvt.f32.f16 $0, l; }", "=r,r", [pair],
                dtype=tl.float32, is_pure=True, pack=1,
            )  # fmt: skip
    else:  # E2M1: exponent and mantissa bits 4J .. 4J+2 -> fp32 bits 22 .. 24, sign bit 4J+3 -> bit 31
        v = (_shift(w, 22 - 4 * J) & 0x01C00000) | (_shift(w, 28 - 4 * J) & -2147483648)
        v = v.to(tl.float32, bitcast=True) * TWO_POW_126
    return v


@triton.jit
def _x_value(quad, Q: tl.constexpr, DTYPE: tl.constexpr):
    """fp32 value Q (0..3, in address order) of the four 16-bit x values (bf16 or fp16) held in int64 `quad`."""
    half_pair = (quad >> 32).to(tl.int32) if Q >= 2 else quad.to(tl.int32)
    if DTYPE == tl.bfloat16:  # bf16 is the upper half of an fp32: one shift or one mask
        if Q % 2 == 0:
            v = (half_pair << 16).to(tl.float32, bitcast=True)
        else:
            v = (half_pair & -65536).to(tl.float32, bitcast=True)
    else:
        v = (half_pair >> (16 * (Q % 2))).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    return v


@triton.jit
def _quads(row, offs_w, KW, CPW: tl.constexpr, EVEN_K: tl.constexpr):
    """The 16-bit values of words offs_w of a row (x, or the norm's weight) as CPW // 4 int64 loads (4 values
    each); the second is the first again for 8-bit codes (4 values a word, never read)."""
    quads = row.to(tl.pointer_type(tl.int64)) + offs_w * (CPW // 4)
    if EVEN_K:
        q0 = tl.load(quads)
        q1 = tl.load(quads + 1) if CPW == 8 else q0
    else:
        q0 = tl.load(quads, mask=offs_w < KW, other=0)
        q1 = tl.load(quads + 1, mask=offs_w < KW, other=0) if CPW == 8 else q0
    return q0, q1


@triton.jit
def _x_column(row, offs_w, j, KW, CPW: tl.constexpr, EVEN_K: tl.constexpr):
    """fp32 value j of each word offs_w of a row (BLOCK_W,), one load per value."""
    if EVEN_K:
        v = tl.load(row + offs_w * CPW + j)
    else:
        v = tl.load(row + offs_w * CPW + j, mask=offs_w < KW, other=0.0)
    return v.to(tl.float32)


@triton.jit
def _row_rstd(x_row, K, eps, NORM_BLOCK: tl.constexpr, NORM_STEPS: tl.constexpr, NORM_EVEN: tl.constexpr):
    """1 / sqrt(mean(h**2) + eps) of the token's row of h (K values), in fp32, each operation correctly rounded;
    the row is read in NORM_STEPS blocks, unrolled, so that their loads can all be in flight at once."""
    sq = tl.zeros((NORM_BLOCK,), dtype=tl.float32)
    for step in tl.static_range(NORM_STEPS):
        offs = step * NORM_BLOCK + tl.arange(0, NORM_BLOCK)
        if NORM_EVEN:  # K is whole blocks: no mask, so the loads stay 16 bytes wide
            h = tl.load(x_row + offs).to(tl.float32)
        else:
            h = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
        sq += h * h
    mean = tl.math.div_rn(tl.sum(sq, axis=0), K.to(tl.float32))
    return tl.math.div_rn(1.0, tl.sqrt_rn(mean + eps))


@triton.jit
def _per_group(
    ptr, offs_wn, stride, g0, offs_w, KW, group_words, num_groups,
    GROUPS_PER_TILE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, OTHER: tl.constexpr,
):  # fmt: skip
    """The tile's per-group values, compact: (BLOCK_N, 1) when the tile lies in one group, (BLOCK_N, G) when it
    holds G whole groups (g0: the tile's first group), else gathered per word (BLOCK_N, BLOCK_W)."""
    if GROUPS_PER_TILE == 1:
        v = tl.load(ptr + offs_wn * stride + g0)[:, None]
    elif GROUPS_PER_TILE > 1:
        offs_g = g0 + tl.arange(0, GROUPS_PER_TILE)
        v = tl.load(ptr + offs_wn[:, None] * stride + offs_g[None, :], mask=offs_g[None, :] < num_groups, other=OTHER)
    else:
        g = offs_w // group_words
        v = tl.load(ptr + offs_wn[:, None] * stride + g[None, :], mask=offs_w[None, :] < KW, other=OTHER)
    return v


@triton.jit
def _to_words(v, GROUPS_PER_TILE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    """(BLOCK_N, G) per-group values -> (BLOCK_N, BLOCK_W) per word; other shapes pass through."""
    if GROUPS_PER_TILE > 1:
        v = tl.broadcast_to(v[:, :, None], (BLOCK_N, GROUPS_PER_TILE, BLOCK_W // GROUPS_PER_TILE))
        v = tl.reshape(v, (BLOCK_N, BLOCK_W))
    return v


@triton.jit
def _prefetch_l2(ptrs):
    """`prefetch.global.L2` of the line holding each address (no value comes back; kept, as it has effects)."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _gemv_kernel(
    # pointers
    x_ptr,
    w_ptr,
    s_ptr,
    z_ptr,
    gs_ptr,
    bias_ptr,
    out_ptr,
    ws_ptr,
    count_ptr,
    nw_ptr,
    res_ptr,
    # sizes
    M,
    N,
    KW,
    group_words,
    num_groups,
    w_per_split,
    eps,
    # strides
    stride_xm,
    stride_wn,
    stride_sn,
    stride_zn,
    stride_om,
    stride_ws,
    stride_gs,
    stride_rm,
    # meta-parameters
    FMT: tl.constexpr,
    HAS_ZP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    GROUPS_PER_TILE: tl.constexpr,
    EVEN_K: tl.constexpr,
    BF16_RNE: tl.constexpr,
    PREFETCH: tl.constexpr,
    PTX: tl.constexpr,
    FP8_CVT: tl.constexpr,
    X_HALVES: tl.constexpr,
    STAGES: tl.constexpr,
    PDL: tl.constexpr,
    GATED: tl.constexpr,
    NORM: tl.constexpr,
    RESIDUAL: tl.constexpr,
    NORM_BLOCK: tl.constexpr,
    NORM_STEPS: tl.constexpr,
    NORM_EVEN: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """Program (row block, token, K split). acc (BLOCK_N, BLOCK_W): per row and word column, summed over words at
    the end, so the loop has no cross-thread traffic. KW, the word count of a row, and group_words, words per
    group, count in 32-bit words. PREFETCH (only with EVEN_K, where every split is whole tiles) loads W one
    tile ahead. PTX (NVIDIA GPUs; the interpreter and ROCm run no PTX) extracts integer codes with one inline
    `lop3`: the same bits as the AND and OR it replaces, about a fifth fewer instructions per code in SASS;
    with NORM it also asks L2 for the program's first two W tiles before the prologue.
    X_HALVES (16-bit x, rows 8-byte aligned) reads a word's x values 4 at a time as int64 rather than one by
    one: for int4, 8 loads instead of 32 per 128 codes of a thread. STAGES > 1 (without PREFETCH; the launcher
    stages only where K is whole tiles, as it prefetches, the case measured on a GPU) has Triton's pipeliner
    stage each step's loads that many steps deep through shared memory as asynchronous copies, so the bytes in
    flight no longer depend on where ptxas places the loads among the arithmetic. NORM: x_ptr holds the
    un-normalized h, and the product is taken with rms_norm(h, weight at nw_ptr, eps): every program first sums
    the squares of the token's whole row (an L2 read of 2K bytes, its NORM_STEPS blocks unrolled), then
    normalizes each x value as it loads it. (Normalizing the split's columns once into a scratch row that the
    loop then read instead was slower in the batch-1 8B step on an H100, W4A16 371 -> 331 tok/s, NVFP4 297 ->
    261, and is gone; benchmarks/layer-ops-h100-1207/.) RESIDUAL: the output is residual (res_ptr) + the
    layer's output, as rounded, added in the epilogue; the tile's residual values are loaded before the loop."""
    CPW: tl.constexpr = 4 if FMT == 1 else 8  # codes per word
    BITS: tl.constexpr = 8 if FMT == 1 else 4
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    if GATED:  # rows i < HALF of gate, then the same rows of up, N // 2 further down
        HALF: tl.constexpr = BLOCK_N // 2
        rows = pid_n * HALF + tl.arange(0, BLOCK_N) % HALF
        row_ok = rows < N // 2
        offs_n = rows + (tl.arange(0, BLOCK_N) // HALF) * (N // 2)
    else:
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = offs_n < N
    offs_wn = tl.where(row_ok, offs_n, 0).to(tl.int64)  # edge rows read row 0 and are never stored
    w_rows = w_ptr + offs_wn[:, None] * stride_wn
    x_row = x_ptr + pid_m.to(tl.int64) * stride_xm
    if FMT == 3:
        gs = tl.load(gs_ptr + offs_wn * stride_gs).to(tl.float32)  # (BLOCK_N,): one value or one per row
    acc = tl.zeros((BLOCK_N, BLOCK_W), dtype=tl.float32)
    w_lo = pid_k * w_per_split
    w_hi = tl.minimum(w_lo + w_per_split, KW)
    if PREFETCH:
        ahead = tl.load(w_rows + (w_lo + tl.arange(0, BLOCK_W))[None, :])
    else:
        ahead = tl.zeros((BLOCK_N, BLOCK_W), dtype=tl.int32)
    if PDL == 2:  # W is the layer's own: safe to read before the previous kernel is done
        LINES: tl.constexpr = (2 * BLOCK_W + 31) // 32  # 128-byte lines of two tiles
        lines = tl.minimum(w_lo + tl.arange(0, LINES) * 32, KW - 1)
        _prefetch_l2(w_rows + lines[None, :])
    if PDL > 0:
        gdc_wait()  # x, the workspace, the counters and out are read or written only after this
    if NORM:
        if PTX and PDL != 2:  # W's first tiles on their way to L2 while the row's norm is summed
            LINES: tl.constexpr = (2 * BLOCK_W + 31) // 32  # 128-byte lines of two tiles
            _prefetch_l2(w_rows + tl.minimum(w_lo + tl.arange(0, LINES) * 32, KW - 1)[None, :])
        rstd = _row_rstd(x_row, KW * CPW, eps, NORM_BLOCK, NORM_STEPS, NORM_EVEN)
    if RESIDUAL:
        res_row = res_ptr + pid_m.to(tl.int64) * stride_rm
        res = tl.load(res_row + offs_n, mask=row_ok, other=0.0).to(tl.float32)
    else:
        res = tl.zeros((BLOCK_N,), dtype=tl.float32)
    # the tile's first group: with G whole groups a tile (splits start on a tile) it advances by G a step, so
    # the loop divides only when a group spans several tiles
    g_next = w_lo // group_words
    for w0 in tl.range(w_lo, w_hi, BLOCK_W, num_stages=STAGES):
        offs_w = w0 + tl.arange(0, BLOCK_W)
        if GROUPS_PER_TILE > 1:
            g0 = g_next
            g_next += GROUPS_PER_TILE
        else:
            g0 = w0 // group_words
        if PREFETCH:
            # the next tile's load is issued before this tile's arithmetic, so the two overlap in every warp
            # (Triton pipelines only loads that feed a tl.dot); the last step reloads its own tile (an L1 hit)
            # rather than masking, which would cost the 16-byte vector loads
            words = ahead
            w_next = tl.multiple_of(tl.minimum(w0 + BLOCK_W, w_hi - BLOCK_W), BLOCK_W)
            ahead = tl.load(w_rows + (w_next + tl.arange(0, BLOCK_W))[None, :])
        elif EVEN_K:
            words = tl.load(w_rows + offs_w[None, :])
        else:
            words = tl.load(w_rows + offs_w[None, :], mask=offs_w[None, :] < KW, other=0)
        words_hi = words >> 16
        if FMT <= 1 and HAS_ZP:
            z = _per_group(z_ptr, offs_wn, stride_zn, g0, offs_w, KW, group_words, num_groups, GROUPS_PER_TILE,
                           BLOCK_N, BLOCK_W, 0).to(tl.float32)  # fmt: skip
            z = _to_words(z, GROUPS_PER_TILE, BLOCK_N, BLOCK_W)
        else:  # the symmetric formats' fixed zero point (unused by FP4)
            z = tl.full((1, 1), 1 << (BITS - 1), tl.float32)
        part = tl.zeros((BLOCK_N, BLOCK_W), dtype=tl.float32)
        if X_HALVES:  # a word's CPW 16-bit x values as CPW // 4 64-bit loads (4 values each)
            xq0, xq1 = _quads(x_row, offs_w, KW, CPW, EVEN_K)
            if NORM:
                nq0, nq1 = _quads(nw_ptr, offs_w, KW, CPW, EVEN_K)
        for j in tl.static_range(CPW):
            if X_HALVES:
                if j < 4:
                    xj = _x_value(xq0, j, x_row.dtype.element_ty)
                    if NORM:
                        nj = _x_value(nq0, j, x_row.dtype.element_ty)
                else:
                    xj = _x_value(xq1, j - 4, x_row.dtype.element_ty)
                    if NORM:
                        nj = _x_value(nq1, j - 4, x_row.dtype.element_ty)
            else:
                xj = _x_column(x_row, offs_w, j, KW, CPW, EVEN_K)  # (BLOCK_W,)
                if NORM:
                    nj = _x_column(nw_ptr, offs_w, j, KW, CPW, EVEN_K)
            if NORM:
                xj = normed_element(xj, nj, rstd, x_row.dtype.element_ty, BF16_RNE)
            code = _code_value(words, words_hi, j, FMT, PTX, z + 8388608.0, z + 524288.0, z + 32768.0, z + 2048.0)
            part += xj[None, :] * code
        if FMT <= 1:
            s = _per_group(s_ptr, offs_wn, stride_sn, g0, offs_w, KW, group_words, num_groups, GROUPS_PER_TILE,
                           BLOCK_N, BLOCK_W, 0.0).to(tl.float32)  # fmt: skip
            acc += _to_words(s, GROUPS_PER_TILE, BLOCK_N, BLOCK_W) * part
        else:
            e = _per_group(s_ptr, offs_wn, stride_sn, g0, offs_w, KW, group_words, num_groups, GROUPS_PER_TILE,
                           BLOCK_N, BLOCK_W, 127 if FMT == 2 else 0)  # fmt: skip
            if FMT == 2:
                s = exp2_int(e.to(tl.int32) - 127)
            elif FP8_CVT:  # the scale byte through the conversion instructions (exact), not ~12 integer ones
                s = e.to(tl.float8e4nv, bitcast=True).to(tl.float32)
            else:
                s = e4m3_value(e.to(tl.int32))  # the division by the global scale is left to the end
            if PTX:  # the fp16 decode's 2**-14, undone exactly, once per (row, group) rather than per word
                s = s * 16384.0
            acc += _to_words(s, GROUPS_PER_TILE, BLOCK_N, BLOCK_W) * part

    if PDL > 0:
        gdc_launch_dependents()
    out = tl.sum(acc, axis=1)  # (BLOCK_N,)
    if FMT == 3:
        out = tl.math.div_rn(out, gs)
    out_row = out_ptr + pid_m.to(tl.int64) * stride_om
    if SPLIT_K == 1:
        _store_out(out_row, res, pid_n, out, bias_ptr, offs_wn, row_ok, HAS_BIAS, BF16_RNE, GATED, RESIDUAL, N,
                   BLOCK_N)  # fmt: skip
    else:
        ws_ptrs = ws_ptr + pid_m.to(tl.int64) * N + offs_n
        tl.store(ws_ptrs + pid_k * stride_ws, out, mask=row_ok)
        tl.debug_barrier()  # every thread's partial is written before the counter says so
        counter = count_ptr + pid_m * tl.num_programs(0) + pid_n
        if tl.atomic_add(counter, 1, sem="acq_rel") == SPLIT_K - 1:
            # the last of the tile's programs: partials in split order, read from L2 (L1 may hold stale lines
            # of this workspace from an earlier call)
            total = tl.load(ws_ptrs, mask=row_ok, other=0.0, cache_modifier=".cg")
            for s in range(1, SPLIT_K):
                total += tl.load(ws_ptrs + s * stride_ws, mask=row_ok, other=0.0, cache_modifier=".cg")
            _store_out(out_row, res, pid_n, total, bias_ptr, offs_wn, row_ok, HAS_BIAS, BF16_RNE, GATED,
                       RESIDUAL, N, BLOCK_N)  # fmt: skip
            tl.atomic_xchg(counter, 0)


@triton.jit
def _store_out(
    out_row, res, pid_n, out, bias_ptr, offs_wn, mask,
    HAS_BIAS: tl.constexpr, BF16_RNE: tl.constexpr, GATED: tl.constexpr, RESIDUAL: tl.constexpr, N,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    """The tile's BLOCK_N sums (bias added) to out's row: as they are, or GATED: silu(gate) * up of its HALF
    pairs, each value first rounded to out's dtype as the fused layer's output would be, or RESIDUAL: `res`
    (the tile's residual values, fp32) plus the sums rounded to out's dtype, in fp32, rounded once (the
    residual add of a decoder layer, as torch adds two tensors)."""
    dtype: tl.constexpr = out_row.dtype.element_ty
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_wn).to(tl.float32)
    if GATED:
        HALF: tl.constexpr = BLOCK_N // 2
        out = rounded_to(out, dtype, BF16_RNE)
        gate, up = tl.split(tl.permute(tl.reshape(out, (2, HALF)), (1, 0)))
        out = gate / (1.0 + tl.exp(-gate)) * up
        cols = pid_n * HALF + tl.arange(0, HALF)
        mask = cols < N // 2
    else:
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        if RESIDUAL:
            out = rounded_to(out, dtype, BF16_RNE) + res
    if BF16_RNE:
        out = bf16_rne(out)
    tl.store(out_row + cols, out.to(dtype), mask=mask)


def codes_per_word(fmt: int) -> int:
    return 4 if fmt == 1 else 8


def gemv_applies(m: int, k: int, group_size: int, fmt: int, w: torch.Tensor) -> bool:
    """The GEMV reads W as int32 words and takes a group's scale per word: K and the group size must be whole
    words, and each row must start on a 4-byte boundary."""
    cpw = codes_per_word(fmt)
    return m <= GEMV_MAX_M and k % cpw == 0 and group_size % cpw == 0 and w.data_ptr() % 4 == 0


def gemv_groups_per_tile(group_words: int, block_w: int) -> int:
    """As `_weight_only_dequant._groups_per_tile`, counted in words."""
    if group_words % block_w == 0:
        return 1
    if block_w % group_words == 0 and group_words & (group_words - 1) == 0:
        return block_w // group_words
    return 0


def x_in_quads(x: torch.Tensor) -> bool:
    """The GEMV may read x 4 values at a time as int64: 16-bit values, unit stride, 8-byte aligned rows (K is
    whole words, so a word's x values never straddle a row)."""
    aligned = x.data_ptr() % 8 == 0 and (x.shape[0] == 1 or x.stride(0) % 4 == 0)
    return x.dtype in (torch.bfloat16, torch.float16) and x.stride(1) == 1 and aligned


_COUNTERS: dict = {}


def split_counters(device: torch.device, tiles: int) -> torch.Tensor:
    """Zeroed int32 counters, one per output tile, for the split-K GEMV's last-arriver reduction; kept per
    device and stream (two streams never share one) and reused: each call's last program zeroes its counter
    again. Allocated during CUDA-graph capture, the zeroing is captured too and runs at every replay."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device, stream)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < tiles:
        buf = _COUNTERS[key] = torch.zeros(max(tiles, 1024), dtype=torch.int32, device=device)
    return buf


def launch_gemv(x, w, scale, zero_point, global_scale, bias, group_size, fmt, cfg, out, split_k, w_per_split,
                rne: bool, gated: bool = False, norm=None, residual=None):  # fmt: skip
    """Launch on (M, K) x and (N, K / codes-per-byte) uint8 W seen as int32 words into `out` (M, N), or with
    `gated` (N even) silu(gate) * up into `out` (M, N / 2); `norm` (weight (K,) of x's dtype, eps): x is h and
    the product is taken with rms_norm(h); `residual` (M, N): out = residual + the product. Sizes were checked
    by `gemv_applies` and the caller."""
    (m, k), n = x.shape, w.shape[0]
    cpw = codes_per_word(fmt)
    words = w.view(torch.int32)  # (N, K / cpw): the canonical packing read 4 bytes at a time
    block_w = cfg.block_k // cpw
    group_words = group_size // cpw
    dummy = scale
    even_k = (k // cpw) % block_w == 0
    # one token per program: M <= GEMV_MAX_M re-reads W from L2; gated, a program's rows are half gate, half up
    grid = (triton.cdiv(n // 2, cfg.block_n // 2) if gated else triton.cdiv(n, cfg.block_n), m, split_k)
    pdl = PDL_MODE if PDL_MODE and programmatic_launch(x.device) else 0  # no device query while it is off
    ws, counters = dummy, dummy
    if split_k > 1:
        ws = torch.empty((split_k, m, n), dtype=torch.float32, device=x.device)
        counters = split_counters(x.device, grid[0] * m)
    quads = x_in_quads(x) and (norm is None or x_in_quads(norm[0][None]))
    norm_block = min(triton.next_power_of_2(k), NORM_PER_THREAD * 32 * cfg.num_warps)
    _gemv_kernel[grid](
        x, words, scale, zero_point if zero_point is not None else dummy,
        global_scale if global_scale is not None else dummy, bias if bias is not None else dummy, out, ws, counters,
        norm[0] if norm is not None else dummy, residual if residual is not None else dummy,
        m, n, k // cpw, group_words, scale.shape[1], w_per_split, float(norm[1]) if norm is not None else 0.0,
        x.stride(0), words.stride(0), scale.stride(0), zero_point.stride(0) if zero_point is not None else 0,
        out.stride(0), m * n, global_scale_stride(global_scale), residual.stride(0) if residual is not None else 0,
        FMT=fmt, HAS_ZP=zero_point is not None, HAS_BIAS=bias is not None, SPLIT_K=split_k,
        GROUPS_PER_TILE=gemv_groups_per_tile(group_words, block_w), EVEN_K=even_k, BF16_RNE=rne,
        PREFETCH=cfg.prefetch and even_k, PTX=nvidia_ptx(x.device), FP8_CVT=fp8_widening(x.device), X_HALVES=quads,
        STAGES=cfg.num_stages if even_k and not cfg.prefetch else 1, PDL=pdl, GATED=gated, NORM=norm is not None,
        RESIDUAL=residual is not None, NORM_BLOCK=norm_block, NORM_STEPS=triton.cdiv(k, norm_block),
        NORM_EVEN=k % norm_block == 0, BLOCK_N=cfg.block_n, BLOCK_W=block_w,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, launch_pdl=pdl > 0,
    )  # fmt: skip
