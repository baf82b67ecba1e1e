"""GPTQ (Frantar et al., 2022) for integer weight-only schemes (W4A16, W4A16_ASYM, W8A16, ...).

Columns are quantized one at a time in blocks; each column's rounding error is spread over the columns not
yet quantized through the Cholesky factor of the damped inverse Hessian H = 2 X^T X / n of the layer's
calibration inputs. Group scales are found when a group's first column is reached (from the weights as
updated so far). With `act_order`, columns go in order of decreasing Hessian diagonal and the group scales
are fixed up front from the original weights ("static groups"), so groups stay contiguous in storage.

    run(model, layers, scheme, calib, damp=0.01, block_size=128, act_order=False)
"""

from __future__ import annotations

import torch
from torch import nn

from ..args import QuantArgs, Strategy
from ..scheme import Scheme
from ..weight_formats import QuantizedWeight
from ..weight_formats.int_codec import int_codes, int_scales, int_weight
from .sequential import run_blocks


def gptq_weight(
    w: torch.Tensor,
    hessian: torch.Tensor,
    args: QuantArgs,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
) -> QuantizedWeight:
    if args.strategy not in (Strategy.GROUP, Strategy.CHANNEL):
        raise ValueError(
            f"GPTQ finds scales per output row: weights.strategy must be group or channel, not '{args.strategy.value}'"
        )
    n, k = w.shape
    W = w.detach().float().clone()  # (N, K)
    H = hessian.float().clone()  # (K, K)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    group = {Strategy.GROUP: args.group_size, Strategy.CHANNEL: k}[args.strategy]
    n_groups = -(-k // group)
    scale = torch.zeros(n, n_groups, device=W.device)
    zero = None if args.symmetric else torch.zeros(n, n_groups, device=W.device)
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(k, device=W.device)
    if act_order or args.strategy == Strategy.CHANNEL:  # scales fixed up front from the original weights
        padded = torch.nn.functional.pad(W, (0, -k % group)).reshape(n, n_groups, group)
        s, z = int_scales(padded, args)
        scale[:] = s
        if zero is not None:
            zero[:] = z
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(k, device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    codes = torch.zeros(n, k, device=W.device)
    fixed = act_order or args.strategy == Strategy.CHANNEL
    for b0 in range(0, k, block_size):
        b1 = min(b0 + block_size, k)
        W1, err1, Hinv1 = W[:, b0:b1].clone(), torch.zeros(n, b1 - b0, device=W.device), Hinv[b0:b1, b0:b1]
        for i in range(b1 - b0):
            column = int(perm[b0 + i])
            g = column // group
            if not fixed and column % group == 0:  # group scales from the weights as updated so far
                window = torch.nn.functional.pad(W1[:, i : i + group], (0, group - W1[:, i : i + group].shape[1]))
                s, z = int_scales(window[:, None, :], args)  # by the args' observer, as RTN
                scale[:, g] = s[:, 0]
                if zero is not None:
                    zero[:, g] = z[:, 0]
            q = int_codes(
                W1[:, i : i + 1][:, None, :],
                scale[:, g : g + 1],
                None if zero is None else zero[:, g : g + 1],
                args.num_bits,
                args.symmetric,
            )[:, 0, 0]  # (N,)
            deq = (q - (0 if zero is None else zero[:, g])) * scale[:, g]
            codes[:, b0 + i] = q
            e = (W1[:, i] - deq) / Hinv1[i, i]
            W1[:, i:] -= e[:, None] * Hinv1[i, i:][None, :]
            err1[:, i] = e
        W[:, b1:] -= err1 @ Hinv[b0:b1, b1:]
    codes = codes[:, torch.argsort(perm)]
    return int_weight(codes, scale, zero, group, args, with_activations=False)


def run(model: nn.Module, layers, scheme: Scheme, calib, make_quantized, damp=0.01, block_size=128, act_order=False):
    """GPTQ over every target layer, block by block on the calibration batches."""
    if calib is None:
        raise ValueError("GPTQ needs calibration data")
    if scheme.weights.strategy == Strategy.GROUP and block_size % scheme.weights.group_size:
        block_size = scheme.weights.group_size

    def process(block, linears, recorded):
        return {
            name: gptq_weight(
                layer.weight,
                2 * recorded[name].hessian / recorded[name].rows,
                scheme.weights,
                damp,
                block_size,
                act_order,
            )
            for name, layer in linears.items()
        }

    return run_blocks(model, layers, calib, process, make_quantized, hessian=True)
