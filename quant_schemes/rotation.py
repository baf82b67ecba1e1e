"""Hadamard rotation (QuaRot-style): y = W x = (W H)(H x) for an orthonormal, symmetric H. The weight is
rotated once, offline, before it is quantized; the activations are rotated online by the Hadamard kernel.
Rotating spreads outlier channels over many channels, which makes both sides easier to quantize.

H is block-diagonal with Walsh-Hadamard blocks of the largest power of two that divides in_features (at
most 16384), so any even in_features works.

    layer = HadamardRotated(linear, backend="torch-ref")     # same float function, rotated weight inside

The rotated weight is a new parameter, never written into the old one: a weight tied to another module
(lm_head to embed_tokens) is untied, and the other module keeps the float weight it had.
"""

from __future__ import annotations

import torch
from torch import nn

from .backends import TORCH_REF, Kernel, KernelBackend, get_backend

MAX_BLOCK = 16384
HADAMARD = Kernel("evalsuite.kernels.hadamard", "hadamard")


def rotation_block(in_features: int) -> int:
    block = min(in_features & -in_features, MAX_BLOCK)
    if block < 2:
        raise ValueError(f"Hadamard rotation needs an even in_features, got {in_features}")
    return block


def rotate(x: torch.Tensor, block: int, hadamard) -> torch.Tensor:
    """x (..., K) times the block-diagonal Hadamard matrix, with `hadamard` over the last dimension."""
    return hadamard(x.reshape(*x.shape[:-1], x.shape[-1] // block, block)).reshape(x.shape)


class HadamardRotated(nn.Module):
    """A linear layer that rotates its input; its inner `linear` holds the rotated weight (and is what a
    quantization algorithm sees and replaces)."""

    def __init__(self, linear: nn.Linear, backend: str | KernelBackend):
        super().__init__()
        self.block = rotation_block(linear.in_features)
        self._hadamard = get_backend(backend).resolve(HADAMARD)
        with torch.no_grad():
            reference = TORCH_REF.resolve(HADAMARD)
            rotated = rotate(linear.weight.float(), self.block, reference).to(linear.weight.dtype)
        linear.weight = nn.Parameter(rotated, requires_grad=linear.weight.requires_grad)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .linear import on_device

        with on_device(x):
            return self.linear(rotate(x, self.block, self._hadamard))

    def extra_repr(self) -> str:
        return f"block={self.block}"
