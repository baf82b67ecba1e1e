"""Weight formats by name, registered as "module:Class" strings and imported on first use. A scheme names one
with `weight_format`, or gets the one its weights' type picks (`default_format`).

    register_format("int6", "my_package.int6:Int6Format")     # or a WeightFormat instance
    fmt = format_for(scheme.weights, with_activations=False)    # WNA16Format() for int weights

Storage of the built-in formats (the layouts the kernels in `evalsuite.kernels` take):
- "int8":  qdata (N, K) int8 (signed, symmetric); scale (N, 1) or (1, 1) fp32.              -> int8_gemm
- "fp8":   qdata (N, K) float8_e4m3fn; scale (N, 1), (1, 1) or (ceil(N/128), ceil(K/128)).   -> fp8_gemm
- "wna16": qdata unsigned codes, (N, ceil(K/2)) uint8 two per byte for <= 4 bits, else (N, K) uint8;
           scale (N, G) fp32; zero_point (N, G) uint8 or None (symmetric: the storage midpoint). -> w4a16_gemm
- "mxfp4" / "nvfp4": packed E2M1 (N, K/2) uint8; scale (N, G) uint8 E8M0 / float8_e4m3fn;
           nvfp4 also global_scale () fp32 ((N,), one per row, in a fused layer).          -> fp4_gemm
"""

from __future__ import annotations

import importlib

from ..args import QuantArgs, QuantType
from .base import ONLY_8BIT_PAIRS, QuantizedWeight, WeightFormat

__all__ = [
    "FORMATS",
    "ONLY_8BIT_PAIRS",
    "QuantizedWeight",
    "WeightFormat",
    "default_format",
    "format_for",
    "get_format",
    "register_format",
]

_HERE = "evalsuite.quant_schemes.weight_formats"
FORMATS: dict[str, str | WeightFormat] = {
    "int8": f"{_HERE}.int8:Int8Format",
    "fp8": f"{_HERE}.fp8:Fp8Format",
    "wna16": f"{_HERE}.wna16:WNA16Format",
    "mxfp4": f"{_HERE}.fp4:MXFP4Format",
    "nvfp4": f"{_HERE}.fp4:NVFP4Format",
}


def register_format(name: str, fmt: str | WeightFormat) -> None:
    """Add a format under `name`: a WeightFormat instance or a lazy "module:Class" string."""
    if name in FORMATS:
        raise ValueError(f"weight format {name!r} is already registered; register the new one under another name")
    FORMATS[name] = fmt


def get_format(name: str) -> WeightFormat:
    if name not in FORMATS:
        raise ValueError(
            f"weight_format {name!r} is not registered; use one of {', '.join(FORMATS)} "
            "or register it first (evalsuite.quant_schemes.weight_formats.register_format)"
        )
    entry = FORMATS[name]
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        entry = FORMATS[name] = getattr(importlib.import_module(module), cls)()
    if entry.name != name:
        raise ValueError(f"weight format registered as {name!r} calls itself {entry.name!r}; register it by its name")
    return entry


def default_format(weights: QuantArgs, with_activations: bool) -> str:
    """The format of weights whose scheme names none: int8 (with input activations) or wna16 for type int,
    fp8 for float, mxfp4 and nvfp4 for mxfp and nvfp."""
    if weights.type == QuantType.INT:
        return "int8" if with_activations else "wna16"
    return {QuantType.FLOAT: "fp8", QuantType.MXFP: "mxfp4", QuantType.NVFP: "nvfp4"}[weights.type]


def format_for(weights: QuantArgs, with_activations: bool, name: str | None = None) -> WeightFormat:
    """The format named `name`, or the default one of these weights."""
    return get_format(name if name is not None else default_format(weights, with_activations))
