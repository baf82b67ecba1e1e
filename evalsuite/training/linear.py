"""Linear layers whose forward and backward GEMMs see low-precision operands, as a recipe says.

    ops = QuantOps("torch-ref")                       # or "triton": quantize steps and GEMMs run on our kernels
    names = apply_recipe(model, recipe, ops, generator)   # the decoder's nn.Linear -> LowPrecisionLinear
    ...train...
    restore_linears(model)                            # back to nn.Linear (same parameters) before saving

Every GEMM operand is quantized exactly as the format says (the kernels' quantize steps, bit-exact to their
references). What multiplies them depends on the backend:
- "torch-ref" (emulated, any device): the quantized values, dequantized to fp32, go through an fp32 matmul --
  the arithmetic of a low-precision GEMM with fp32 accumulation, up to the order of its sums.
- "triton" (CUDA, or the CPU interpreter): FP8 GEMMs run on FP8 tensor cores through `train_gemm.
  fp8_train_gemm` (E4M3 x E4M3 forward, E5M2 x E4M3 backward, scales in the epilogue). MXFP4 GEMMs run through
  `fp4_gemm`: one operand stays packed MXFP4 and is dequantized by the kernel, the other is carried as its
  exact MXFP4 values in bf16 (Hopper has no FP4 tensor cores: this is a bf16 tensor-core GEMM of MXFP4 values,
  not an FP4-speed GEMM). bf16 GEMMs are torch's bf16 matmul.
The master weights stay fp32. FP8 backward GEMMs quantize their operands along the summed dimension from the
high-precision values (the weight's transpose per input channel, the gradient's and the input's transposes per
feature), so that every scale applies in the GEMM's epilogue; with per-tensor scales that is the same as
transposing the forward's codes.
"""

from __future__ import annotations

import torch
from torch import nn

from .recipes import Recipe

MX = 32


