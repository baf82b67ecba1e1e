"""Weight-only GEMM: 4-bit (two per byte) or 8-bit integer weights with per-group scales, times bf16/fp16/fp32
activations. Weights are dequantized in registers; products accumulate in fp32.

    y = w4a16_gemm(x, qweight, scale, zero_point, group_size, bits=4, bias=None)
    # x: (M, K); qweight: (N, ceil(K/2)) uint8 for bits=4 (low nibble = even column), (N, K) uint8 for bits=8
    # scale: (N, ceil(K/group_size)) fp32; zero_point: same shape uint8, or None for symmetric weights,
    # whose implicit zero point is 2**(bits-1). w[n, k] = (code[n, k] - zero_point[n, g]) * scale[n, g].
    h = w4a16_gemm(x, qweight, scale, zero_point, group_size, gated=True)
    # a fused [gate; up] layer (N = 2I rows): silu(gate) * up, (M, I), in the decode GEMV's epilogue
    y = w4a16_gemm(x, qweight, scale, zero_point, group_size, k_order="mma128")
    # qweight's codes stored in the tensor-core decode GEMV's order (`_int4_mma_gemv.to_mma_order`): the same
    # bytes permuted within each 128 columns; decode (M <= 8, bf16 x) runs that GEMV, other calls gather x's
    # columns into the stored order and run the kernels below on the stored bytes.
"""

from __future__ import annotations

import torch

from . import _int4_mma_gemv, _weight_only, paths
from ._launch import check_device, check_tensor


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) uint8 codes in [0, 15] -> (N, ceil(K/2)) uint8; column 2j in the low nibble, 2j+1 in the high."""
    if codes.shape[1] % 2:
        codes = torch.nn.functional.pad(codes, (0, 1))
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    """(N, ceil(K/2)) uint8 -> (N, K) uint8 codes."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)[:, :k]


def expand_groups(t: torch.Tensor, group_size: int, k: int) -> torch.Tensor:
    """(N, G) per-group values -> (N, K)."""
    return t.repeat_interleave(group_size, dim=1)[:, :k]


