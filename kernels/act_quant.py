"""Dynamic activation quantization to int8 or FP8 E4M3: per token (row), per tensor, or per token and group
of `g` columns (the activation side of 128x128 block-scaled FP8).

    q, scale = act_quant(x, "int8")               # q: (M, K) int8, scale: (M, 1) fp32, x ~ q * scale
    q, scale = act_quant_ref(x, "fp8", 128)       # scale: (M, ceil(K/128)); the pure-torch definition

Absmax scaling, saturating; the kernel is bit-exact to the reference. An all-zero row (or group) gets the
finite scale AMAX_FLOOR / QMAX and all-zero codes.
"""

from __future__ import annotations

import torch

QMAX = {"int8": 127.0, "fp8": 448.0}
AMAX_FLOOR = 1e-12
Granularity = str | int  # "token", "tensor", or a group size along K


def _amax(x32: torch.Tensor, granularity: Granularity) -> torch.Tensor:
    m, k = x32.shape
    if granularity == "token":
        return x32.abs().amax(dim=-1, keepdim=True)  # (M, 1)
    if granularity == "tensor":
        return x32.abs().amax().reshape(1, 1)  # (1, 1)
    padded = torch.nn.functional.pad(x32, (0, -k % granularity))
    return padded.abs().reshape(m, -1, granularity).amax(dim=-1)  # (M, ceil(K/g))


def act_quant_ref(
    x: torch.Tensor, dtype: str = "int8", granularity: Granularity = "token"
) -> tuple[torch.Tensor, torch.Tensor]:
    qmax = QMAX[dtype]
    x32 = x.reshape(-1, x.shape[-1]).float()  # (M, K)
    scale = torch.clamp(_amax(x32, granularity), min=AMAX_FLOOR) / qmax
    full = scale if scale.shape[1] == 1 else scale.repeat_interleave(granularity, dim=1)[:, : x32.shape[1]]
    scaled = torch.clamp(x32 / full, -qmax, qmax)
    if dtype == "int8":
        return torch.round(scaled).to(torch.int8), scale
    return scaled.to(torch.float8_e4m3fn), scale
