"""Quantize steps of low-precision training: E5M2 gradients, and MXFP4 with stochastic rounding (backward) or
with RMS-clipped round-to-nearest (forward, QuEST-style).

    q, scale = grad_quant(g, "token")                   # q: (M, K) float8_e5m2, scale: (M, 1) fp32, g ~ q * scale
    packed, scale = mxfp4_sr_quantize(x, bits)          # bits: (M, K) int32 random bits; unbiased: E[dequant] = x
    packed, scale = mxfp4_clip_quantize(x)              # E8M0 scale from the group's RMS; larger values clip to +-6

E5M2: dynamic scale absmax / 57344 per token (row) or per tensor, round to nearest even, saturating.

MXFP4 here keeps the OCP layout of `fp4_gemm.mxfp4_quantize` (E2M1 codes two per byte, one E8M0 scale per 32
values along the last dimension, which must be a multiple of 32), so `fp4_gemm.dequantize_fp4` and
`fp4_gemm` read the result, but picks the scale per use:
- stochastic rounding (`sr`): the smallest power of two X with amax <= 6 X, so nothing saturates and rounding
  is unbiased. |x| / X is rounded up to the next E2M1 value with probability equal to its distance from the
  lower one, in units of the gap: "up" when (bits & 0xFFFFFF) * 2**-24 < that fraction. The same bits give
  the same codes in the kernel and the reference.
- clipped round-to-nearest (`clip`): the smallest power of two X with CLIP_RATIO * rms <= 6 X, rms the
  group's root mean square (summed in a fixed pairwise order, so kernel and reference agree bit for bit);
  values beyond 6 X saturate. On Gaussian data (a Hadamard-rotated activation is close to it) this gives a
  lower mean squared error than the absmax scale; see tests/kernels/test_train_quant.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._bits import e2m1_code, exp2_int, floor_log2, round_half_even
from ._launch import check_device, check_tensor
from .fp4_gemm import E8M0_BIAS, e2m1_decode, e2m1_encode_ref
from .w4a16_gemm import expand_groups, pack_int4

E5M2_MAX = 57344.0
AMAX_FLOOR = 1e-30
MX_GROUP = 32
CLIP_RATIO = 2.2  # the lowest MSE on Gaussian data among 1.8..2.4 in steps of 0.1 (3.6% below the absmax scale)
SR_BITS = 24
_X_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ---------------------------------------------------------------------------------------------------------------
# References


def _grad_scale(x32: torch.Tensor, granularity: str) -> torch.Tensor:
    amax = x32.abs().amax(dim=-1, keepdim=True) if granularity == "token" else x32.abs().amax().reshape(1, 1)
    amax = torch.clamp(amax, min=AMAX_FLOOR)
    # a tensor divisor: torch on CUDA turns division by a Python number into a multiply by its reciprocal, which
    # is not the correctly rounded quotient the CPU computes (one ulp apart on an H100)
    return amax / torch.full_like(amax, E5M2_MAX)  # (M, 1) or (1, 1)


def grad_quant_ref(x: torch.Tensor, granularity: str = "token") -> tuple[torch.Tensor, torch.Tensor]:
    _check_granularity(granularity)
    x32 = x.reshape(-1, x.shape[-1]).float()  # (M, K)
    scale = _grad_scale(x32, granularity)
    return torch.clamp(x32 / scale, -E5M2_MAX, E5M2_MAX).to(torch.float8_e5m2), scale


def _group_view(x: torch.Tensor) -> torch.Tensor:
    m, k = x.shape
    return x.float().reshape(m, k // MX_GROUP, MX_GROUP)  # (M, G, 32)


def _pairwise_sum(v: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension (a power of two) by adding neighbours, level by level, as the kernel does."""
    while v.shape[-1] > 1:
        v = v.reshape(*v.shape[:-1], -1, 2)
        v = v[..., 0] + v[..., 1]
    return v[..., 0]


