"""Rounding and encoding with explicit integer bit operations, shared by the quantize kernels.

The Triton interpreter's fp32 -> float8e4nv cast is not faithful (ties and binade carries go wrong), so every
kernel that must be bit-exact to a torch reference rounds here instead: the result is the same on the
interpreter and on every GPU backend.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def round_half_even(a):
    """fp32 values with |a| < 2**22 -> int32, rounded to nearest with ties to even (torch.round). Adding
    1.5 * 2**23 leaves a float whose unit is 1, so the FPU's own RNE rounding does the work."""
    return (a + 12582912.0).to(tl.int32, bitcast=True) - 0x4B400000


@triton.jit
def e4m3_bits(v):
    """fp32 -> float8_e4m3fn bit pattern (int32 in [0, 255]): round to nearest even, saturate at +-448.
    Bit-identical to torch's `v.clamp(-448, 448).to(torch.float8_e4m3fn)` for non-NaN v, -0.0 included."""
    a = tl.minimum(tl.abs(v), 448.0)
    bits = a.to(tl.int32, bitcast=True)
    # normal range (a >= 2**-6): round the 23-bit mantissa to 3 bits, carries run into the exponent
    rounded = bits + 0x7FFFF + ((bits >> 20) & 1)
    normal = (rounded >> 20) - (120 << 3)  # rebias the exponent from 127 to 7
    # subnormal range: a multiple of 2**-9, and 8 * 2**-9 lands exactly on the smallest normal code 0x08
    subnormal = round_half_even(a * 512.0)
    code = tl.where(a < 0.015625, subnormal, normal)
    sign = (v.to(tl.int32, bitcast=True) >> 31) & 1
    return code | (sign << 7)


@triton.jit
def e4m3_value(bits):
    """float8_e4m3fn bit pattern (int32 in [0, 255], never NaN) -> fp32, exactly."""
    mag = bits & 0x7F
    exp = mag >> 3
    normal = ((mag + (120 << 3)) << 20).to(tl.float32, bitcast=True)
    subnormal = (mag & 7).to(tl.float32) * 0.001953125  # m * 2**-9
    value = tl.where(exp == 0, subnormal, normal)
    return tl.where((bits & 0x80) != 0, -value, value)


@triton.jit
def e2m1_code(v):
    """fp32 (already divided by its scale) -> E2M1 code in [0, 15]; RNE, saturating at +-6. Mirrors
    `e2m1_encode_ref`: count the midpoints passed (ties go to the even code), sign bit for v < 0."""
    a = tl.abs(v)
    code = (a > 0.25).to(tl.int32)
    code += (a >= 0.75).to(tl.int32)
    code += (a > 1.25).to(tl.int32)
    code += (a >= 1.75).to(tl.int32)
    code += (a > 2.5).to(tl.int32)
    code += (a >= 3.5).to(tl.int32)
    code += (a > 5.0).to(tl.int32)
    return code | ((v < 0).to(tl.int32) << 3)


@triton.jit
def floor_log2(a):
    """floor(log2(a)) for finite a > 0 (subnormals included), as int32; the exponent `torch.frexp` gives, minus 1."""
    bits = a.to(tl.int32, bitcast=True)
    exp = (bits >> 23) & 0xFF
    scaled = ((a * 18446744073709551616.0).to(tl.int32, bitcast=True) >> 23) & 0xFF  # a * 2**64 is normal
    return tl.where(exp == 0, scaled - 127 - 64, exp - 127)


@triton.jit
def exp2_int(e):
    """2**e as fp32 for integer e in [-127, 127], exactly (2**-127 is subnormal)."""
    normal = ((e + 127) << 23).to(tl.float32, bitcast=True)
    subnormal = tl.full(e.shape, 0x00400000, tl.int32).to(tl.float32, bitcast=True)
    return tl.where(e >= -126, normal, subnormal)


@triton.jit
def bf16_rne(x):
    """fp32 -> fp32 holding the nearest (ties to even) bfloat16 value, for finite x. The interpreter's
    fp32 -> bf16 cast truncates; rounding here first makes that cast exact, as on the GPU."""
    bits = x.to(tl.int32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def rounded_to(v, DTYPE: tl.constexpr, BF16_RNE: tl.constexpr):
    """fp32 v rounded to DTYPE (to nearest even) and back: what storing it as a DTYPE tensor would keep."""
    if DTYPE != tl.float32:
        if BF16_RNE:
            v = bf16_rne(v)
        v = v.to(DTYPE).to(tl.float32)
    return v


@triton.jit
def normed_element(h, w, rstd, DTYPE: tl.constexpr, BF16_RNE: tl.constexpr):
    """One element of HF's Llama RMSNorm from fp32 copies of the 16-bit (or fp32) h and weight: h * rstd in fp32,
    rounded to the activation dtype, times the weight, rounded again (`_weight_only.rms_norm_ref`; the
    decode attention's q/k norms, `rope_ref`)."""
    return rounded_to(rounded_to(h * rstd, DTYPE, BF16_RNE) * w, DTYPE, BF16_RNE)
