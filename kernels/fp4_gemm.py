"""FP4 (E2M1) weights times bf16/fp16/fp32 activations, and the FP4 quantizers.

Two formats share the E2M1 element code (sign bit, 2 exponent bits, 1 mantissa bit; values 0, 0.5, 1, 1.5,
2, 3, 4, 6) packed two per byte, column 2j in the low nibble:
- MXFP4 (OCP Microscaling v1.0): one E8M0 scale per 32 values, X = 2**(floor(log2(amax)) - 2), stored as
  the biased exponent in a uint8 (127 means 2**0).
- NVFP4: one E4M3 scale per 16 values and an FP32 `global_scale` per tensor (compressed-tensors'
  convention: global_scale = 448 * 6 / amax, and a value dequantizes as code * scale / global_scale).

Elements round to nearest, ties to even, and saturate at +-6. Hopper has no FP4 tensor cores, so the GEMM
dequantizes in registers and multiplies in the activation dtype with fp32 accumulation.

    packed, scale = mxfp4_quantize_ref(w)                  # (N, K/2) uint8, (N, ceil(K/32)) uint8
    packed, scale, gs = nvfp4_quantize_ref(w)              # (N, K/2) uint8, (N, ceil(K/16)) e4m3, () fp32
    y = fp4_gemm_ref(x, packed, scale, "mxfp4")            # or (..., "nvfp4", global_scale=gs)
"""

from __future__ import annotations

import torch

from .w4a16_gemm import expand_groups, pack_int4, unpack_int4

E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# Midpoints between neighbouring E2M1 magnitudes, and whether a tie there rounds up (to the even code).
E2M1_MIDPOINTS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False))
GROUP = {"mxfp4": 32, "nvfp4": 16}
E8M0_BIAS = 127
E4M3_MAX = 448.0
E2M1_MAX = 6.0


def e2m1_encode_ref(v: torch.Tensor) -> torch.Tensor:
    """fp32 values (already divided by their scale) -> E2M1 codes in [0, 15], RNE, saturating at +-6."""
    a = v.abs()
    code = torch.zeros_like(v, dtype=torch.uint8)
    for mid, tie_up in E2M1_MIDPOINTS:
        code += (a >= mid if tie_up else a > mid).to(torch.uint8)
    return code | ((v < 0).to(torch.uint8) << 3)


def e2m1_decode(code: torch.Tensor) -> torch.Tensor:
    """E2M1 codes in [0, 15] -> fp32 values."""
    table = torch.tensor(E2M1_VALUES, device=code.device)
    mag = table[(code & 7).long()]
    return torch.where((code & 8) != 0, -mag, mag)


def _group_amax(w: torch.Tensor, group: int) -> torch.Tensor:
    n, k = w.shape
    padded = torch.nn.functional.pad(w.float(), (0, -k % group))
    return padded.abs().reshape(n, -1, group).amax(dim=-1)  # (N, ceil(K/group))


def mxfp4_quantize_ref(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = w.shape
    amax = _group_amax(w, 32)  # (N, G)
    exponent = torch.frexp(amax).exponent - 1  # floor(log2(amax)) for amax > 0
    shared = torch.where(amax > 0, exponent - 2, torch.full_like(exponent, -E8M0_BIAS)).clamp(-127, 127)
    scale = torch.ldexp(torch.ones_like(amax), shared)  # (N, G) exact powers of two
    codes = e2m1_encode_ref(w.float() / expand_groups(scale, 32, k))  # (N, K)
    return pack_int4(codes), (shared + E8M0_BIAS).to(torch.uint8)


def nvfp4_global_scale(w: torch.Tensor) -> torch.Tensor:
    amax = w.float().abs().amax()
    return torch.where(amax > 0, (E4M3_MAX * E2M1_MAX) / amax, torch.ones_like(amax))


def nvfp4_quantize_ref(
    w: torch.Tensor, global_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, k = w.shape
    gs = nvfp4_global_scale(w) if global_scale is None else global_scale.float().reshape(())
    block = (_group_amax(w, 16) / E2M1_MAX * gs).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)  # (N, G)
    effective = expand_groups(block.float() / gs, 16, k)  # (N, K)
    safe = torch.where(effective > 0, effective, torch.ones_like(effective))
    codes = torch.where(effective > 0, e2m1_encode_ref(w.float() / safe), torch.zeros_like(w, dtype=torch.uint8))
    return pack_int4(codes), block, gs


def dequantize_fp4(
    packed: torch.Tensor,
    scale: torch.Tensor,
    fmt: str,
    k: int,
    global_scale: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    values = e2m1_decode(unpack_int4(packed, k))  # (N, K) fp32
    if fmt == "mxfp4":
        group_scale = torch.ldexp(torch.ones_like(scale, dtype=torch.float32), scale.int() - E8M0_BIAS)
    else:
        group_scale = scale.float() / global_scale.float()
    return (values * expand_groups(group_scale, GROUP[fmt], k)).to(dtype)


def fp4_gemm_ref(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    fmt: str,
    global_scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    w = dequantize_fp4(packed, scale, fmt, x.shape[-1], global_scale, dtype=x.dtype)  # (N, K)
    y = x @ w.t()  # (M, N)
    return y if bias is None else y + bias.to(y.dtype)
