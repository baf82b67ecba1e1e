"""Sibling linear layers that read the same input (attention's q/k/v, the MLP's gate/up) as one layer, for the
graph decoder: one kernel launch and one wider GEMV where there were three or two. At batch 1 the k/v
projections of an 8B model (2 MiB of int4 each) take about as long as a launch; the graph decoder pays their
fixed cost once per fused group instead.

    group = fused(attn.q_proj, attn.k_proj, attn.v_proj)   # FusedGroup, or None when they cannot be fused
    q, k, v = group(x)

Fusing concatenates the weights along the output rows and makes each layer's own weights views into the
fused ones: nothing is stored twice and the layers keep working on their own (the HF forward, scoring). The
fused layer computes each output row as its own layer does, with the same kernel, so the results agree up to
the kernel's summation order for the wider shape. A group is fused once per model (kept with its first
layer); why one cannot be is returned instead and logged once.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from evalsuite.quant_schemes.linear import QuantLinear

log = logging.getLogger(__name__)
_GROUPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # first layer -> FusedGroup or the reason
_LOGGED: set[str] = set()


@dataclass
class FusedGroup:
    layer: nn.Module
    sizes: list[int]
    members: list[tuple[weakref.ref, dict[str, int]]]  # each layer and where its tensors live (views into layer)

    def __call__(self, x: torch.Tensor, norm: tuple | None = None) -> tuple[torch.Tensor, ...]:
        """The layers' outputs; `norm` (weight, eps): x is normalized first, by the layer's kernel
        (QuantLinear.forward; only for layers with `fuses_ops`)."""
        y = self.layer(x) if norm is None else self.layer(x, norm=norm)
        return y.split(self.sizes, dim=-1)

    def current(self, layers: tuple[nn.Module, ...]) -> bool:
        """Whether the group still computes these layers: the same modules, their tensors still the views into
        the fused ones (a layer replaced, or a weight reassigned, makes the group stale; in-place changes of a
        weight reach the fused layer through the view)."""
        return len(layers) == len(self.members) and all(
            ref() is layer and _pointers(layer) == pointers
            for layer, (ref, pointers) in zip(layers, self.members, strict=True)
        )


def _pointers(layer: nn.Module) -> dict[str, int]:
    return {name: t.data_ptr() for name, t in [*layer.named_parameters(), *layer.named_buffers()] if t is not None}


def _linear_concatenated(layers: list[nn.Linear]) -> nn.Linear:
    first = layers[0]
    if len({(layer.in_features, layer.weight.dtype, layer.weight.device) for layer in layers}) > 1:
        raise ValueError("the layers differ in in_features, dtype or device")
    if len({layer.bias is None for layer in layers}) > 1:
        raise ValueError("some of the layers have a bias and some do not")
    weight = torch.cat([layer.weight.detach() for layer in layers])
    bias = None if first.bias is None else torch.cat([layer.bias.detach() for layer in layers])
    fused = nn.Linear(first.in_features, weight.shape[0], bias=bias is not None, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=False)
    fused.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
    start = 0
    for layer in layers:
        rows = slice(start, start + layer.out_features)
        layer.weight = nn.Parameter(weight[rows], requires_grad=layer.weight.requires_grad)
        if bias is not None:
            layer.bias = nn.Parameter(bias[rows], requires_grad=layer.bias.requires_grad)
        start += layer.out_features
    return fused


def _concatenated(layers: list[nn.Module]) -> nn.Module:
    kinds = {type(layer) for layer in layers}
    if kinds == {QuantLinear}:
        return QuantLinear.concatenated(layers)
    if kinds == {nn.Linear}:
        return _linear_concatenated(layers)
    raise ValueError(f"layers of types {sorted(k.__name__ for k in kinds)} (fusable: all QuantLinear or all Linear)")


def fused(*layers: nn.Module) -> FusedGroup | str:
    """The layers as one FusedGroup, or a line saying why they stay apart (logged once)."""
    found = _GROUPS.get(layers[0])
    if isinstance(found, FusedGroup) and found.current(layers):
        return found
    if isinstance(found, str):
        return found
    try:
        group = _concatenated(list(layers))
    except ValueError as err:
        reason = f"{type(layers[0]).__name__} layers not fused: {err}"
        if reason not in _LOGGED:
            _LOGGED.add(reason)
            log.info("graph decoder: %s", reason)
        _GROUPS[layers[0]] = reason
        return reason
    members = [(weakref.ref(layer), _pointers(layer)) for layer in layers]
    found = _GROUPS[layers[0]] = FusedGroup(group, [layer.out_features for layer in layers], members)
    return found
