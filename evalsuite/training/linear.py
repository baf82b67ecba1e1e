"""Linear layers whose forward and backward GEMMs see low-precision operands, as a recipe says.

    ops = QuantOps("torch-ref")                       # or "triton": the quantize steps run as our Triton kernels
    names = apply_recipe(model, recipe, ops, generator)   # the decoder's nn.Linear -> LowPrecisionLinear
    ...train...
    restore_linears(model)                            # back to nn.Linear (same parameters) before saving

Every GEMM operand is quantized exactly as the format says (the kernels' quantize steps, bit-exact to their
references) and dequantized to fp32, and the GEMM is an fp32 matmul of those values: the arithmetic of a
low-precision GEMM with fp32 accumulation, up to the order of its sums. The master weights stay fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from .recipes import Recipe

MX = 32


class QuantOps:
    """The quantize steps of every recipe, each returning fp32 dequantized values: through the kernels'
    torch references ("torch-ref", any device) or their Triton kernels ("triton": CUDA, or the CPU interpreter)."""

    def __init__(self, backend: str = "torch-ref"):
        if backend not in ("torch-ref", "triton"):
            raise ValueError(f"training backend must be 'torch-ref' or 'triton', got {backend!r}")
        from evalsuite.kernels import act_quant, hadamard, train_quant

        ref = backend == "torch-ref"
        self.backend = backend
        self._e4m3 = act_quant.act_quant_ref if ref else act_quant.act_quant
        self._e5m2 = train_quant.grad_quant_ref if ref else train_quant.grad_quant
        self._mx_clip = train_quant.mxfp4_clip_quantize_ref if ref else train_quant.mxfp4_clip_quantize
        self._mx_sr = train_quant.mxfp4_sr_quantize_ref if ref else train_quant.mxfp4_sr_quantize
        self._hadamard = hadamard.hadamard_ref if ref else hadamard.hadamard
        self._mx_dequantize = train_quant.mx_dequantize
        self._random_bits = train_quant.random_bits

    def e4m3_quantize(self, t: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self._e4m3(t, "fp8", granularity)

    def e5m2_quantize(self, t: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self._e5m2(t, granularity)

    def e4m3(self, t: torch.Tensor, granularity: str) -> torch.Tensor:
        q, scale = self.e4m3_quantize(t, granularity)
        return q.float() * scale

    def e5m2(self, t: torch.Tensor, granularity: str) -> torch.Tensor:
        q, scale = self.e5m2_quantize(t, granularity)
        return q.float() * scale

    def rotate(self, t: torch.Tensor) -> torch.Tensor:
        """Block-diagonal Hadamard of size 32 along the last dimension (its own inverse)."""
        rows, k = t.shape
        return self._hadamard(t.reshape(rows, k // MX, MX).contiguous()).reshape(rows, k)

    def mx_clip(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MXFP4, RMS-clipped round to nearest: (values, mask of the elements that were not clipped)."""
        packed, scale = self._mx_clip(t.contiguous())
        values = self._mx_dequantize(packed, scale, t.shape[1])
        limit = 6.0 * torch.ldexp(torch.ones_like(scale, dtype=torch.float32), scale.int() - 127)
        kept = t.abs() <= limit.repeat_interleave(MX, dim=1)
        return values, kept

    def mx_sr(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        t = t.contiguous()
        bits = self._random_bits(tuple(t.shape), generator, t.device)
        return self._mx_dequantize(*self._mx_sr(t, bits), t.shape[1])


class _BF16Matmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        xb, wb = x.bfloat16().float(), w.bfloat16().float()
        ctx.save_for_backward(xb, wb)
        return xb @ wb.t()  # (M, N)

    @staticmethod
    def backward(ctx, g):
        xb, wb = ctx.saved_tensors
        gb = g.bfloat16().float()
        return gb @ wb, gb.t() @ xb


class _FP8Matmul(torch.autograd.Function):
    """E4M3 x and w (scales per token and weight row, or per tensor); the output gradient in E5M2."""

    @staticmethod
    def forward(ctx, x, w, ops, granularity):
        xq, wq = ops.e4m3(x, granularity), ops.e4m3(w, granularity)
        ctx.save_for_backward(xq, wq)
        ctx.ops, ctx.granularity = ops, granularity
        return xq @ wq.t()  # (M, N)

    @staticmethod
    def backward(ctx, g):
        xq, wq = ctx.saved_tensors
        gq = ctx.ops.e5m2(g, ctx.granularity)  # (M, N)
        return gq @ wq, gq.t() @ xq, None, None


class _QuartetMatmul(torch.autograd.Function):
    """Forward: x and w rotated along K, MXFP4 with the clipped scale. Backward: each gradient GEMM's operands
    rotated along its inner dimension and MXFP4 with stochastic rounding; clipped elements get no gradient."""

    @staticmethod
    def forward(ctx, x, w, ops, generator):
        (xq, x_kept), (wq, w_kept) = ops.mx_clip(ops.rotate(x)), ops.mx_clip(ops.rotate(w))
        ctx.save_for_backward(xq, wq, x_kept, w_kept)
        ctx.ops, ctx.generator = ops, generator
        return xq @ wq.t()  # (M, N)

    @staticmethod
    def backward(ctx, g):
        xq, wq, x_kept, w_kept = ctx.saved_tensors
        ops, gen = ctx.ops, ctx.generator
        g_n = ops.mx_sr(ops.rotate(g), gen)  # (M, N), rotated along N
        grad_xr = g_n @ ops.mx_sr(ops.rotate(wq.t()), gen).t()  # (M, K)
        g_m = ops.mx_sr(ops.rotate(g.t()), gen)  # (N, M), rotated along M
        grad_wr = g_m @ ops.mx_sr(ops.rotate(xq.t()), gen).t()  # (N, K)
        return ops.rotate(grad_xr * x_kept), ops.rotate(grad_wr * w_kept), None, None


class LowPrecisionLinear(nn.Module):
    """An nn.Linear's parameters with the recipe's GEMM; `forward(x, weight)` takes an adjusted weight (the
    Smooth-SwiGLU scaling)."""

    def __init__(self, linear: nn.Linear, recipe: Recipe, ops: QuantOps, generator: torch.Generator):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.recipe, self.ops, self.generator = recipe, ops, generator

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if weight is None else weight
        x2 = x.reshape(-1, x.shape[-1]).float()  # (M, K)
        if self.recipe.gemm == "bf16":
            y = _BF16Matmul.apply(x2, w.float())
        elif self.recipe.gemm == "fp8":
            y = _FP8Matmul.apply(x2, w.float(), self.ops, self.recipe.scaling)
        else:
            for name, size in (("tokens per step (batch x sequence)", x2.shape[0]), ("in_features", x2.shape[1])):
                if size % MX:
                    raise ValueError(f"mxfp4-quartet: {name} must be a multiple of {MX}, got {size}")
            if w.shape[0] % MX:
                raise ValueError(f"mxfp4-quartet: out_features must be a multiple of {MX}, got {w.shape[0]}")
            y = _QuartetMatmul.apply(x2, w.float(), self.ops, self.generator)
        y = y if self.bias is None else y + self.bias.float()
        return y.reshape(*x.shape[:-1], w.shape[0]).to(x.dtype)


def apply_recipe(model: nn.Module, recipe: Recipe, ops: QuantOps, generator: torch.Generator) -> list[str]:
    """Replace every nn.Linear of the decoder layers (not the embeddings or the LM head) by a
    LowPrecisionLinear sharing its parameters; returns the names replaced."""
    names = []
    layers = model.get_decoder().layers
    for i, layer in enumerate(layers):
        for name, module in list(layer.named_modules()):
            for child_name, child in list(module.named_children()):
                if type(child) is nn.Linear:
                    setattr(module, child_name, LowPrecisionLinear(child, recipe, ops, generator))
                    names.append(f"layers.{i}.{name + '.' if name else ''}{child_name}")
    if not names:
        raise ValueError(f"{type(model).__name__}: its decoder layers hold no nn.Linear to train in low precision")
    return names


def restore_linears(model: nn.Module) -> None:
    """LowPrecisionLinear -> nn.Linear with the same parameters."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LowPrecisionLinear):
                out_f, in_f = child.weight.shape
                plain = nn.Linear(in_f, out_f, bias=child.bias is not None, device="meta")
                plain.weight, plain.bias = child.weight, child.bias
                setattr(module, child_name, plain)