def _smallest_pow2_exponent(target: torch.Tensor) -> torch.Tensor:
    """The least e in [-127, 127] with 2**e >= target (target >= 0); -127 for 0."""
    safe = torch.where(target > 0, target, torch.ones_like(target))
    e = torch.frexp(safe).exponent - 1  # floor(log2)
    e = torch.where(torch.ldexp(torch.ones_like(safe), e) < safe, e + 1, e)
    return torch.where(target > 0, e, torch.full_like(e, -127)).clamp(-127, 127)


def mx_scale_exponent_ref(x: torch.Tensor, mode: str) -> torch.Tensor:
    """(M, K) -> (M, K/32) int32 scale exponents for `mode` 'sr' (amax <= 6 X) or 'clip' (CLIP_RATIO rms <= 6 X)."""
    g = _group_view(x)
    if mode == "sr":
        target = g.abs().amax(dim=-1) / 6.0
    else:
        rms = torch.sqrt(_pairwise_sum(g * g) / MX_GROUP)
        target = rms * torch.tensor(CLIP_RATIO / 6.0, dtype=torch.float32)
    return _smallest_pow2_exponent(target).int()


def e2m1_sr_encode_ref(v: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """fp32 values with |v| <= 6 -> E2M1 codes rounded stochastically with the given int32 random bits."""
    a = v.abs()
    step = torch.where(a < 2, 0.5, torch.where(a < 4, 1.0, 2.0))
    t = a / step
    low = torch.floor(t)
    u = (bits & 0xFFFFFF).float() * 2.0**-SR_BITS
    q = (low + (u < t - low).float()) * step  # an E2M1 magnitude
    code = torch.where(q < 2, q * 2, torch.where(q < 4, q + 2, q / 2 + 4)).to(torch.uint8)
    return code | ((v < 0).to(torch.uint8) << 3)


def _mx_quantize_ref(x: torch.Tensor, mode: str, bits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    m, k = x.shape
    shared = mx_scale_exponent_ref(x, mode)  # (M, G)
    scale = torch.ldexp(torch.ones_like(shared, dtype=torch.float32), shared)
    v = x.float() / expand_groups(scale, MX_GROUP, k)  # (M, K)
    codes = e2m1_sr_encode_ref(v, bits) if mode == "sr" else e2m1_encode_ref(v)
    return pack_int4(codes), (shared + E8M0_BIAS).to(torch.uint8)


def mxfp4_sr_quantize_ref(x: torch.Tensor, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_mx(x, "mxfp4_sr_quantize_ref", bits)
    return _mx_quantize_ref(x, "sr", bits)


def mxfp4_clip_quantize_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_mx(x, "mxfp4_clip_quantize_ref", None)
    return _mx_quantize_ref(x, "clip", None)


def random_bits(shape: tuple[int, ...], generator: torch.Generator, device=None) -> torch.Tensor:
    """Seeded int32 random bits for stochastic rounding (the low SR_BITS bits are used)."""
    return torch.randint(0, 2**SR_BITS, shape, generator=generator, dtype=torch.int32, device=device)


def mx_dequantize(packed: torch.Tensor, scale: torch.Tensor, k: int) -> torch.Tensor:
    """(M, K/2) codes and (M, K/32) E8M0 scales -> (M, K) fp32 values."""
    from .w4a16_gemm import unpack_int4

    group_scale = torch.ldexp(torch.ones_like(scale, dtype=torch.float32), scale.int() - E8M0_BIAS)
    return e2m1_decode(unpack_int4(packed, k)) * expand_groups(group_scale, MX_GROUP, k)


# ---------------------------------------------------------------------------------------------------------------
# Checks


def _check_granularity(granularity: str) -> None:
    if granularity not in ("token", "tensor"):
        raise ValueError(f"grad_quant: granularity must be 'token' or 'tensor', got {granularity!r}")


def _check_mx(x: torch.Tensor, who: str, bits: torch.Tensor | None) -> None:
    check_tensor(x, "x", who, _X_DTYPES, (None, None))
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[1] % MX_GROUP:
        raise ValueError(f"{who}: x must be (M, K) with K a positive multiple of {MX_GROUP}, got {tuple(x.shape)}")
    if bits is not None:
        check_tensor(bits, "bits", who, (torch.int32,), tuple(x.shape), x.device)


# ---------------------------------------------------------------------------------------------------------------
# Triton kernels


@triton.jit
def e5m2_bits(v):
    """fp32 -> float8_e5m2 bit pattern (int32 in [0, 255]): round to nearest even, saturate at +-57344."""
    a = tl.minimum(tl.abs(v), 57344.0)
    bits = a.to(tl.int32, bitcast=True)
    rounded = bits + 0xFFFFF + ((bits >> 21) & 1)  # 23-bit mantissa to 2 bits; carries run into the exponent
    normal = (rounded >> 21) - (112 << 2)  # rebias the exponent from 127 to 15
    subnormal = round_half_even(a * 65536.0)  # multiples of 2**-16 below 2**-14
    code = tl.where(a < 0.00006103515625, subnormal, normal)
    sign = (v.to(tl.int32, bitcast=True) >> 31) & 1
    return code | (sign << 7)


@triton.jit
def _grad_quant_kernel(
    # pointers
    x_ptr,
    q_ptr,
    scale_ptr,
    # sizes
    K,
    # strides
    stride_xm,
    stride_qm,
    stride_sm,
    # meta-parameters
    BLOCK_K: tl.constexpr,
):
    """Program (row, block of columns): x / scale (the row's, or the tensor's with stride_sm = 0) to E5M2 bits."""
    row = tl.program_id(0).to(tl.int64)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + row * stride_xm + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + row * stride_sm)
    q = e5m2_bits(tl.math.div_rn(x, scale))
    tl.store(q_ptr + row * stride_qm + offs_k, q.to(tl.uint8), mask=offs_k < K)


@triton.jit
def _sr_code(v, bits):
    a = tl.abs(v)
    step = tl.where(a < 2.0, 0.5, tl.where(a < 4.0, 1.0, 2.0))
    t = tl.math.div_rn(a, step)
    low = tl.floor(t)
    u = (bits & 0xFFFFFF).to(tl.float32) * 5.9604644775390625e-08  # * 2**-24
    q = (low + (u < t - low).to(tl.float32)) * step
    code = tl.where(q < 2.0, q * 2.0, tl.where(q < 4.0, q + 2.0, q * 0.5 + 4.0)).to(tl.int32)
    return code | ((v < 0).to(tl.int32) << 3)


@triton.jit
def _pairwise_sum_32(v, G: tl.constexpr):
    """Sum of each row of a (G, 32) tile, adding neighbours level by level (the reference's order)."""
    v = tl.reshape(v, (G, 16, 2))
    a, b = tl.split(v)
    v = tl.reshape(a + b, (G, 8, 2))
    a, b = tl.split(v)
    v = tl.reshape(a + b, (G, 4, 2))
    a, b = tl.split(v)
    v = tl.reshape(a + b, (G, 2, 2))
    a, b = tl.split(v)
    v = a + b  # (G, 2)
    a, b = tl.split(tl.reshape(v, (G, 1, 2)))
    return tl.reshape(a + b, (G,))


@triton.jit
def _mx_train_quant_kernel(
    # pointers
    x_ptr,
    bits_ptr,
    packed_ptr,
    scale_ptr,
    # sizes
    num_groups,
    # strides
    stride_xm,
    stride_bm,
    stride_pm,
    stride_sm,
    # meta-parameters
    CLIP_OVER_6: tl.constexpr,
    STOCHASTIC: tl.constexpr,
    GROUPS_PER_PROG: tl.constexpr,
):
    """Program (row, block of groups): a (G, 32) tile; scale exponent per group, codes, two codes per byte."""
    row = tl.program_id(0).to(tl.int64)
    offs_g = tl.program_id(1) * GROUPS_PER_PROG + tl.arange(0, GROUPS_PER_PROG)  # (G,)
    offs_j = tl.arange(0, 32)
    offs_k = offs_g[:, None] * 32 + offs_j[None, :]  # (G, 32)
    mask = offs_g[:, None] < num_groups
    x = tl.load(x_ptr + row * stride_xm + offs_k, mask=mask, other=0.0).to(tl.float32)
    if STOCHASTIC:
        target = tl.math.div_rn(tl.max(tl.abs(x), axis=1), 6.0)
    else:
        rms = tl.math.sqrt_rn(_pairwise_sum_32(x * x, GROUPS_PER_PROG) * 0.03125)
        target = rms * CLIP_OVER_6
    safe = tl.where(target > 0, target, 1.0)
    e = floor_log2(safe)
    e = tl.where(exp2_int(tl.minimum(tl.maximum(e, -127), 127)) < safe, e + 1, e)
    e = tl.minimum(tl.maximum(tl.where(target > 0, e, -127), -127), 127)  # (G,)
    v = tl.math.div_rn(x, exp2_int(e)[:, None])
    if STOCHASTIC:
        bits = tl.load(bits_ptr + row * stride_bm + offs_k, mask=mask, other=0)
        code = _sr_code(v, bits)
    else:
        code = e2m1_code(v)
    lo, hi = tl.split(tl.reshape(code, (GROUPS_PER_PROG, 16, 2)))  # columns 2j and 2j + 1
    offs_b = offs_g[:, None] * 16 + tl.arange(0, 16)[None, :]
    tl.store(packed_ptr + row * stride_pm + offs_b, (lo | (hi << 4)).to(tl.uint8), mask=offs_g[:, None] < num_groups)
    tl.store(scale_ptr + row * stride_sm + offs_g, (e + 127).to(tl.uint8), mask=offs_g < num_groups)


# ---------------------------------------------------------------------------------------------------------------
# Launchers


def grad_quant(x: torch.Tensor, granularity: str = "token") -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor(x, "x", "grad_quant", _X_DTYPES)
    check_device(x.device, "grad_quant")
    _check_granularity(granularity)
    if x.dim() < 1 or x.numel() == 0:
        raise ValueError(f"grad_quant: x must be non-empty with shape (..., K), got {tuple(x.shape)}")
    x2 = x.reshape(-1, x.shape[-1])  # (M, K)
    x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
    m, k = x2.shape
    scale = _grad_scale(x2.float(), granularity).contiguous()  # order-free maxima, as the reference's
    q = torch.empty((m, k), dtype=torch.float8_e5m2, device=x.device)
    block_k = min(triton.next_power_of_2(k), 1024)
    _grad_quant_kernel[(m, triton.cdiv(k, block_k))](
        x2, q.view(torch.uint8), scale, k, x2.stride(0), q.stride(0), scale.stride(0) if scale.shape[0] > 1 else 0,
        BLOCK_K=block_k, num_warps=4,
    )  # fmt: skip
    return q, scale


def _mx_train_quant(x: torch.Tensor, bits: torch.Tensor | None, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_mx(x, who, bits)
    check_device(x.device, who)
    x = x if x.stride(1) == 1 else x.contiguous()
    m, k = x.shape
    groups = k // MX_GROUP
    packed = torch.empty((m, k // 2), dtype=torch.uint8, device=x.device)
    scale = torch.empty((m, groups), dtype=torch.uint8, device=x.device)
    per_prog = min(triton.next_power_of_2(groups), 32)
    stochastic = bits is not None
    bits = bits.contiguous() if stochastic else scale  # unused without stochastic rounding
    _mx_train_quant_kernel[(m, triton.cdiv(groups, per_prog))](
        x, bits, packed, scale, groups, x.stride(0), bits.stride(0), packed.stride(0), scale.stride(0),
        CLIP_OVER_6=CLIP_RATIO / 6.0, STOCHASTIC=stochastic, GROUPS_PER_PROG=per_prog, num_warps=4,
    )  # fmt: skip
    return packed, scale


def mxfp4_sr_quantize(x: torch.Tensor, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _mx_train_quant(x, bits, "mxfp4_sr_quantize")


def mxfp4_clip_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _mx_train_quant(x, None, "mxfp4_clip_quantize")
