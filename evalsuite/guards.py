"""Numeric guards: NaN or Inf in a model's logits is a hard failure that says where it first appeared."""

from __future__ import annotations

import torch

from evalsuite.errors import UserError


class NonFiniteError(UserError, RuntimeError):
    pass


def _tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for o in output for t in _tensors(o)]
    return [v for v in getattr(output, "values", lambda: [])() if isinstance(v, torch.Tensor)]


@torch.no_grad()
def first_nonfinite_module(model: torch.nn.Module, input_ids: torch.Tensor) -> str | None:
    """Re-run one input with hooks on every module; the first module to finish with a non-finite output."""
    found: list[str] = []
    hooks = []

    def hook(name):
        def fn(_module, _inputs, output):
            if not found and any(t.is_floating_point() and not torch.isfinite(t).all() for t in _tensors(output)):
                found.append(name)

        return fn

    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        model(input_ids=input_ids)
    finally:
        for h in hooks:
            h.remove()
    return found[0] if found else None


def check_logits(logits: torch.Tensor, model: torch.nn.Module, inputs_of, where: str, describe) -> None:
    """Raise NonFiniteError naming the model, task, first bad sample and first bad layer. `inputs_of(row)`
    gives the (1, T) token ids the model had seen for that row; it is only called on failure."""
    finite = torch.isfinite(logits).flatten(1).all(dim=1)  # (B,)
    if bool(finite.all()):
        return
    row = int((~finite).nonzero()[0])
    layer = first_nonfinite_module(model, inputs_of(row))
    raise NonFiniteError(
        f"non-finite logits in {where}, sample {describe(row)}: the first layer with a NaN/Inf output is "
        f"{layer or 'not found (the logits themselves)'}"
    )
