"""AWQ (Lin et al., 2024) for integer weight-only schemes: per pair of producer and consumers, search the
activation-aware scale s = mean|X|^alpha (alpha on a grid) that minimises the consumers' output error after
quantizing W * s, fold it in (the float model is unchanged), then search per-group clipping of the weights
against the same output error.

    run(model, layers, scheme, calib, grid=20, clip_grid=20)
"""

from __future__ import annotations

import torch
from torch import nn

from ..scheme import Scheme
from ..weight_formats.int_codec import grouped, int_codes, int_params, int_weight
from .rtn import rtn_weights
from .sequential import run_blocks
from .smooth import fold, fold_pairs

CLIP_ROWS = 512  # calibration rows used by the clipping search


def _fake_quant(w: torch.Tensor, scheme: Scheme, shrink=1.0) -> torch.Tensor:
    """Quantize-dequantize w (N, K) with the scheme's weight args, the range shrunk by `shrink` ((N, G) or 1)."""
    args = scheme.weights
    n, k = w.shape
    g, _ = grouped(w.float(), args)
    scale, zero = int_params(g, args.num_bits, args.symmetric, shrink)
    q = int_codes(g, scale, zero, args.num_bits, args.symmetric)
    deq = (q - (0 if zero is None else zero.unsqueeze(-1))) * scale.unsqueeze(-1)
    return deq.reshape(g.shape[0], -1)[:, : (n * k) // g.shape[0]].reshape(n, k)


def search_scale(x: torch.Tensor, mean_abs: torch.Tensor, weights: list[torch.Tensor], scheme: Scheme, grid: int):
    """The alpha in {0, 1/grid, ...} whose scales minimise the summed output error of the consumers."""
    refs = [x @ w.float().t() for w in weights]
    best, best_loss = torch.ones_like(mean_abs), None
    for i in range(grid):
        s = mean_abs.clamp(min=1e-4).pow(i / grid)
        s = s / (s.max() * s.min()).sqrt()
        loss = sum(
            ((x / s) @ _fake_quant(w.float() * s, scheme).t() - ref).pow(2).sum()
            for w, ref in zip(weights, refs, strict=True)
        )
        if best_loss is None or loss < best_loss:
            best, best_loss = s, loss
    return best


def clipped_weight(w: torch.Tensor, x: torch.Tensor, scheme: Scheme, grid: int):
    """Per output row and group, the range shrink in {1, 1 - 0.5/grid, ...} that minimises the output error."""
    args = scheme.weights
    n, k = w.shape
    g, group = grouped(w.float(), args)  # (N, G, group)
    xs = torch.nn.functional.pad(x[:CLIP_ROWS].float(), (0, -k % group)).reshape(-1, g.shape[1], group)  # (R, G, group)
    best_err, best_shrink = None, None
    for i in range(grid):
        shrink = 1.0 - i / (2 * grid)
        scale, zero = int_params(g, args.num_bits, args.symmetric, shrink)
        q = int_codes(g, scale, zero, args.num_bits, args.symmetric)
        diff = g - (q - (0 if zero is None else zero.unsqueeze(-1))) * scale.unsqueeze(-1)  # (N, G, group)
        err = torch.einsum("rgc,ngc->rng", xs, diff).pow(2).sum(dim=0)  # (N, G)
        if best_err is None:
            best_err, best_shrink = err, torch.ones_like(err)
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_shrink = torch.where(better, torch.full_like(err, shrink), best_shrink)
    scale, zero = int_params(g, args.num_bits, args.symmetric, best_shrink)
    q = int_codes(g, scale, zero, args.num_bits, args.symmetric).reshape(n, -1)[:, :k]
    return int_weight(q, scale, zero, group, args, with_activations=False)


def run(model: nn.Module, layers, scheme: Scheme, calib, make_quantized, grid: int = 20, clip_grid: int = 20):
    if calib is None:
        raise ValueError("AWQ needs calibration data")

    def process(block, linears, recorded):
        for pair in fold_pairs(block, linears):
            first = recorded[pair.consumers[0]]
            s = search_scale(first.x, first.mean_abs, [linears[c].weight for c in pair.consumers], scheme, grid)
            fold(pair, linears, s)
            for c in pair.consumers:  # what the consumer now sees: the inputs divided by s
                recorded[c].samples = [first.x / s]
        out = rtn_weights(linears, scheme)
        for name, layer in linears.items():
            if not name.endswith(("q_proj", "k_proj")):  # as AWQ: attention scores are left unclipped
                out[name] = clipped_weight(layer.weight, recorded[name].x, scheme, clip_grid)
        return out

    return run_blocks(model, layers, calib, process, make_quantized)