def dequantize_wna16(
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    group_size: int,
    k: int,
    bits: int = 4,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    codes = unpack_int4(qweight, k) if bits == 4 else qweight  # (N, K)
    zp = 2 ** (bits - 1) if zero_point is None else expand_groups(zero_point.float(), group_size, k)
    w = (codes.float() - zp) * expand_groups(scale.float(), group_size, k)  # (N, K) fp32
    return w.to(dtype)


def w4a16_gemm_ref(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    group_size: int,
    bits: int = 4,
    bias: torch.Tensor | None = None,
    k_order: str | None = None,
    gated: bool = False,
    norm: tuple[torch.Tensor, float] | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    if norm is not None:
        x = _weight_only.rms_norm_ref(x, *norm)
    if k_order is not None:
        x = x[..., _int4_mma_gemv.stored_order(x.shape[-1], x.device)]
    w = dequantize_wna16(qweight, scale, zero_point, group_size, x.shape[-1], bits, dtype=x.dtype)  # (N, K)
    y = x @ w.t()  # (M, N)
    y = y if bias is None else y + bias.to(y.dtype)
    return _weight_only.epilogue_ref(y, gated, residual)


_X_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_SCALE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_weight_only_x(x, who) -> torch.Tensor:
    """(..., K) activations -> (M, K) with K contiguous."""
    check_tensor(x, "x", who, _X_DTYPES)
    check_device(x.device, who)
    if x.dim() < 1 or x.numel() == 0:
        raise ValueError(f"{who}: x must be non-empty with shape (..., K), got {tuple(x.shape)}")
    x2 = x.reshape(-1, x.shape[-1])  # (M, K)
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def w4a16_gemm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    group_size: int,
    bits: int = 4,
    bias: torch.Tensor | None = None,
    k_order: str | None = None,
    gated: bool = False,
    norm: tuple[torch.Tensor, float] | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = x @ dequant(W).T (+ bias). `gated` (W = [gate; up]): silu(gate) * up. `norm` (weight (K,), eps): x is a
    decoder's residual stream and is normalized first, as HF's Llama RMSNorm does (`_weight_only.rms_norm_ref`).
    `residual` (x's shape but N wide): residual + y. The decode GEMV does all three in its prologue and epilogue."""
    who = "w4a16_gemm"
    x2 = check_weight_only_x(x, who)
    k = x2.shape[1]
    if bits not in (4, 8):
        raise ValueError(f"{who}: bits must be 4 (two codes per byte) or 8 (one per byte), got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"{who}: group_size must be a positive int, got {group_size!r}")
    width = -(-k // 2) if bits == 4 else k
    check_tensor(qweight, "qweight", who, (torch.uint8,), (None, width), x.device)
    n, groups = qweight.shape[0], -(-k // group_size)
    check_tensor(scale, "scale", who, _SCALE_DTYPES, (n, groups), x.device)
    if zero_point is not None:
        check_tensor(zero_point, "zero_point", who, (torch.uint8, torch.int8, torch.int32), (n, groups), x.device)
        zero_point = zero_point.contiguous()
    if bias is not None:
        check_tensor(bias, "bias", who, _SCALE_DTYPES, (n,), x.device)
    check_gated(gated, n, who)
    norm, res2 = check_norm_residual(norm, residual, x, n, gated, who)
    fmt = _weight_only.FMT_INT4 if bits == 4 else _weight_only.FMT_INT8
    if k_order is not None:
        check_k_order(k_order, bits, k, group_size, who)
        if norm is not None:  # the stored order's kernels take x normalized
            x2, norm = _weight_only.rms_norm_ref(x2, *norm), None
        if _int4_mma_gemv.runs(x2, group_size):
            y = torch.empty((x2.shape[0], n), dtype=x2.dtype, device=x2.device)
            paths.record(_weight_only.KERNEL_NAMES[fmt], paths.TRITON_GEMV, _int4_mma_gemv.WHY, x2.shape[0])
            _int4_mma_gemv.launch(x2, qweight.view(torch.int32), scale, zero_point, bias, group_size, y)
            y = _weight_only.epilogue_ref(y, gated, res2)
            return y.reshape(*x.shape[:-1], y.shape[1])
        x2 = x2[:, _int4_mma_gemv.stored_order(k, x2.device)]  # (M, K) in the order W's codes are stored
    y = _weight_only.launch(x2, qweight.contiguous(), scale.contiguous(), zero_point, None, bias, group_size, fmt,
                            gated=gated, norm=norm, residual=res2)  # fmt: skip
    return y.reshape(*x.shape[:-1], y.shape[1])


def check_norm_residual(norm, residual, x: torch.Tensor, n: int, gated: bool, who: str):
    """`norm` as (contiguous weight (K,), float eps) and `residual` as (M, N) with N contiguous, checked against
    x (..., K) and the output width N; ValueError names the argument and what would fix it."""
    k = x.shape[-1]
    if norm is not None:
        if not isinstance(norm, tuple) or len(norm) != 2:
            raise ValueError(f"{who}: norm must be a tuple (weight, eps), got {type(norm).__name__}")
        weight, eps = norm
        check_tensor(weight, "norm weight", who, (x.dtype,), (k,), x.device)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"{who}: norm eps must be a float >= 0 (the RMSNorm's variance_epsilon), got {eps!r}")
        norm = (weight.contiguous(), float(eps))
    if residual is None:
        return norm, None
    if gated:
        raise ValueError(f"{who}: residual and gated=True do not go together (a gate/up output has no residual)")
    check_tensor(residual, "residual", who, (x.dtype,), None, x.device)
    if tuple(residual.shape) != (*x.shape[:-1], n):
        raise ValueError(f"{who}: residual must have the output's shape {(*x.shape[:-1], n)}, got "
                         f"{tuple(residual.shape)}")  # fmt: skip
    res2 = residual.reshape(-1, n)
    return norm, res2 if res2.stride(-1) == 1 else res2.contiguous()


def check_gated(gated: bool, n: int, who: str) -> None:
    if not isinstance(gated, bool):
        raise ValueError(f"{who}: gated must be True or False, got {gated!r}")
    if gated and n % 2:
        raise ValueError(f"{who}: gated=True takes a fused [gate; up] weight, an even number of rows; got N={n}")


def check_k_order(k_order: str, bits: int, k: int, group_size: int, who: str) -> None:
    """The stored orders W4A16 layers may hold: "mma128" (`_int4_mma_gemv`), for 4-bit codes with K and the group
    size multiples of 128."""
    if k_order != _int4_mma_gemv.K_ORDER:
        raise ValueError(f"{who}: k_order must be None (K order) or {_int4_mma_gemv.K_ORDER!r}, got {k_order!r}")
    seg = _int4_mma_gemv.SEGMENT
    if bits != 4 or k % seg or group_size % seg:
        raise ValueError(
            f"{who}: k_order {k_order!r} holds 4-bit codes with K and group_size multiples of {seg}; got bits={bits}, "
            f"K={k}, group_size={group_size}"
        )
