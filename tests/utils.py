"""Shared test helpers: one verbose comparison, SQNR, seeding."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sqnr(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 20 log10(|x| / |x - y|)."""
    reference, actual = reference.double(), actual.double()
    noise = (reference - actual).norm()
    return float("inf") if noise == 0 else float(20 * torch.log10(reference.norm() / noise))


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """(..., element_size) raw bytes of each element."""
    t = t.reshape(-1) if t.dim() == 0 else t
    return t.contiguous().view(torch.uint8).reshape(*t.shape, t.element_size())


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 0.0, rtol: float = 0.0, what: str = ""):
    """Like torch.testing.assert_close, but also rejects NaN/Inf and prints the first mismatches. With
    atol=rtol=0 the comparison is bit-exact (on the raw bytes, so -0.0 != 0.0 and NaN payloads count)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    a, e = actual.detach().cpu(), expected.detach().cpu()
    if a.is_floating_point():
        assert torch.isfinite(a.float()).all(), f"{what}: non-finite values in the result"
    if atol == 0 and rtol == 0:
        bad = (_bytes(a) != _bytes(e)).any(dim=-1)
    else:
        bad = (a.double() - e.double()).abs() > atol + rtol * e.double().abs()
    if bad.any():
        idx = bad.nonzero()[:8].tolist()
        detail = ", ".join(f"{tuple(i)}: {a[tuple(i)].item()} vs {e[tuple(i)].item()}" for i in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.numel()} elements differ; first: {detail}")
