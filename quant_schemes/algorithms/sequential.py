"""Layer-by-layer calibration, shared by every calibrated algorithm (and by RTN for per-layer sensitivity).

The calibration token batches run through the model once, recording the hidden states entering the first
decoder block and the keyword arguments (attention mask, position embeddings) every block is called with, per
batch and per block; then, one block at a time: (1) the block runs on its inputs while hooks record what
each target linear layer sees (per-channel absmax and mean |x|, a bounded sample of rows, and for GPTQ the
Hessian X^T X); (2) the algorithm turns that into quantized weights, possibly first folding smoothing scales
into the block; (3) the block runs again with its linears quantized, which measures each layer's output SQNR
against full precision on the same inputs and yields the inputs of the next block (errors propagate, as in
GPTQ's sequential mode).

Supports decoder-only transformers whose decoder exposes `.layers` (Llama, Qwen2, Mistral and alike). Only
layers inside the blocks are reached: `split_by_block` sets the others (lm_head) apart.
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


def split_by_block(model: nn.Module, layers: dict[str, nn.Linear]) -> tuple[dict, dict]:
    """`layers` as (those inside a decoder block, the rest: lm_head and alike), each keeping the given names."""
    inside = {id(m) for block in decoder_blocks(model) for m in block.modules()}
    return (
        {n: m for n, m in layers.items() if id(m) in inside},
        {n: m for n, m in layers.items() if id(m) not in inside},
    )


@torch.no_grad()
def block_inputs(model: nn.Module, batches: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[list[dict]]]:
    """Hidden states entering the first block for each batch, and the keyword arguments each block is called
    with for each batch (`kwargs[block][batch]`): the attention mask has the batch's size, and a model that
    mixes attention types (sliding window and full) gives each block its own mask."""
    blocks = decoder_blocks(model)
    captured: list[torch.Tensor] = []
    kwargs: list[list[dict]] = [[] for _ in blocks]

    def hook(index):
        def record(_module, args, kw):
            if index == 0:
                captured.append(args[0] if args else kw["hidden_states"])
            kwargs[index].append({k: v for k, v in kw.items() if k != "hidden_states"})
            if index == len(blocks) - 1:
                raise _Stop

        return record

    handles = [block.register_forward_pre_hook(hook(i), with_kwargs=True) for i, block in enumerate(blocks)]
    try:
        for ids in batches:
            try:
                model(input_ids=ids, use_cache=False)
            except _Stop:
                pass
    finally:
        for handle in handles:
            handle.remove()
    missed = [i for i, per_batch in enumerate(kwargs) if len(per_batch) != len(batches)]
    if missed:
        raise ValueError(
            f"decoder blocks {missed} of {type(model).__name__} were not called once per calibration batch; "
            "layer-by-layer calibration needs every block of .layers to run on every batch"
        )
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
    _, outside = split_by_block(model, layers)
    if outside:
        raise ValueError(
            f"layers {sorted(outside)} lie outside the decoder blocks, which layer-by-layer calibration does not "
            "reach: quantize them apart (apply.quantize does so by round-to-nearest)"
        )
    hidden, kwargs = block_inputs(model, batches)
    names_of = {id(m): n for n, m in layers.items()}
    weights: dict = {}
    sensitivity: dict[str, float] = {}
    for block, block_kwargs in zip(blocks, kwargs, strict=True):
        linears = {names_of[id(m)]: m for m in block.modules() if id(m) in names_of}
        recorded = {name: Recorded() for name in linears}
        handles = [m.register_forward_hook(_recorder(recorded[n], hessian)) for n, m in linears.items()]
        try:
            for h, kw in zip(hidden, block_kwargs, strict=True):
                block(h, **kw)
        finally:
            for handle in handles:
                handle.remove()
        found = process(block, linears, recorded)
        weights.update(found)
        block_sqnr, hidden = _quantized_pass(block, linears, found, make_quantized, hidden, block_kwargs)
        sensitivity.update(block_sqnr)
    return weights, sensitivity


def _quantized_pass(block, linears, weights, make_quantized, hidden, kwargs):
    """Run the block with its linears quantized (on each batch's inputs `hidden` with its keyword arguments
    `kwargs`): each layer's output SQNR against its float self on the same inputs, and the block's outputs
    (the next block's inputs)."""
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
        outputs = [_output(block(h, **kw)) for h, kw in zip(hidden, kwargs, strict=True)]
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
