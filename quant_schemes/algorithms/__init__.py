"""Quantization algorithms by name. Each is `run(model, layers, scheme, calib=None, **options)` returning the
quantized weight of every target layer; `quantize()` then swaps the layers for QuantLinear modules.
Registered as "module:function" strings so that looking a name up imports nothing heavy."""

from __future__ import annotations

import importlib

from ..scheme import suggest

ALGORITHMS: dict[str, str] = {
    "rtn": "evalsuite.quant_schemes.algorithms.rtn:run",
}


class UnknownAlgorithmError(ValueError):
    pass


def check_algorithm(name: str) -> None:
    if name not in ALGORITHMS:
        raise UnknownAlgorithmError(
            f"unknown algorithm {name!r}.{suggest(name, list(ALGORITHMS))} Known: {', '.join(ALGORITHMS)}"
        )


def get_algorithm(name: str):
    check_algorithm(name)
    module, fn = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), fn)
