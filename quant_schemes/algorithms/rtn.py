"""Round-to-nearest: each weight quantized on its own with the scales its observer picks. With calibration
data it also measures each layer's output SQNR (per-layer sensitivity); it never needs it."""

from __future__ import annotations

from torch import nn

from ..scheme import Scheme
from .sequential import run_blocks


def rtn_weights(linears: dict[str, nn.Linear], scheme: Scheme) -> dict:
    fmt = scheme.resolved_format()
    return {name: fmt.quantize(layer.weight.detach(), scheme.weights) for name, layer in linears.items()}


def run(model: nn.Module, layers: dict[str, nn.Linear], scheme: Scheme, calib, make_quantized):
    if calib is None:
        return rtn_weights(layers, scheme), {}
    return run_blocks(
        model, layers, calib, lambda block, linears, recorded: rtn_weights(linears, scheme), make_quantized
    )
