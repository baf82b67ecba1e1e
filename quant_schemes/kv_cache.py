"""KV-cache quantization, applied inside attention: keys (after rotary embedding) and values are quantized
and dequantized as a quantized cache would store and read them, then attention runs as usual (SDPA).

Scales: per head (strategy `channel`) or per tensor, static (calibrated: the absmax seen on calibration
data), or per token (dynamic, computed as each token is written). Works for the model families whose
attention goes through transformers' attention interface: Llama, Qwen2, Mistral and alike.

    install(model, args)                 # dynamic per-token, or static with scales to calibrate
    calibrate(model, run_batches)        # static: record absmax of K and V per layer and head
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .args import QuantArgs, QuantType, Strategy

ATTENTION = "evalsuite_kvq"
QMAX = {QuantType.INT: 127.0, QuantType.FLOAT: 448.0}


def fake_quant(t: torch.Tensor, args: QuantArgs, scale: torch.Tensor | None) -> torch.Tensor:
    """Quantize-dequantize t (B, H, T, D) with a given scale (broadcastable) or, per token, its own absmax."""
    qmax = QMAX[args.type]
    t32 = t.float()
    if scale is None:  # dynamic: one scale per (batch, head, token)
        scale = t32.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
    scaled = torch.clamp(t32 / scale, -qmax, qmax)
    codes = torch.round(scaled) if args.type == QuantType.INT else scaled.to(torch.float8_e4m3fn).float()
    return (codes * scale).to(t.dtype)


@dataclass
class KVQuant:
    """Per attention module: the arguments, and the static scales of K and V (None until calibrated)."""

    args: QuantArgs
    absmax: dict[str, torch.Tensor | None] = field(default_factory=lambda: {"k": None, "v": None})
    recording: bool = False

    def scale(self, which: str) -> torch.Tensor | None:
        if self.args.dynamic:
            return None
        if self.absmax[which] is None:
            raise RuntimeError("static KV-cache scales are used before calibration")
        amax = self.absmax[which].clamp(min=1e-12)
        return (amax / QMAX[self.args.type]).reshape(1, -1, 1, 1) if amax.numel() > 1 else amax / QMAX[self.args.type]

    def apply(self, t: torch.Tensor, which: str) -> torch.Tensor:
        if self.recording:
            dims = (0, 2, 3) if self.args.strategy == Strategy.CHANNEL else tuple(range(t.dim()))
            amax = t.detach().float().abs().amax(dim=dims)
            old = self.absmax[which]
            self.absmax[which] = amax if old is None else torch.maximum(old, amax)
            return t
        return fake_quant(t, self.args, self.scale(which))


def _attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    state: KVQuant = module.evalsuite_kv
    key, value = state.apply(key, "k"), state.apply(value, "v")
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    modules = [m for m in model.modules() if hasattr(m, "k_proj") and hasattr(m, "v_proj") and hasattr(m, "layer_idx")]
    if not modules:
        raise ValueError(f"KV-cache quantization found no attention modules in {type(model).__name__}")
    return modules


def install(model: nn.Module, args: QuantArgs) -> list[nn.Module]:
    """Route attention through the quantizing function; returns the attention modules (for calibration)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    modules = attention_modules(model)
    for module in modules:
        module.evalsuite_kv = KVQuant(args)
    model.set_attn_implementation(ATTENTION)
    return modules


@torch.no_grad()
def calibrate(model: nn.Module, modules: list[nn.Module], batches: list[torch.Tensor]) -> None:
    """Record the absmax of K and V per layer (and head) over the calibration batches."""
    for m in modules:
        m.evalsuite_kv.recording = True
    try:
        for ids in batches:
            model(input_ids=ids, use_cache=False)
    finally:
        for m in modules:
            m.evalsuite_kv.recording = False
