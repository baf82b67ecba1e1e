"""Which of torch's attention kernels the harness's variable-shape forwards may use on a GPU.

Scoring batches and generation prefills change shape from one batch to the next (packed rows of different
widths, a boolean mask each). On an H100 with torch 2.11, `scaled_dot_product_attention` with a mask goes to
cuDNN first, and cuDNN builds an execution plan for every new shape on the host: in the bench's profile of
MMLU at scale 0.02 (bf16, Llama-3.1-8B shapes, 2026-12-06, `benchmarks/harness-h100-bf16-cudnn-profile/`),
`aten::_cudnn_attention_forward` took 1.58 s of host time over its 64 calls while the GPU idled for 1.86 of
the 2.96 s of requests (37% busy). Other projects report the same cost (about 0.4 s a shape on a B200).
Without cuDNN, a masked call goes to the memory-efficient kernel, which needs no plan; an unmasked causal
call to flash attention, as before. Off CUDA nothing changes.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

ALLOWED = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
DESCRIPTION = "SDPA: flash / memory-efficient / math (cuDNN off: it plans every new shape on the host)"


def variable_shape_attention(device: torch.device):
    """A context in which SDPA on `device` picks among ALLOWED: cuDNN is left out on CUDA."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return sdpa_kernel(ALLOWED)
