"""`quantize(model, scheme, algorithm, calib, backend)`: the one entry point that turns a float model into a
quantized variant, in place.

    report = quantize(model, "W4A16", algorithm="rtn", backend="torch-ref")
    report.layers, report.kernels, report.quantized_bytes

Targets: "Linear" matches every nn.Linear, "re:<regex>" matches module names. Ignore: a module name, its last
components (e.g. "lm_head"), or "re:<regex>".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from .algorithms import get_algorithm
from .formats import weight_stats
from .linear import QuantLinear
from .scheme import Scheme, resolve


@dataclass
class QuantizationReport:
    scheme: Scheme
    algorithm: str
    backend: str
    layers: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)
    float_bytes: int = 0  # the quantized layers' weights (and biases) before, at the model's dtype
    quantized_bytes: int = 0  # the same layers after: codes, scales, zero points, biases
    layer_stats: dict[str, dict] = field(default_factory=dict)  # per layer: saturated elements, zero scales


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.fullmatch(pattern[3:], name):
                return True
        elif name == pattern or name.endswith("." + pattern):
            return True
    return False


def target_layers(model: nn.Module, scheme: Scheme) -> dict[str, nn.Linear]:
    layers = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or _matches(name, scheme.ignore):
            continue
        if "Linear" in scheme.targets or _matches(name, tuple(t for t in scheme.targets if t.startswith("re:"))):
            layers[name] = module
    return layers


def quantize(
    model: nn.Module,
    scheme: str | dict | Scheme,
    algorithm: str = "rtn",
    calib=None,
    backend: str = "torch-ref",
    **options,
) -> QuantizationReport:
    scheme = resolve(scheme)
    report = QuantizationReport(scheme, algorithm, backend)
    if scheme.kv_cache is not None:
        raise NotImplementedError("KV-cache quantization is not implemented yet; drop kv_cache from the scheme")
    layers = target_layers(model, scheme)
    if not layers:
        raise ValueError(f"scheme targets {list(scheme.targets)} (ignoring {list(scheme.ignore)}) match no layer")
    weights = get_algorithm(algorithm)(model, layers, scheme, calib, **options)
    for name, layer in layers.items():
        report.layer_stats[name] = weight_stats(layer.weight.detach(), weights[name])
        quantized = QuantLinear(weights[name], layer.bias, scheme.input_activations, backend)
        quantized.to(layer.weight.device)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, quantized)
        report.layers.append(name)
        report.float_bytes += sum(p.numel() * p.element_size() for p in layer.parameters())
        report.quantized_bytes += quantized.nbytes
        for k in quantized.kernels:
            if k not in report.kernels:
                report.kernels.append(k)
    return report
