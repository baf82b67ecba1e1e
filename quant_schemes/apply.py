"""`quantize(model, scheme, algorithm, calib, backend)`: the one entry point that turns a float model into a
quantized variant, in place.

    report = quantize(model, "W4A16", algorithm="gptq", calib=batches, backend="torch-ref")
    report.layers, report.kernels, report.quantized_bytes, report.layer_stats

`calib` is a list of (batch, seq_len) token-id tensors (evalsuite makes them from a calibration set with
the same tokenizer and batching as evaluation). Targets: "Linear" matches every nn.Linear, "re:<regex>"
matches module names. Ignore: a module name, its last components (e.g. "lm_head"), or "re:<regex>". A
scheme's `overrides` name layers (the same way) that stay in float or take another weight scheme, quantized by
round-to-nearest with it: the algorithm runs on the other layers only.

With calibration data, the algorithm runs layer by layer over the decoder blocks; target layers outside them
(lm_head, when `ignore` leaves it in) are quantized by round-to-nearest and get no SQNR; each layer's
`layer_stats[name]["algorithm"]` says which one quantized it. A Hadamard rotation of a weight tied to another
module (lm_head to embed_tokens) rotates an untied copy, so the other module is unchanged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from torch import nn

from . import kv_cache
from .algorithms import CALIBRATED, check_combination, get_algorithm
from .algorithms.rtn import rtn_weights
from .algorithms.sequential import run_blocks, split_by_block
from .backends import KernelBackend, get_backend
from .formats import weight_stats
from .linear import QuantLinear
from .rotation import HadamardRotated
from .scheme import Scheme, resolve


@dataclass
class QuantizationReport:
    scheme: Scheme
    algorithm: str
    backend: str
    rotation: str | None = None
    layers: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)
    float_bytes: int = 0  # the quantized layers' weights (and biases) before, at the model's dtype
    quantized_bytes: int = 0  # the same layers after: codes, scales, zero points, biases
    layer_stats: dict[str, dict] = field(default_factory=dict)  # saturated elements, zero scales, SQNR (dB)


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


def layer_schemes(layers, scheme: Scheme) -> dict[str, Scheme | None]:
    """The scheme of every target layer: the first override that names it (None: kept in float), else the
    scheme itself (without its overrides)."""
    base = scheme.without_overrides()
    out = {}
    for name in layers:
        found = next((o for o in scheme.overrides if _matches(name, (o.layers,))), None)
        out[name] = base if found is None else found.scheme
    return out


def _rtn_each(linears: dict[str, nn.Linear], schemes: dict[str, Scheme]) -> dict:
    return {name: rtn_weights({name: layer}, schemes[name])[name] for name, layer in linears.items()}


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def quantize(
    model: nn.Module,
    scheme: str | dict | Scheme,
    algorithm: str = "rtn",
    calib: list | None = None,
    backend: str | KernelBackend = "torch-ref",
    rotation: str | None = None,
    **options,
) -> QuantizationReport:
    scheme = resolve(scheme)
    check_combination(scheme, algorithm, rotation)
    if algorithm in CALIBRATED and not calib:
        raise ValueError(f"{algorithm} needs calibration data and got none")
    backend = get_backend(backend)
    report = QuantizationReport(scheme, algorithm, backend.name, rotation)
    if scheme.weights is not None:
        _quantize_weights(model, scheme, algorithm, calib, backend, rotation, report, options)
    if scheme.kv_cache is not None:
        modules = kv_cache.install(model, scheme.kv_cache)
        if not scheme.kv_cache.dynamic:
            if not calib:
                raise ValueError("static KV-cache scales need calibration data")
            kv_cache.calibrate(model, modules, calib)
        report.kernels.append(f"kv_cache[{scheme.kv_cache.describe()}]")
    return report


def _quantize_weights(model, scheme, algorithm, calib, backend, rotation, report, options) -> None:
    layers = target_layers(model, scheme)
    if not layers:
        raise ValueError(f"scheme targets {list(scheme.targets)} (ignoring {list(scheme.ignore)}) match no layer")
    if rotation == "hadamard":
        rotated = {}
        for name, layer in layers.items():
            _replace(model, name, HadamardRotated(layer, backend))
            rotated[f"{name}.linear"] = layer
        layers = rotated
        report.kernels.append("hadamard")
    schemes = layer_schemes(layers, scheme)
    unused = [o.layers for o in scheme.overrides if not any(_matches(n, (o.layers,)) for n in layers)]
    if unused:
        raise ValueError(f"overrides {unused} name no quantized layer; layers are named like {next(iter(layers))}")
    base = scheme.without_overrides()
    layers = {n: m for n, m in layers.items() if schemes[n] is not None}  # float overrides stay as they are
    main = {n: m for n, m in layers.items() if schemes[n] == base}

    def make_quantized(name, weight):
        acts = schemes[name].input_activations
        return QuantLinear(weight, layers[name].bias, acts, backend).to(layers[name].weight.device)

    # layer-by-layer calibration reaches only the decoder blocks: the rest (lm_head) is round-to-nearest.
    # Under rtn, overridden layers go through the same pass (and get their SQNR); under gptq they are rtn apart.
    per_layer = algorithm == "rtn" and len(main) < len(layers)
    chosen = layers if per_layer else main
    inside, outside = split_by_block(model, chosen) if calib is not None else (chosen, {})
    if per_layer and calib is not None:
        weights, sensitivity = run_blocks(
            model, inside, calib, lambda block, linears, recorded: _rtn_each(linears, schemes), make_quantized
        )
    elif per_layer:
        weights, sensitivity = _rtn_each(inside, schemes), {}
    else:
        weights, sensitivity = get_algorithm(algorithm)(model, inside, base, calib, make_quantized, **options)
    weights.update(_rtn_each(outside, schemes))
    weights.update(_rtn_each({n: m for n, m in layers.items() if n not in weights}, schemes))
    for name, layer in layers.items():
        report.layer_stats[name] = weight_stats(layer.weight.detach(), weights[name])  # after any folding
        report.layer_stats[name]["algorithm"] = algorithm if name in inside else "rtn"
        if schemes[name] != base:
            report.layer_stats[name]["scheme"] = schemes[name].describe()
        if name in sensitivity:  # None: the layer's output was reproduced exactly
            sqnr = sensitivity[name]
            report.layer_stats[name]["sqnr_db"] = sqnr if math.isfinite(sqnr) else None
        quantized = make_quantized(name, weights[name])
        _replace(model, name, quantized)
        report.layers.append(name)
        report.float_bytes += sum(p.numel() * p.element_size() for p in layer.parameters())
        report.quantized_bytes += quantized.nbytes
        for k in quantized.kernels:
            if k not in report.kernels:
                report.kernels.append(k)
