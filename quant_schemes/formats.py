"""Weight codecs: from a float weight and its `QuantArgs` to stored codes and scales, and back.

    qw = quantize_weight(linear.weight, args)      # QuantizedWeight(kind, qdata, scale, zero_point, ...)
    w_hat = qw.dequantize()                         # (N, K) fp32, what the kernels compute with

Storage per kind (the layouts the kernels in `evalsuite.kernels` take):
- "int8":  qdata (N, K) int8 (signed, symmetric); scale (N, 1) or (1, 1) fp32.           -> int8_gemm
- "fp8":   qdata (N, K) float8_e4m3fn; scale (N, 1), (1, 1) or (ceil(N/128), ceil(K/128)).   -> fp8_gemm
- "wna16": qdata unsigned codes, (N, ceil(K/2)) uint8 two per byte for <= 4 bits, else (N, K) uint8;
           scale (N, G) fp32; zero_point (N, G) uint8 or None (symmetric: the storage midpoint). -> w4a16_gemm
- "mxfp4" / "nvfp4": packed E2M1 (N, K/2) uint8; scale (N, G) uint8 E8M0 / float8_e4m3fn;
           nvfp4 also global_scale () fp32.                                                -> fp4_gemm
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evalsuite.kernels import fp4_gemm, fp8_gemm, w4a16_gemm

from .args import Observer, QuantArgs, QuantType, Strategy

FP8_MAX = 448.0
MSE_GRID = 20  # shrink factors 1.0, 0.975, ..., 0.525 of the range, searched per group


@dataclass
class QuantizedWeight:
    kind: str
    shape: tuple[int, int]
    qdata: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None = None
    global_scale: torch.Tensor | None = None
    group_size: int | None = None
    bits: int = 8
    storage_bits: int = 8

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ("qdata", "scale", "zero_point", "global_scale")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def dequantize(self) -> torch.Tensor:
        n, k = self.shape
        if self.kind == "int8":
            return self.qdata.float() * self.scale.float()
        if self.kind == "fp8":
            if self.scale.shape == (n, 1) or self.scale.numel() == 1:
                return self.qdata.float() * self.scale.float()
            full = self.scale.float().repeat_interleave(fp8_gemm.BLOCK, 0).repeat_interleave(fp8_gemm.BLOCK, 1)
            return self.qdata.float() * full[:n, :k]
        if self.kind == "wna16":
            return w4a16_gemm.dequantize_wna16(
                self.qdata, self.scale, self.zero_point, self.group_size, k, self.storage_bits
            )
        return fp4_gemm.dequantize_fp4(self.qdata, self.scale, self.kind, k, self.global_scale)


def kind_of(args: QuantArgs, with_activations: bool) -> str:
    if args.type == QuantType.MXFP:
        return "mxfp4"
    if args.type == QuantType.NVFP:
        return "nvfp4"
    if args.type == QuantType.FLOAT:
        return "fp8"
    return "int8" if with_activations else "wna16"


def _grouped(w: torch.Tensor, args: QuantArgs) -> tuple[torch.Tensor, int]:
    """View weights as (N, G, group) for per-tensor, per-channel and per-group scales (padded with zeros)."""
    n, k = w.shape
    if args.strategy == Strategy.TENSOR:
        return w.reshape(1, 1, n * k), n * k
    group = k if args.strategy == Strategy.CHANNEL else args.group_size
    padded = torch.nn.functional.pad(w, (0, -k % group))
    return padded.reshape(n, -1, group), group


def _int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def _int_params(g: torch.Tensor, bits: int, symmetric: bool, shrink: float | torch.Tensor = 1.0):
    """Scale and zero point per group of g (..., group) with the range shrunk by `shrink`."""
    qmin, qmax = _int_range(bits, symmetric)
    if symmetric:
        amax = g.abs().amax(dim=-1) * shrink
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
        return scale, None
    lo = g.amin(dim=-1).clamp(max=0) * shrink
    hi = g.amax(dim=-1).clamp(min=0) * shrink
    scale = torch.where(hi > lo, (hi - lo) / (qmax - qmin), torch.ones_like(hi))
    zero = torch.clamp(torch.round(-lo / scale), qmin, qmax)
    return scale, zero


def _int_codes(g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int, symmetric: bool):
    qmin, qmax = _int_range(bits, symmetric)
    offset = 0 if zero is None else zero.unsqueeze(-1)
    return torch.clamp(torch.round(g / scale.unsqueeze(-1)) + offset, qmin, qmax)


def int_scales(g: torch.Tensor, args: QuantArgs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-group scale (and zero point) of grouped weights g (N, G, group), by the args' observer."""
    if args.observer == Observer.MINMAX:
        return _int_params(g, args.num_bits, args.symmetric)
    best_err = best_scale = best_zero = None
    for i in range(MSE_GRID):
        scale, zero = _int_params(g, args.num_bits, args.symmetric, shrink=1.0 - i / (2 * MSE_GRID))
        q = _int_codes(g, scale, zero, args.num_bits, args.symmetric)
        deq = (q - (0 if zero is None else zero.unsqueeze(-1))) * scale.unsqueeze(-1)
        err = (deq - g).pow(2).sum(dim=-1)  # (N, G)
        if best_err is None:
            best_err, best_scale, best_zero = err, scale, zero
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = None if zero is None else torch.where(better, zero, best_zero)
    return best_scale, best_zero


