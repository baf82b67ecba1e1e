"""SmoothQuant (Xiao et al., 2023) for W8A8: migrate activation outliers into the weights with per-channel
scales s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), folded into the preceding norm or linear layer so the
float model is unchanged, then quantize weights and activations by round-to-nearest.

    run(model, layers, scheme, calib, alpha=0.5)
"""

from __future__ import annotations

import torch
from torch import nn

from ..scheme import Scheme
from .rtn import rtn_weights
from .sequential import run_blocks
from .smooth import fold, fold_pairs


def smoothing_scales(x_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    w_absmax = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0).float()  # (K,)
    s = x_absmax.float().clamp(min=1e-5).pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


def run(model: nn.Module, layers, scheme: Scheme, calib, make_quantized, alpha: float = 0.5):
    if calib is None:
        raise ValueError("SmoothQuant needs calibration data")
    if not 0 <= alpha <= 1:
        raise ValueError(f"SmoothQuant's alpha is a migration strength in [0, 1], not {alpha}")

    def process(block, linears, recorded):
        for pair in fold_pairs(block, linears):
            first = pair.consumers[0]
            s = smoothing_scales(recorded[first].absmax, [linears[c].weight for c in pair.consumers], alpha)
            fold(pair, linears, s)
        return rtn_weights(linears, scheme)

    return run_blocks(model, layers, calib, process, make_quantized)
