"""Folding per-channel scales between an operation and the linear layers that read its output, for the
Llama family (Llama, Qwen2, Mistral and alike): x' = x / s is folded into the producer, W' = W * s into the
consumers, so the float model computes the same function. SmoothQuant and AWQ both use it.

Pairs: input_layernorm -> q, k, v; post_attention_layernorm -> gate, up; up_proj -> down_proj; and, where
every query head has its own key/value head, v_proj -> o_proj.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FoldPair:
    producer: nn.Module  # an RMSNorm (scales its weight) or a Linear (scales its output rows)
    consumers: list[str]  # names of the linear layers that read the producer's output


def fold_pairs(block: nn.Module, linears: dict[str, nn.Linear]) -> list[FoldPair]:
    """The producer/consumer pairs of one decoder block whose consumers are all being quantized."""
    by_module = {id(m): n for n, m in linears.items()}
    attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
    candidates = []
    if attn is not None and hasattr(block, "input_layernorm"):
        candidates.append((block.input_layernorm, [getattr(attn, p, None) for p in ("q_proj", "k_proj", "v_proj")]))
    if mlp is not None and hasattr(block, "post_attention_layernorm"):
        candidates.append((block.post_attention_layernorm, [getattr(mlp, p, None) for p in ("gate_proj", "up_proj")]))
    if mlp is not None and hasattr(mlp, "up_proj") and hasattr(mlp, "down_proj"):
        candidates.append((mlp.up_proj, [mlp.down_proj]))
    if attn is not None and hasattr(attn, "v_proj") and hasattr(attn, "o_proj"):
        if attn.v_proj.out_features == attn.o_proj.in_features:  # no grouped-query sharing of value heads
            candidates.append((attn.v_proj, [attn.o_proj]))
    pairs = []
    for producer, consumers in candidates:
        if all(c is not None and id(c) in by_module for c in consumers):
            pairs.append(FoldPair(producer, [by_module[id(c)] for c in consumers]))
    return pairs


@torch.no_grad()
def fold(pair: FoldPair, linears: dict[str, nn.Linear], s: torch.Tensor) -> None:
    """Divide the producer's output channels by s and multiply the consumers' input columns by s."""
    producer = pair.producer
    if isinstance(producer, nn.Linear):
        producer.weight.div_(s[:, None].to(producer.weight.dtype))
        if producer.bias is not None:
            producer.bias.div_(s.to(producer.bias.dtype))
    else:
        producer.weight.div_(s.to(producer.weight.dtype))
    for name in pair.consumers:
        linears[name].weight.mul_(s[None, :].to(linears[name].weight.dtype))