def quantize_int(w: torch.Tensor, args: QuantArgs, with_activations: bool) -> QuantizedWeight:
    n, k = w.shape
    g, group = _grouped(w.float(), args)  # (N, G, group)
    scale, zero = int_scales(g, args)  # (N, G)
    q = _int_codes(g, scale, zero, args.num_bits, args.symmetric).reshape(n, -1)[:, :k]  # (N, K)
    return int_weight(q, scale, zero, group, args, with_activations)


def int_weight(q, scale, zero, group: int, args: QuantArgs, with_activations: bool) -> QuantizedWeight:
    """Store integer codes q (N, K) (signed for symmetric, unsigned for asymmetric) with their per-group
    scale and zero point (N, G) in the layout of the kernel that will run them."""
    n, k = q.shape
    if with_activations:
        return QuantizedWeight("int8", (n, k), q.to(torch.int8), scale.reshape(-1, 1).contiguous(), bits=8)
    storage = 4 if args.num_bits <= 4 else 8
    codes = (q + (2 ** (storage - 1) if args.symmetric else 0)).to(torch.uint8)  # (N, K) unsigned
    if args.strategy == Strategy.TENSOR:
        scale = scale.reshape(1, 1).expand(n, 1)
        zero = None if zero is None else zero.reshape(1, 1).expand(n, 1)
        group = k
    qdata = w4a16_gemm.pack_int4(codes) if storage == 4 else codes
    return QuantizedWeight(
        "wna16",
        (n, k),
        qdata.contiguous(),
        scale.float().contiguous(),
        None if zero is None else zero.to(torch.uint8).contiguous(),
        group_size=group,
        bits=args.num_bits,
        storage_bits=storage,
    )


