"""Round-to-nearest: each weight quantized on its own with the scales its observer picks; no calibration."""

from __future__ import annotations

from torch import nn

from ..formats import QuantizedWeight, quantize_weight
from ..scheme import Scheme


def run(model: nn.Module, layers: dict[str, nn.Linear], scheme: Scheme, calib=None) -> dict[str, QuantizedWeight]:
    with_activations = scheme.input_activations is not None
    return {
        name: quantize_weight(layer.weight.detach(), scheme.weights, with_activations) for name, layer in layers.items()
    }
