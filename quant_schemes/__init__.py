"""What a quantization is: arguments, schemes and presets, weight formats, algorithms, and `quantize()`."""

from .args import Observer, QuantArgs, QuantType, Strategy
from .scheme import PRESETS, Scheme, UnknownSchemeError, resolve

__all__ = ["PRESETS", "Observer", "QuantArgs", "QuantType", "Scheme", "Strategy", "UnknownSchemeError", "resolve"]
