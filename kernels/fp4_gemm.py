"""FP4 (E2M1) weights times bf16/fp16/fp32 activations, and the FP4 quantizers.

Two formats share the E2M1 element code (sign bit, 2 exponent bits, 1 mantissa bit; values 0, 0.5, 1, 1.5,
2, 3, 4, 6) packed two per byte, column 2j in the low nibble:
- MXFP4 (OCP Microscaling v1.0): one E8M0 scale per 32 values, X = 2**(floor(log2(amax)) - 2), stored as
  the biased exponent in a uint8 (127 means 2**0).
- NVFP4: one E4M3 scale per 16 values and an FP32 `global_scale` per tensor (compressed-tensors'
  convention: global_scale = 448 * 6 / amax, and a value dequantizes as code * scale / global_scale). The GEMM
  and dequantize also take one global scale per output row, (N,): layers fused along their output rows
  (`QuantLinear.concatenated`) keep each layer's own value on its rows.

Elements round to nearest, ties to even, and saturate at +-6. Hopper has no FP4 tensor cores, so the GEMM
dequantizes in registers and multiplies in the activation dtype with fp32 accumulation.

    packed, scale = mxfp4_quantize_ref(w)                  # (N, K/2) uint8, (N, ceil(K/32)) uint8
    packed, scale, gs = nvfp4_quantize_ref(w)              # (N, K/2) uint8, (N, ceil(K/16)) e4m3, () fp32
    y = fp4_gemm_ref(x, packed, scale, "mxfp4")            # or (..., "nvfp4", global_scale=gs), gs () or (N,)
    h = fp4_gemm(x, packed, scale, "mxfp4", gated=True)    # fused [gate; up] rows: silu(gate) * up, (M, N/2)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _weight_only
from ._bits import e2m1_code, e4m3_bits, e4m3_value, exp2_int, floor_log2
from ._launch import check_device, check_tensor
from .w4a16_gemm import check_gated, check_norm_residual, check_weight_only_x, expand_groups, pack_int4, unpack_int4

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
    else:  # one global scale, or one per output row (a fused layer's): (1, 1) or (N, 1)
        group_scale = scale.float() / global_scale.float().reshape(-1, 1)
    return (values * expand_groups(group_scale, GROUP[fmt], k)).to(dtype)


def fp4_gemm_ref(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    fmt: str,
    global_scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    gated: bool = False,
    norm: tuple[torch.Tensor, float] | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    if norm is not None:
        x = _weight_only.rms_norm_ref(x, *norm)
    w = dequantize_fp4(packed, scale, fmt, x.shape[-1], global_scale, dtype=x.dtype)  # (N, K)
    y = x @ w.t()  # (M, N)
    y = y if bias is None else y + bias.to(y.dtype)
    return _weight_only.epilogue_ref(y, gated, residual)


def fp4_gemm(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    fmt: str,
    global_scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    gated: bool = False,
    norm: tuple[torch.Tensor, float] | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = x @ dequant(W).T (+ bias); `gated`, `norm` and `residual` as in `w4a16_gemm`."""
    who = "fp4_gemm"
    if fmt not in GROUP:
        raise ValueError(f"{who}: fmt must be 'mxfp4' or 'nvfp4', got {fmt!r}")
    x2 = check_weight_only_x(x, who)
    k = x2.shape[1]
    check_tensor(packed, "packed", who, (torch.uint8,), (None, -(-k // 2)), x.device)
    n, groups = packed.shape[0], -(-k // GROUP[fmt])
    scale_dtype = torch.uint8 if fmt == "mxfp4" else torch.float8_e4m3fn
    check_tensor(scale, "scale", who, (scale_dtype,), (n, groups), x.device)
    if fmt == "nvfp4":
        if global_scale is None:
            raise ValueError(f"{who}: nvfp4 needs global_scale, the () fp32 tensor nvfp4_quantize returned")
        check_tensor(global_scale, "global_scale", who, (torch.float32,), None, x.device)
        if global_scale.numel() != 1 and tuple(global_scale.shape) != (n,):
            raise ValueError(
                f"{who}: global_scale must hold one value or one per output row, shape ({n},), got shape "
                f"{tuple(global_scale.shape)}"
            )
        global_scale = global_scale.contiguous()
    elif global_scale is not None:
        raise ValueError(f"{who}: mxfp4 takes no global_scale (its E8M0 scales are absolute); pass None")
    if bias is not None:
        check_tensor(bias, "bias", who, (torch.float32, torch.bfloat16, torch.float16), (n,), x.device)
    check_gated(gated, n, who)
    norm, res2 = check_norm_residual(norm, residual, x, n, gated, who)
    code = _weight_only.FMT_MXFP4 if fmt == "mxfp4" else _weight_only.FMT_NVFP4
    scale_bytes = scale.contiguous().view(torch.uint8)
    y = _weight_only.launch(x2, packed.contiguous(), scale_bytes, None, global_scale, bias, GROUP[fmt], code,
                            gated=gated, norm=norm, residual=res2)  # fmt: skip
    return y.reshape(*x.shape[:-1], y.shape[1])


# ---------------------------------------------------------------------------------------------------------------
# Quantize kernels (bit-exact to mxfp4_quantize_ref / nvfp4_quantize_ref)


@triton.jit
def _fp4_quantize_kernel(
    # pointers
    w_ptr,
    packed_ptr,
    scale_ptr,
    gs_ptr,
    # sizes
    K,
    num_groups,
    # strides
    stride_wn,
    stride_pn,
    stride_sn,
    # meta-parameters
    IS_NVFP4: tl.constexpr,
    GROUP: tl.constexpr,
    GROUPS_PER_PROG: tl.constexpr,
):
    """Program (row, block of groups): even and odd columns of each group as two (G, GROUP/2) tiles, so the
    codes pack into bytes without a shuffle. Columns past K read 0 and encode to code 0, like pack_int4's pad."""
    row = tl.program_id(0).to(tl.int64)
    offs_g = tl.program_id(1) * GROUPS_PER_PROG + tl.arange(0, GROUPS_PER_PROG)  # (G,)
    offs_j = tl.arange(0, GROUP // 2)
    k_even = offs_g[:, None] * GROUP + 2 * offs_j[None, :]  # (G, GROUP/2)
    w_row = w_ptr + row * stride_wn
    w_lo = tl.load(w_row + k_even, mask=k_even < K, other=0.0).to(tl.float32)
    w_hi = tl.load(w_row + k_even + 1, mask=k_even + 1 < K, other=0.0).to(tl.float32)
    amax = tl.maximum(tl.max(tl.abs(w_lo), axis=1), tl.max(tl.abs(w_hi), axis=1))  # (G,)
    if IS_NVFP4:
        gs = tl.load(gs_ptr)
        block = e4m3_bits(tl.minimum(tl.math.div_rn(amax, 6.0) * gs, 448.0))  # (G,) E4M3 bits
        effective = tl.math.div_rn(e4m3_value(block), gs)
        safe = tl.where(effective > 0, effective, 1.0)[:, None]
        code_lo = tl.where(effective[:, None] > 0, e2m1_code(tl.math.div_rn(w_lo, safe)), 0)
        code_hi = tl.where(effective[:, None] > 0, e2m1_code(tl.math.div_rn(w_hi, safe)), 0)
        scale_byte = block
    else:
        shared = tl.where(amax > 0, floor_log2(tl.where(amax > 0, amax, 1.0)) - 2, -127)
        shared = tl.minimum(tl.maximum(shared, -127), 127)
        scale = exp2_int(shared)[:, None]  # exact powers of two
        code_lo = e2m1_code(tl.math.div_rn(w_lo, scale))
        code_hi = e2m1_code(tl.math.div_rn(w_hi, scale))
        scale_byte = shared + 127
    byte = offs_g[:, None] * (GROUP // 2) + offs_j[None, :]
    tl.store(packed_ptr + row * stride_pn + byte, (code_lo | (code_hi << 4)).to(tl.uint8), mask=k_even < K)
    tl.store(scale_ptr + row * stride_sn + offs_g, scale_byte.to(tl.uint8), mask=offs_g < num_groups)


def _fp4_quantize(w: torch.Tensor, fmt: str, global_scale: torch.Tensor | None):
    who = f"{fmt}_quantize"
    check_tensor(w, "w", who, (torch.float32, torch.bfloat16, torch.float16), (None, None))
    check_device(w.device, who)
    n, k = w.shape
    if n == 0 or k == 0:
        raise ValueError(f"{who}: w must be a non-empty (N, K) matrix, got {tuple(w.shape)}")
    w = w if w.stride(1) == 1 else w.contiguous()
    group = GROUP[fmt]
    groups = -(-k // group)
    packed = torch.empty((n, -(-k // 2)), dtype=torch.uint8, device=w.device)
    scale = torch.empty((n, groups), dtype=torch.uint8, device=w.device)
    per_prog = max(1, min(triton.next_power_of_2(groups), 1024 // group))
    _fp4_quantize_kernel[(n, triton.cdiv(groups, per_prog))](
        w, packed, scale, global_scale if global_scale is not None else scale, k, groups,
        w.stride(0), packed.stride(0), scale.stride(0),
        IS_NVFP4=fmt == "nvfp4", GROUP=group, GROUPS_PER_PROG=per_prog, num_warps=4,
    )  # fmt: skip
    return packed, scale


def mxfp4_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _fp4_quantize(w, "mxfp4", None)


def nvfp4_quantize(
    w: torch.Tensor, global_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if global_scale is not None:
        check_tensor(global_scale, "global_scale", "nvfp4_quantize", (torch.float32, torch.bfloat16, torch.float16))
        if global_scale.numel() != 1:
            raise ValueError(f"nvfp4_quantize: global_scale must hold one value, got shape {tuple(global_scale.shape)}")
    gs = nvfp4_global_scale(w) if global_scale is None else global_scale.float().reshape(())
    packed, scale = _fp4_quantize(w, "nvfp4", gs.to(w.device))
    return packed, scale.view(torch.float8_e4m3fn), gs
