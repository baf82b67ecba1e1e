"""Activation quantization to int8 or FP8 E4M3. Dynamic: per token (row), per tensor, or per token and group
of `g` columns (the activation side of 128x128 block-scaled FP8). Static: one given per-tensor scale (a
calibrated checkpoint's `input_scale`).

    q, scale = act_quant(x, "int8")               # q: (M, K) int8, scale: (M, 1) fp32, x ~ q * scale
    q, scale = act_quant_ref(x, "fp8", 128)       # scale: (M, ceil(K/128)); the pure-torch definition
    q, s = act_quant(x, "fp8", "tensor", s)       # static: s (1, 1) fp32 is used as it is and returned

Dynamic scales are absmax / QMAX; codes are x / scale, saturated at +-QMAX, rounded to nearest even. The
kernel is bit-exact to the reference. An all-zero row (or group) gets the finite scale AMAX_FLOOR / QMAX and
all-zero codes. A static scale must be a positive normal fp32 number; the caller checks its value once
(checking it here would cost a device sync per call). Static int8 codes saturate at [-128, 127], as
compressed-tensors' and vLLM's static int8 quantization do (an absmax scale never reaches -128).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._bits import e4m3_bits, round_half_even
from ._launch import check_device, check_tensor, hardware_fp8, interpreting, num_sms

QMAX = {"int8": 127.0, "fp8": 448.0}
QMIN_STATIC = {"int8": -128.0, "fp8": -448.0}
AMAX_FLOOR = 1e-12
Granularity = str | int  # "token", "tensor", or a group size along K


def _amax(x32: torch.Tensor, granularity: Granularity) -> torch.Tensor:
    m, k = x32.shape
    if granularity == "token":
        return x32.abs().amax(dim=-1, keepdim=True)  # (M, 1)
    if granularity == "tensor":
        return x32.abs().amax().reshape(1, 1)  # (1, 1)
    padded = torch.nn.functional.pad(x32, (0, -k % granularity))
    return padded.abs().reshape(m, -1, granularity).amax(dim=-1)  # (M, ceil(K/g))


def _check_static_scale(scale: torch.Tensor, granularity: Granularity, device: torch.device) -> None:
    if granularity != "tensor":
        raise ValueError(f"act_quant: a static scale is per tensor: pass granularity 'tensor', not {granularity!r}")
    check_tensor(scale, "scale (static)", "act_quant", (torch.float32,), (1, 1), device)


def act_quant_ref(
    x: torch.Tensor, dtype: str = "int8", granularity: Granularity = "token", scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    qmax = QMAX[dtype]
    x32 = x.reshape(-1, x.shape[-1]).float()  # (M, K)
    qmin = -qmax
    if scale is None:
        scale = torch.clamp(_amax(x32, granularity), min=AMAX_FLOOR) / qmax
    else:
        _check_static_scale(scale, granularity, x.device)
        qmin = QMIN_STATIC[dtype]
    full = scale if scale.shape[1] == 1 else scale.repeat_interleave(granularity, dim=1)[:, : x32.shape[1]]
    scaled = torch.clamp(x32 / full, qmin, qmax)
    if dtype == "int8":
        return torch.round(scaled).to(torch.int8), scale
    return scaled.to(torch.float8_e4m3fn), scale


# ---------------------------------------------------------------------------------------------------------------
# Triton kernels


@triton.jit
def _quantize(
    x, scale, rcp, QMIN: tl.constexpr, QMAX: tl.constexpr, IS_FP8: tl.constexpr, EXACT_DIV: tl.constexpr,
    HW_FP8: tl.constexpr,
):  # fmt: skip
    """x / scale, clamped to [QMIN, QMAX] (fp8: +-448), then int8 (RNE) or E4M3 bits (RNE) as int32. `rcp` is
    the correctly rounded 1 / scale; one FMA correction of x * rcp (Markstein) gives the correctly rounded
    quotient, as the reference's division, without a division per element. It differs only for quotients
    below 1e-4 (from subnormal x), which round to the same zero code; x = -0.0 keeps its sign. A quotient far
    past QMAX (only with a static scale) skips the correction, which could overflow to NaN; it saturates
    either way. EXACT_DIV (the CPU interpreter) divides instead: some Triton versions' interpreter (3.8)
    rounds the product inside `tl.fma`, and the correction then lands one code off at ties.
    HW_FP8 (a GPU with FP8 conversions, sm_89+): the hardware's round-to-nearest-even saturating conversion
    (`cvt.rn.satfinite.e4m3x2.f32`, two values per instruction) replaces the integer encoding, which costs
    about 20 integer instructions per value and made the kernel instruction-bound on H200; both give the
    reference's codes. The interpreter's cast is not faithful (shared/FACTS.md), so it keeps the integer one.
    One return for every branch: Triton refuses a function whose returns differ in type."""
    if EXACT_DIV:
        y = tl.math.div_rn(x, scale)
    else:
        y0 = x * rcp
        y = tl.fma(tl.fma(-y0, scale, x), rcp, y0)
        y = tl.where(tl.abs(y0) < 2 * QMAX, y, y0)
        y = tl.where(x == 0, x, y)
    if IS_FP8:
        if HW_FP8:
            code = y.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True).to(tl.int32)
        else:
            code = e4m3_bits(y)  # saturates at +-448 itself
    else:
        code = round_half_even(tl.minimum(tl.maximum(y, QMIN), QMAX))
    return code


@triton.jit
def _nan_max(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _absmax(x, axis):
    """max |x| along `axis`, NaN if any element is NaN (as torch's amax; the GPU's plain max drops NaN, which
    would hide a broken activation behind a finite scale)."""
    return tl.reduce(tl.abs(x), axis, _nan_max)


@triton.jit
def _scale_of(amax, QMAX: tl.constexpr):
    return tl.math.div_rn(_nan_max(amax, 1e-12), QMAX)


@triton.jit
def _absmax_kernel(
    # pointers
    x_ptr,
    amax_ptr,
    # sizes
    K,
    # strides
    stride_xm,
    # meta-parameters
    BLOCK_K: tl.constexpr,
):
    """Per-tensor absmax: each program reduces one row and folds it in with an atomic max (order-free, exact)."""
    row = tl.program_id(0).to(tl.int64)
    amax = tl.zeros((BLOCK_K,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + row * stride_xm + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)
        amax = _nan_max(amax, tl.abs(x))
    tl.atomic_max(amax_ptr, _absmax(amax, 0))


@triton.jit
def _act_quant_row_kernel(
    # pointers
    x_ptr,
    q_ptr,
    scale_ptr,
    amax_ptr,
    # sizes
    M,
    K,
    # strides
    stride_xm,
    stride_qm,
    # meta-parameters
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    IS_FP8: tl.constexpr,
    PER_TENSOR: tl.constexpr,
    STATIC: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
    EXACT_DIV: tl.constexpr,
    HW_FP8: tl.constexpr,
):
    """Rows pid, pid + P, pid + 2P, ... of a grid of P programs (P = M: one row each): absmax (or the precomputed
    tensor absmax), scale, quantize; STATIC reads the given scale from scale_ptr instead. A row that fits in
    BLOCK_K is read once, and the next row's load is issued before this row is reduced, so a program keeps a row
    in flight while it works; a longer row is read twice (the second read mostly hits L2), or once with a static
    scale."""
    pid = tl.program_id(0)
    step = tl.num_programs(0)
    offs = tl.arange(0, BLOCK_K)
    if SINGLE_PASS:
        x_next = tl.load(x_ptr + pid.to(tl.int64) * stride_xm + offs, mask=offs < K, other=0.0)
    for i in range(0, tl.cdiv(M - pid, step)):
        row = pid.to(tl.int64) + i * step
        q_row = q_ptr + row * stride_qm
        if SINGLE_PASS:
            x = x_next.to(tl.float32)
            ahead = row + step
            k_next = tl.where(ahead < M, K, 0)  # past the last row: nothing
            x_next = tl.load(x_ptr + ahead * stride_xm + offs, mask=offs < k_next, other=0.0)
            if STATIC:
                scale = tl.load(scale_ptr)
            elif PER_TENSOR:
                scale = _scale_of(tl.load(amax_ptr), QMAX)
            else:
                scale = _scale_of(_absmax(x, 0), QMAX)
            q = _quantize(x, scale, tl.math.div_rn(1.0, scale), QMIN, QMAX, IS_FP8, EXACT_DIV, HW_FP8)
            tl.store(q_row + offs, q.to(q_ptr.dtype.element_ty), mask=offs < K)
        else:
            x_row = x_ptr + row * stride_xm
            if STATIC:
                scale = tl.load(scale_ptr)
            elif PER_TENSOR:
                scale = _scale_of(tl.load(amax_ptr), QMAX)
            else:
                acc = tl.zeros((BLOCK_K,), tl.float32)
                for k0 in range(0, K, BLOCK_K):
                    offs_k = k0 + offs
                    x = tl.load(x_row + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)
                    acc = _nan_max(acc, tl.abs(x))
                scale = _scale_of(_absmax(acc, 0), QMAX)
            rcp = tl.math.div_rn(1.0, scale)
            for k0 in range(0, K, BLOCK_K):
                offs_k = k0 + offs
                x = tl.load(x_row + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)
                q = _quantize(x, scale, rcp, QMIN, QMAX, IS_FP8, EXACT_DIV, HW_FP8)
                tl.store(q_row + offs_k, q.to(q_ptr.dtype.element_ty), mask=offs_k < K)
        if not STATIC:
            if PER_TENSOR:
                if row == 0:
                    tl.store(scale_ptr, scale)
            else:
                tl.store(scale_ptr + row, scale)


@triton.jit
def _act_quant_group_kernel(
    # pointers
    x_ptr,
    q_ptr,
    scale_ptr,
    # sizes
    K,
    num_groups,
    # strides
    stride_xm,
    stride_qm,
    stride_sm,
    # meta-parameters
    QMAX: tl.constexpr,
    IS_FP8: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_P2: tl.constexpr,
    GROUPS_PER_PROG: tl.constexpr,
    EXACT_DIV: tl.constexpr,
    HW_FP8: tl.constexpr,
):
    """Program (row, block of groups): a (GROUPS_PER_PROG, GROUP) tile, one absmax and scale per group."""
    row = tl.program_id(0).to(tl.int64)
    offs_g = tl.program_id(1) * GROUPS_PER_PROG + tl.arange(0, GROUPS_PER_PROG)  # (G,)
    offs_j = tl.arange(0, GROUP_P2)
    offs_k = offs_g[:, None] * GROUP + offs_j[None, :]  # (G, GROUP_P2)
    mask = (offs_j[None, :] < GROUP) & (offs_k < K)
    x = tl.load(x_ptr + row * stride_xm + offs_k, mask=mask, other=0.0).to(tl.float32)
    scale = _scale_of(_absmax(x, 1), QMAX)  # (G,)
    q = _quantize(x, scale[:, None], tl.math.div_rn(1.0, scale)[:, None], -QMAX, QMAX, IS_FP8, EXACT_DIV, HW_FP8)
    tl.store(q_ptr + row * stride_qm + offs_k, q.to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(scale_ptr + row * stride_sm + offs_g, scale, mask=offs_g < num_groups)


# ---------------------------------------------------------------------------------------------------------------
# Launcher

_X_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
MAX_SINGLE_PASS = 32768
# Warps a launch of the per-token / per-tensor kernel keeps per SM when its programs loop over rows: 16 / warps
# programs an SM (4 at 4,096 columns, 2 at 8,192). Side by side on an H100 (2026-12-08, FP8 per token, against
# one program per row; `python3 benchmarks/act_quant_ab.py OUT` on the GPU, benchmarks/act-quant-ab-h100-1208/),
# the best of 1-16 programs an SM at 2-16 warps was 16 warps an SM at both widths: M = 2048 78.1% -> 84.6% of
# copy bandwidth at K = 4096 and 74.3% -> 86.4% at 8192; M = 8192 81.8% -> 91.0% and 80.7% -> 94.6%.
ROW_WARPS_PER_SM = 16


def _check(x: torch.Tensor, dtype: str, granularity: Granularity, scale: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype not in _X_DTYPES:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"act_quant: x must be a bfloat16, float16 or float32 tensor, got {got}")
    if x.dim() < 1 or x.numel() == 0:
        raise ValueError(f"act_quant: x must be non-empty with shape (..., K), got {tuple(x.shape)}")
    if dtype not in QMAX:
        raise ValueError(f"act_quant: dtype must be one of {sorted(QMAX)}, got {dtype!r}")
    if granularity not in ("token", "tensor") and not (
        isinstance(granularity, int) and not isinstance(granularity, bool) and granularity > 0
    ):
        raise ValueError(
            f"act_quant: granularity must be 'token', 'tensor' or a positive group size, got {granularity!r}"
        )
    check_device(x.device, "act_quant")
    if scale is not None:
        _check_static_scale(scale, granularity, x.device)


def row_warps(block_k: int) -> int:
    """Warps of the per-token and per-tensor kernels' programs (one row each, BLOCK_K columns at a time). From
    a sweep of 1 to 16 warps on an H100 (benchmarks/gemv-ab-h100/timing-probe.json, FP8 per token): at 4,096
    columns 4 warps were fastest (M = 2048: 15.0 us against 15.5 with 8), at 8,192 columns 8 warps (26.9 us
    against 28.1 with 4 at M = 2048)."""
    return 4 if block_k <= 4096 else (8 if block_k <= 8192 else 16)


def row_programs(m: int, block_k: int, k: int, device: torch.device) -> int:
    """Programs of the per-token and per-tensor kernel: one per row, or, for rows read in one pass, at most
    ROW_WARPS_PER_SM / row_warps(block_k) per SM (at least one), each looping over rows with the next one's
    load in flight."""
    if block_k < k:
        return m
    return min(m, max(1, ROW_WARPS_PER_SM // row_warps(block_k)) * num_sms(device))


def act_quant(
    x: torch.Tensor, dtype: str = "int8", granularity: Granularity = "token", scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    _check(x, dtype, granularity, scale)
    k = x.shape[-1]
    x2 = x.reshape(-1, k)  # (M, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    is_fp8 = dtype == "fp8"
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn if is_fp8 else torch.int8, device=x.device)
    q_raw = q.view(torch.uint8) if is_fp8 else q
    meta = dict(QMAX=QMAX[dtype], IS_FP8=is_fp8, EXACT_DIV=interpreting(), HW_FP8=hardware_fp8(x.device))
    if isinstance(granularity, int):
        groups = -(-k // granularity)
        scale = torch.empty((m, groups), dtype=torch.float32, device=x.device)
        group_p2 = triton.next_power_of_2(granularity)
        per_prog = max(1, min(triton.next_power_of_2(groups), 2048 // group_p2))
        grid = (m, triton.cdiv(groups, per_prog))
        _act_quant_group_kernel[grid](
            x2, q_raw, scale, k, groups, x2.stride(0), q.stride(0), scale.stride(0),
            GROUP=granularity, GROUP_P2=group_p2, GROUPS_PER_PROG=per_prog, num_warps=4, **meta,
        )  # fmt: skip
        return q, scale
    block_k = min(triton.next_power_of_2(k), MAX_SINGLE_PASS)
    num_warps = row_warps(block_k)
    per_tensor = granularity == "tensor"
    static = scale is not None
    if static:
        scale = scale.contiguous()  # (1, 1), read by the kernel and returned as it is
        amax = scale  # unused
    elif per_tensor:
        scale = torch.empty((1, 1), dtype=torch.float32, device=x.device)
        amax = torch.zeros((1,), dtype=torch.float32, device=x.device)
        _absmax_kernel[(m,)](x2, amax, k, x2.stride(0), BLOCK_K=block_k, num_warps=num_warps)
    else:
        scale = torch.empty((m, 1), dtype=torch.float32, device=x.device)
        amax = scale  # unused
    programs = row_programs(m, block_k, k, x.device)
    _act_quant_row_kernel[(programs,)](
        x2, q_raw, scale, amax, m, k, x2.stride(0), q.stride(0),
        QMIN=QMIN_STATIC[dtype] if static else -QMAX[dtype], PER_TENSOR=per_tensor, STATIC=static,
        BLOCK_K=block_k, SINGLE_PASS=block_k >= k, num_warps=num_warps, **meta,
    )  # fmt: skip
    return q, scale
