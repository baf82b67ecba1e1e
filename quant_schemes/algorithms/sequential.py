"""Layer-by-layer calibration, shared by every calibrated algorithm (and by RTN for per-layer sensitivity).

The calibration token batches run through the model up to its first decoder block; then, one block at a
time: (1) the block runs on its inputs while hooks record what each target linear layer sees (per-channel
absmax and mean |x|, a bounded sample of rows, and for GPTQ the Hessian X^T X); (2) the algorithm turns that
into quantized weights, possibly first folding smoothing scales into the block; (3) the block runs again
with its linears quantized, which measures each layer's output SQNR against full precision on the same
inputs and yields the inputs of the next block (errors propagate, as in GPTQ's sequential mode).

Supports decoder-only transformers whose decoder exposes `.layers` (Llama, Qwen2, Mistral and alike).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

MAX_ROWS = 4096  # rows of each layer's input kept for loss searches and SQNR


@dataclass
class Recorded:
    """What one linear layer saw during calibration."""

    absmax: torch.Tensor | None = None  # (K,) max |x| per input channel
    abssum: torch.Tensor | None = None  # (K,) sum |x| per input channel
    rows: int = 0
    hessian: torch.Tensor | None = None  # (K, K) sum x x^T, only when asked for
    samples: list[torch.Tensor] = field(default_factory=list)  # (r, K) kept rows

    @property
    def mean_abs(self) -> torch.Tensor:
        return self.abssum / max(1, self.rows)

    @property
    def x(self) -> torch.Tensor:
        return torch.cat(self.samples)  # (<= MAX_ROWS, K)


class _Stop(Exception):
    pass


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(
            f"calibrated quantization needs a decoder-only model whose decoder has .layers; "
            f"{type(model).__name__} has none"
        )
    return blocks


@torch.no_grad()
def first_block_inputs(model: nn.Module, batches: list[torch.Tensor]) -> tuple[list[torch.Tensor], dict]:
    """Hidden states entering the first block for each batch, and the keyword arguments it is called with."""
    blocks = decoder_blocks(model)
    captured: list[torch.Tensor] = []
    kwargs: dict = {}

    def hook(_module, args, kw):
        captured.append(args[0] if args else kw["hidden_states"])
        kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"})
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids in batches:
            try:
                model(input_ids=ids, use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured, kwargs


def _output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _recorder(record: Recorded, hessian: bool):
    def hook(_module, args, _output):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).float()  # (rows, K)
        a = x.abs()
        record.absmax = a.amax(0) if record.absmax is None else torch.maximum(record.absmax, a.amax(0))
        record.abssum = a.sum(0) if record.abssum is None else record.abssum + a.sum(0)
        record.rows += x.shape[0]
        if hessian:
            h = x.t() @ x
            record.hessian = h if record.hessian is None else record.hessian + h
        kept = sum(s.shape[0] for s in record.samples)
        if kept < MAX_ROWS:
            step = max(1, x.shape[0] // 256)
            record.samples.append(x[::step][: MAX_ROWS - kept].clone())

    return hook


@torch.no_grad()
def run_blocks(
    model: nn.Module,
    layers: dict[str, nn.Linear],
    batches: list[torch.Tensor],
    process: Callable[[nn.Module, dict[str, nn.Linear], dict[str, Recorded]], dict],
    make_quantized: Callable[[str, object], nn.Module],
    hessian: bool = False,
) -> tuple[dict, dict[str, float]]:
    """Quantize `layers` block by block. `process(block, linears, recorded)` returns each linear's quantized
    weight; `make_quantized(name, weight)` builds the module that will run it. Returns the quantized weights
    and each layer's output SQNR (dB) on the calibration inputs."""
    blocks = decoder_blocks(model)
    hidden, kwargs = first_block_inputs(model, batches)
    names_of = {id(m): n for n, m in layers.items()}
    weights: dict = {}
    sensitivity: dict[str, float] = {}
    for block in blocks:
        linears = {names_of[id(m)]: m for m in block.modules() if id(m) in names_of}
        recorded = {name: Recorded() for name in linears}
        handles = [m.register_forward_hook(_recorder(recorded[n], hessian)) for n, m in linears.items()]
        try:
            for h in hidden:
                block(h, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        found = process(block, linears, recorded)
        weights.update(found)
        block_sqnr, hidden = _quantized_pass(block, linears, found, make_quantized, hidden, kwargs)
        sensitivity.update(block_sqnr)
    return weights, sensitivity


def _quantized_pass(block, linears, weights, make_quantized, hidden, kwargs):
    """Run the block with its linears quantized: each layer's output SQNR against its float self on the same
    inputs, and the block's outputs (the next block's inputs)."""
    quantized = {name: make_quantized(name, weights[name]) for name in linears}
    errors: dict[str, tuple[float, float]] = {name: (0.0, 0.0) for name in linears}

    def measure(name, float_layer):
        def hook(_module, args, output):
            x = args[0].reshape(-1, args[0].shape[-1])
            reference = float_layer(x).float()
            noise = (reference - output.reshape(reference.shape).float()).pow(2).sum().item()
            signal = reference.pow(2).sum().item()
            s, n = errors[name]
            errors[name] = (s + signal, n + noise)

        return hook

    relative = {id(m): n for n, m in block.named_modules()}
    parents = {}
    for name, layer in linears.items():
        parent_name, _, child = relative[id(layer)].rpartition(".")
        parents[name] = (block.get_submodule(parent_name) if parent_name else block, child)
    handles = []
    for name, layer in linears.items():
        parent, child = parents[name]
        setattr(parent, child, quantized[name])
        handles.append(quantized[name].register_forward_hook(measure(name, layer)))
    try:
        outputs = [_output(block(h, **kwargs)) for h in hidden]
    finally:
        for handle in handles:
            handle.remove()
        for name, layer in linears.items():
            parent, child = parents[name]
            setattr(parent, child, layer)
    sqnr = {
        name: float("inf") if noise == 0 else 10 * math.log10(signal / noise)
        for name, (signal, noise) in errors.items()
    }
    return sqnr, outputs