def quantize_fp8(w: torch.Tensor, args: QuantArgs) -> QuantizedWeight:
    n, k = w.shape
    w32 = w.float()
    if args.strategy == Strategy.BLOCK:
        bn, bk = args.block_structure
        if (bn, bk) != (fp8_gemm.BLOCK, fp8_gemm.BLOCK):
            raise ValueError(f"fp8 block scales are {fp8_gemm.BLOCK}x{fp8_gemm.BLOCK}, not {bn}x{bk}")
        padded = torch.nn.functional.pad(w32, (0, -k % bk, 0, -n % bn))
        blocks = padded.reshape(padded.shape[0] // bn, bn, padded.shape[1] // bk, bk)
        amax = blocks.abs().amax(dim=(1, 3))  # (ceil(N/128), ceil(K/128))
        scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
        full = scale.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:n, :k]
    else:
        if args.strategy not in (Strategy.TENSOR, Strategy.CHANNEL):
            raise ValueError(f"fp8 weights use strategy tensor, channel or block, not '{args.strategy.value}'")
        amax = w32.abs().amax() if args.strategy == Strategy.TENSOR else w32.abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax)).reshape(-1, 1)
        full = scale
    q = torch.clamp(w32 / full, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return QuantizedWeight("fp8", (n, k), q.contiguous(), scale.float().contiguous(), bits=8)


def quantize_fp4(w: torch.Tensor, args: QuantArgs) -> QuantizedWeight:
    n, k = w.shape
    if k % 2:
        raise ValueError(f"FP4 weights pack two values per byte: in_features must be even, got {k}")
    if args.type == QuantType.MXFP:
        packed, scale = fp4_gemm.mxfp4_quantize_ref(w)
        return QuantizedWeight("mxfp4", (n, k), packed, scale, group_size=32, bits=4, storage_bits=4)
    packed, scale, gs = fp4_gemm.nvfp4_quantize_ref(w)
    return QuantizedWeight("nvfp4", (n, k), packed, scale, global_scale=gs, group_size=16, bits=4, storage_bits=4)


def element_scales(qw: QuantizedWeight) -> torch.Tensor:
    """(N, K) fp32: the scale each element was divided by."""
    n, k = qw.shape
    if qw.kind == "wna16":
        return w4a16_gemm.expand_groups(qw.scale.float(), qw.group_size, k)
    if qw.kind in ("mxfp4", "nvfp4"):
        unit = fp4_gemm.dequantize_fp4(  # every code 2 (value 1.0) dequantizes to the group's scale
            torch.full((n, (k + 1) // 2), 0x22, dtype=torch.uint8, device=qw.qdata.device),
            qw.scale,
            qw.kind,
            k,
            qw.global_scale,
        )
        return unit
    if qw.kind == "fp8" and qw.scale.shape != (n, 1) and qw.scale.numel() != 1:
        full = qw.scale.float().repeat_interleave(fp8_gemm.BLOCK, 0).repeat_interleave(fp8_gemm.BLOCK, 1)
        return full[:n, :k]
    return qw.scale.float().expand(n, k)


def weight_stats(w: torch.Tensor, qw: QuantizedWeight) -> dict:
    """Elements clipped at the format's largest code, and scales that are zero: per layer, for the report."""
    scaled = w.float() / element_scales(qw).clamp(min=torch.finfo(torch.float32).tiny)
    if qw.kind in ("int8", "wna16"):
        if qw.zero_point is None:
            half = 2 ** (qw.bits - 1)
            clipped = (scaled > half - 0.5) | (scaled < -half - 0.5)
        else:
            zp = w4a16_gemm.expand_groups(qw.zero_point.float(), qw.group_size, qw.shape[1])
            clipped = (scaled + zp > 2**qw.bits - 0.5) | (scaled + zp < -0.5)
    else:
        clipped = scaled.abs() > (FP8_MAX if qw.kind == "fp8" else fp4_gemm.E2M1_MAX) * (1 + 1e-5)
    return {"saturated": int(clipped.sum()), "zero_scales": int((qw.scale.float() == 0).sum()), "elements": w.numel()}


def quantize_weight(w: torch.Tensor, args: QuantArgs, with_activations: bool = False) -> QuantizedWeight:
    """Round-to-nearest quantization of a (N, K) weight with the scales the args' observer picks."""
    kind = kind_of(args, with_activations)
    if kind in ("int8", "wna16"):
        return quantize_int(w, args, with_activations)
    if kind == "fp8":
        return quantize_fp8(w, args)
    return quantize_fp4(w, args)
