"""Weight codecs: from a float weight and its `QuantArgs` to stored codes and scales, and back, through the
weight format the args get (see `weight_formats` for the formats and their storage).

    qw = quantize_weight(linear.weight, args)      # QuantizedWeight(kind, qdata, scale, zero_point, ...)
    w_hat = qw.dequantize()                         # (N, K) fp32, what the kernels compute with
"""

from __future__ import annotations

import torch

from .args import QuantArgs
from .weight_formats import QuantizedWeight, format_for


def weight_stats(w: torch.Tensor, qw: QuantizedWeight) -> dict:
    """Elements clipped at the format's largest code, and scales that are zero: per layer, for the report."""
    fmt = qw.format
    scaled = w.float() / fmt.element_scales(qw).clamp(min=torch.finfo(torch.float32).tiny)
    clipped = fmt.saturated(scaled, qw)
    return {"saturated": int(clipped.sum()), "zero_scales": int((qw.scale.float() == 0).sum()), "elements": w.numel()}


def quantize_weight(
    w: torch.Tensor, args: QuantArgs, with_activations: bool = False, weight_format: str | None = None
) -> QuantizedWeight:
    """Round-to-nearest quantization of a (N, K) weight with the scales the args' observer picks, in the
    format named `weight_format` (None: the one the args get)."""
    return format_for(args, with_activations, weight_format).quantize(w, args)
