"""Fast Walsh-Hadamard transform over the last dimension (a power of two), normalised so H @ H.T = I.

    y = hadamard_ref(x)       # (..., n) -> (..., n), n a power of two; y = x @ H_n / sqrt(n)

Used to rotate weights offline and activations online before quantization (QuaRot-style): rotating both
sides of a matmul by the same orthogonal H leaves the float product unchanged while spreading outliers.
"""

from __future__ import annotations

import math

import torch


def check_power_of_two(n: int) -> None:
    if n < 1 or n & (n - 1):
        raise ValueError(f"hadamard: the last dimension must be a power of two, got {n}")


def hadamard_ref(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    check_power_of_two(n)
    y = x.float().reshape(-1, n)  # (R, n)
    h = 1
    while h < n:
        y = y.reshape(-1, n // (2 * h), 2, h)  # butterflies of span h
        y = torch.stack([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], dim=2)
        h *= 2
    return (y.reshape(x.shape) / math.sqrt(n)).to(x.dtype)
