"""Quantization algorithms by name. Each module has `run(model, layers, scheme, calib, make_quantized,
**options)` returning the quantized weight of every target layer and, when calibration data was given, each
layer's output SQNR. Registered as module paths, and checked here against the scheme, so that validating a
suite file imports nothing heavy."""

from __future__ import annotations

import importlib

from ..args import Strategy
from ..scheme import Scheme, suggest

ALGORITHMS: dict[str, str] = {
    "rtn": "evalsuite.quant_schemes.algorithms.rtn",
    "gptq": "evalsuite.quant_schemes.algorithms.gptq",
    "awq": "evalsuite.quant_schemes.algorithms.awq",
    "smoothquant": "evalsuite.quant_schemes.algorithms.smoothquant",
}
CALIBRATED = {"gptq", "awq", "smoothquant"}
LEGAL = {
    "rtn": "any scheme",
    "gptq": "integer weight-only schemes with strategy group or channel (W4A16, W4A16_ASYM, W8A16)",
    "awq": "integer weight-only schemes of at most 4 bits with strategy group or channel (W4A16, W4A16_ASYM)",
    "smoothquant": "schemes with quantized activations (W8A8_INT8, W8A8_FP8)",
}


PER_ROW = (Strategy.GROUP, Strategy.CHANNEL)  # the weight strategies gptq and awq take
PER_ROW_ALGORITHMS = frozenset({"gptq", "awq"})  # they find scales per output row


class UnknownAlgorithmError(ValueError):
    pass


def check_algorithm(name: str, scheme: Scheme | None = None) -> None:
    """An unknown name, or a scheme the algorithm cannot quantize, is an error naming the legal choices."""
    if name not in ALGORITHMS:
        raise UnknownAlgorithmError(
            f"unknown algorithm {name!r}.{suggest(name, list(ALGORITHMS))} Known: {', '.join(ALGORITHMS)}"
        )
    if scheme is None:
        return
    w, fmt = scheme.weights, scheme.resolved_format()
    produced = fmt is not None and name in fmt.algorithms  # the format's weights are what the algorithm yields
    legal = {
        "rtn": True,
        "gptq": produced and w.strategy in PER_ROW,
        "awq": produced and w.num_bits <= 4 and w.strategy in PER_ROW,
        "smoothquant": produced,
    }[name]
    if not legal:
        hint = ""
        if fmt is not None and not PER_ROW_ALGORITHMS.isdisjoint(fmt.algorithms) and w.strategy not in PER_ROW:
            hint = (
                f" Strategy '{w.strategy.value}' shares one scale across the tensor, and {name} finds scales per "
                "output row: write weights.strategy: group (with a group_size, e.g. 128) or channel."
            )
        choices = "; ".join(f"{algo}: {what}" for algo, what in LEGAL.items())
        raise UnknownAlgorithmError(
            f"{name} cannot quantize this scheme ({scheme.describe()}): {name} takes {LEGAL[name]}.{hint} "
            f"Legal combinations: {choices}"
        )


ROTATIONS = ("hadamard",)


def check_combination(scheme: Scheme, algorithm: str, rotation: str | None = None) -> None:
    """Algorithm and rotation against the scheme, before any model loads; errors name the legal choices."""
    check_algorithm(algorithm, scheme)
    if scheme.overrides and (algorithm not in ("rtn", "gptq") or rotation is not None):
        raise UnknownAlgorithmError(
            f"per-layer overrides go with algorithm rtn or gptq and no rotation (got {algorithm}"
            f"{', rotation ' + rotation if rotation else ''}): {algorithm if algorithm != 'rtn' else rotation} "
            "changes layers the overrides leave alone"
        )
    for o in scheme.overrides:
        if o.scheme is not None:
            check_combination(o.scheme, "rtn")
    acts = scheme.input_activations
    if acts is not None and not acts.dynamic:
        raise UnknownAlgorithmError(
            "static input_activations (dynamic: false) need calibrated input scales, which no algorithm here "
            "computes (only a pre-quantized checkpoint brings them): set input_activations.dynamic: true"
        )
    if rotation is None:
        return
    if rotation not in ROTATIONS:
        raise UnknownAlgorithmError(f"unknown rotation {rotation!r}; known: {', '.join(ROTATIONS)}")
    if algorithm in ("awq", "smoothquant"):
        raise UnknownAlgorithmError(
            f"{algorithm} folds scales across layers, which a Hadamard rotation breaks: combine it with rtn or gptq"
        )
    if scheme.weights is None:
        raise UnknownAlgorithmError(
            "a Hadamard rotation goes with a weight scheme; this one quantizes only the KV cache"
        )


def get_algorithm(name: str):
    check_algorithm(name)
    return importlib.import_module(ALGORITHMS[name]).run
