"""Integer codes and their per-tensor, per-channel or per-group scales (and zero points): what the int8 and
wna16 formats store, and what GPTQ and AWQ search over.

    q, scale, zero, group = int_quantize(w, args)            # (N, K) codes, (N, G) scale and zero point
    qw = int_weight(q, scale, zero, group, args, with_activations=False)
"""

from __future__ import annotations

import torch

from ..args import Observer, QuantArgs, Strategy
from . import format_for
from .base import QuantizedWeight

MSE_GRID = 20  # shrink factors 1.0, 0.975, ..., 0.525 of the range, searched per group


def grouped(w: torch.Tensor, args: QuantArgs) -> tuple[torch.Tensor, int]:
    """View weights as (N, G, group) for per-tensor, per-channel and per-group scales (padded with zeros)."""
    n, k = w.shape
    if args.strategy == Strategy.TENSOR:
        return w.reshape(1, 1, n * k), n * k
    group = k if args.strategy == Strategy.CHANNEL else args.group_size
    padded = torch.nn.functional.pad(w, (0, -k % group))
    return padded.reshape(n, -1, group), group


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def int_params(g: torch.Tensor, bits: int, symmetric: bool, shrink: float | torch.Tensor = 1.0):
    """Scale and zero point per group of g (..., group) with the range shrunk by `shrink`."""
    qmin, qmax = int_range(bits, symmetric)
    if symmetric:
        amax = g.abs().amax(dim=-1) * shrink
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
        return scale, None
    lo = g.amin(dim=-1).clamp(max=0) * shrink
    hi = g.amax(dim=-1).clamp(min=0) * shrink
    scale = torch.where(hi > lo, (hi - lo) / (qmax - qmin), torch.ones_like(hi))
    zero = torch.clamp(torch.round(-lo / scale), qmin, qmax)
    return scale, zero


def int_codes(g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int, symmetric: bool):
    qmin, qmax = int_range(bits, symmetric)
    offset = 0 if zero is None else zero.unsqueeze(-1)
    return torch.clamp(torch.round(g / scale.unsqueeze(-1)) + offset, qmin, qmax)


def int_scales(g: torch.Tensor, args: QuantArgs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-group scale (and zero point) of grouped weights g (N, G, group), by the args' observer."""
    if args.observer == Observer.MINMAX:
        return int_params(g, args.num_bits, args.symmetric)
    best_err = best_scale = best_zero = None
    for i in range(MSE_GRID):
        scale, zero = int_params(g, args.num_bits, args.symmetric, shrink=1.0 - i / (2 * MSE_GRID))
        q = int_codes(g, scale, zero, args.num_bits, args.symmetric)
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


def int_quantize(w: torch.Tensor, args: QuantArgs):
    """Round-to-nearest codes q (N, K) (signed for symmetric, unsigned for asymmetric), scale and zero point
    (N, G) and the group size."""
    n, k = w.shape
    g, group = grouped(w.float(), args)  # (N, G, group)
    scale, zero = int_scales(g, args)  # (N, G)
    q = int_codes(g, scale, zero, args.num_bits, args.symmetric).reshape(n, -1)[:, :k]  # (N, K)
    return q, scale, zero, group


def int_weight(q, scale, zero, group: int, args: QuantArgs, with_activations: bool) -> QuantizedWeight:
    """Integer codes q (N, K) with their scale and zero point (N, G) in the storage of the format these args
    get (int8 with input activations, else wna16)."""
    return format_for(args, with_activations).from_int_codes(q, scale, zero, group, args)


def int_saturated(scaled: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
    """(N, K) bool: integer elements (divided by their scale) that round past the largest or smallest code."""
    from evalsuite.kernels.w4a16_gemm import expand_groups

    if qw.zero_point is None:
        half = 2 ** (qw.bits - 1)
        return (scaled > half - 0.5) | (scaled < -half - 0.5)
    zp = expand_groups(qw.zero_point.float(), qw.group_size, qw.shape[1])
    return (scaled + zp > 2**qw.bits - 0.5) | (scaled + zp < -0.5)