class QuantOps:
    """The quantize steps and GEMMs of every recipe: through the kernels' torch references and fp32 matmuls
    ("torch-ref", any device) or through our Triton kernels ("triton": CUDA, or the CPU interpreter)."""

    def __init__(self, backend: str = "torch-ref"):
        if backend not in ("torch-ref", "triton"):
            raise ValueError(f"training backend must be 'torch-ref' or 'triton', got {backend!r}")
        from evalsuite.kernels import act_quant, fp4_gemm, hadamard, train_gemm, train_quant

        ref = backend == "torch-ref"
        self.backend = backend
        self._e4m3 = act_quant.act_quant_ref if ref else act_quant.act_quant
        self._e5m2 = train_quant.grad_quant_ref if ref else train_quant.grad_quant
        self._mx_clip = train_quant.mxfp4_clip_quantize_ref if ref else train_quant.mxfp4_clip_quantize
        self._mx_sr = train_quant.mxfp4_sr_quantize_ref if ref else train_quant.mxfp4_sr_quantize
        self._hadamard = hadamard.hadamard_ref if ref else hadamard.hadamard
        self._fp8_gemm = train_gemm.fp8_train_gemm_ref if ref else train_gemm.fp8_train_gemm
        self._fp4_gemm = None if ref else fp4_gemm.fp4_gemm
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

    def fp8_gemm(self, a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(codes (M, K), scales) x (codes (N, K), scales) -> (M, N) fp32."""
        return self._fp8_gemm(a[0], a[1], b[0], b[1])

    def bf16_gemm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a (M, K) @ b (N, K).T of operands rounded to bf16 -> (M, N) fp32."""
        if self.backend == "torch-ref":
            return a.bfloat16().float() @ b.bfloat16().float().t()
        return (a.bfloat16() @ b.bfloat16().t()).float()

    def rotate(self, t: torch.Tensor) -> torch.Tensor:
        """Block-diagonal Hadamard of size 32 along the last dimension (its own inverse)."""
        rows, k = t.shape
        return self._hadamard(t.reshape(rows, k // MX, MX).contiguous()).reshape(rows, k)

    def mx_values(self, packed: torch.Tensor, scale: torch.Tensor, k: int) -> torch.Tensor:
        return self._mx_dequantize(packed, scale, k)

    def mx_clip(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MXFP4, RMS-clipped round to nearest: (packed codes, E8M0 scales, mask of the elements not clipped)."""
        packed, scale = self._mx_clip(t.contiguous())
        limit = 6.0 * torch.ldexp(torch.ones_like(scale, dtype=torch.float32), scale.int() - 127)
        kept = t.abs() <= limit.repeat_interleave(MX, dim=1)
        return packed, scale, kept

    def mx_sr(self, t: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """MXFP4 with seeded stochastic rounding: (packed codes, E8M0 scales)."""
        t = t.contiguous()
        bits = self._random_bits(tuple(t.shape), generator, t.device)
        return self._mx_sr(t, bits)

    def mx_gemm(self, a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor], k: int):
        """MXFP4 (packed, scales) of shape (M, K) x (N, K) -> (M, N) fp32."""
        a_values = self._mx_dequantize(*a, k)  # (M, K)
        if self._fp4_gemm is None:
            return a_values @ self._mx_dequantize(*b, k).t()
        return self._fp4_gemm(a_values.bfloat16(), b[0], b[1], "mxfp4").float()  # MXFP4 values are exact in bf16


class _BF16Matmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, ops):
        ctx.save_for_backward(x, w)
        ctx.ops = ops
        return ops.bf16_gemm(x, w)  # (M, N)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        ops = ctx.ops
        return ops.bf16_gemm(g, w.t()), ops.bf16_gemm(g.t(), x.t()), None


class _FP8Matmul(torch.autograd.Function):
    """E4M3 x and w (scales per token and weight row, or per tensor); the output gradient in E5M2. Each
    backward GEMM quantizes its operands along the dimension it sums over (see the module note)."""

    @staticmethod
    def forward(ctx, x, w, ops, granularity):
        ctx.save_for_backward(x, w)
        ctx.ops, ctx.granularity = ops, granularity
        return ops.fp8_gemm(ops.e4m3_quantize(x, granularity), ops.e4m3_quantize(w, granularity))  # (M, N)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        ops, gran = ctx.ops, ctx.granularity
        grad_x = ops.fp8_gemm(ops.e5m2_quantize(g, gran), ops.e4m3_quantize(w.t().contiguous(), gran))  # (M, K)
        grad_w = ops.fp8_gemm(
            ops.e5m2_quantize(g.t().contiguous(), gran), ops.e4m3_quantize(x.t().contiguous(), gran)
        )  # (N, K)
        return grad_x, grad_w, None, None


class _QuartetMatmul(torch.autograd.Function):
    """Forward: x and w rotated along K, MXFP4 with the clipped scale. Backward: each gradient GEMM's operands
    rotated along its inner dimension and MXFP4 with stochastic rounding; clipped elements get no gradient."""

    @staticmethod
    def forward(ctx, x, w, ops, generator):
        k = x.shape[1]
        *xq, x_kept = ops.mx_clip(ops.rotate(x))
        *wq, w_kept = ops.mx_clip(ops.rotate(w))
        ctx.save_for_backward(ops.mx_values(*xq, k), ops.mx_values(*wq, k), x_kept, w_kept)
        ctx.ops, ctx.generator = ops, generator
        return ops.mx_gemm(xq, wq, k)  # (M, N)

    @staticmethod
    def backward(ctx, g):
        xq, wq, x_kept, w_kept = ctx.saved_tensors
        ops, gen = ctx.ops, ctx.generator
        m, n = xq.shape[0], wq.shape[0]
        g_n = ops.mx_sr(ops.rotate(g), gen)  # (M, N), rotated along N
        grad_xr = ops.mx_gemm(g_n, ops.mx_sr(ops.rotate(wq.t()), gen), n)  # (M, K)
        g_m = ops.mx_sr(ops.rotate(g.t()), gen)  # (N, M), rotated along M
        grad_wr = ops.mx_gemm(g_m, ops.mx_sr(ops.rotate(xq.t()), gen), m)  # (N, K)
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
            y = _BF16Matmul.apply(x2, w.float(), self.ops)
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
