"""The SwiGLU MLP during training: its product measured every step, and Smooth-SwiGLU.

    mlps = wrap_mlps(model, smooth=True)     # each decoder layer's mlp -> SwiGLUMonitor
    ...train...; mlps[0].product_amax        # max |silu(gate(x)) * up(x)| of the last step, layer 0
    unwrap_mlps(model)                       # Smooth-SwiGLU's last scales folded into up_proj and down_proj

SwiGLU's product h = silu(gate(x)) * up(x) feeds down_proj. Smooth-SwiGLU (Fishman et al., 2024) quantizes
h / s instead of h, s a per-channel scale, and gives down_proj the weight W * s, so the float function is
unchanged while each channel of down_proj's quantized input spans at most 1. Here s is the power of two at or
above the channel's max |h| in the current batch (a power of two keeps h / s and W * s exact), recomputed each
step and held fixed in the backward pass. To save, the last step's s is folded into the weights: up_proj's
row c divided by s_c and down_proj's column c multiplied by it, which computes the same function exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from .linear import LowPrecisionLinear

SWIGLU_PARTS = ("gate_proj", "up_proj", "down_proj", "act_fn")


def _pow2_at_or_above(amax: torch.Tensor) -> torch.Tensor:
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    mantissa, exponent = torch.frexp(safe)
    exponent = torch.where(mantissa == 0.5, exponent - 1, exponent)  # an exact power of two stays itself
    return torch.ldexp(torch.ones_like(safe), exponent)


class SwiGLUMonitor(nn.Module):
    """A LlamaMLP-style module (gate_proj, up_proj, down_proj, act_fn) that records, each forward, max |h| of
    its product (`product_amax`) and of what down_proj quantizes (`down_input_amax`; with smoothing h / s),
    and that applies Smooth-SwiGLU when `smooth`."""

    def __init__(self, mlp: nn.Module, smooth: bool, record: bool = True):
        super().__init__()
        self.mlp, self.smooth, self.record = mlp, smooth, record
        self.register_buffer("scale", torch.ones(mlp.down_proj.weight.shape[1]), persistent=False)
        self.product_amax = 0.0
        self.down_input_amax = 0.0
        self.down_input_ratio = 0.0  # max |input| / rms(input) of down_proj's quantized input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mlp = self.mlp
        h = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)  # (B, T, I)
        down = mlp.down_proj
        if not self.record and not self.smooth:
            return down(h)
        channel_amax = h.detach().abs().reshape(-1, h.shape[-1]).amax(dim=0)  # (I,)
        if self.smooth:
            self.scale = _pow2_at_or_above(channel_amax.float())
            h = h / self.scale.to(h.dtype)
            weight = down.weight * self.scale[None, :]  # (H, I): the gradient reaches the master weight
            y = down(h, weight) if isinstance(down, LowPrecisionLinear) else nn.functional.linear(h, weight, down.bias)
        else:
            y = down(h)
        if not self.record:  # the statistics synchronize a GPU three times per layer: off when timing
            return y
        self.product_amax = float(channel_amax.max())
        flat = h.detach().float()
        self.down_input_amax = float(flat.abs().max())
        self.down_input_ratio = self.down_input_amax / max(float(flat.pow(2).mean().sqrt()), 1e-30)
        return y


def wrap_mlps(model: nn.Module, smooth: bool, record: bool = True) -> list[SwiGLUMonitor]:
    monitors = []
    for i, layer in enumerate(model.get_decoder().layers):
        mlp = layer.mlp
        missing = [p for p in SWIGLU_PARTS if not hasattr(mlp, p)]
        if missing:
            raise ValueError(
                f"layer {i}: {type(mlp).__name__} is not a SwiGLU MLP (no {', '.join(missing)}); Smooth-SwiGLU and "
                "the SwiGLU statistics need gate_proj, up_proj, down_proj and act_fn"
            )
        layer.mlp = SwiGLUMonitor(mlp, smooth, record)
        monitors.append(layer.mlp)
    return monitors


@torch.no_grad()
def unwrap_mlps(model: nn.Module) -> None:
    """Put the MLPs back; a smoothed one's last scales are folded into up_proj and down_proj."""
    for layer in model.get_decoder().layers:
        monitor = layer.mlp
        if not isinstance(monitor, SwiGLUMonitor):
            continue
        if monitor.smooth:
            s = monitor.scale.to(monitor.mlp.up_proj.weight.dtype)
            monitor.mlp.up_proj.weight.div_(s[:, None])
            if monitor.mlp.up_proj.bias is not None:
                monitor.mlp.up_proj.bias.div_(s)
            monitor.mlp.down_proj.weight.mul_(s[None, :])
        layer.mlp = monitor.mlp
