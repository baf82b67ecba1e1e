"""FP8 E4M3 weights for the fp8 x fp8 GEMM (W8A8_FP8): codes (N, K) float8_e4m3fn and a per-channel (N, 1),
per-tensor (1, 1) or 128x128-block (ceil(N/128), ceil(K/128)) fp32 scale; the input is quantized to fp8
first. Its Triton GEMM has two accumulation modes (see evalsuite.kernels.fp8_gemm)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..args import QuantArgs, QuantType, Strategy
from ..backends import Kernel
from .base import QuantizedWeight
from .w8a8 import W8A8Format

if TYPE_CHECKING:
    import torch

FP8_MAX = 448.0


class Fp8Format(W8A8Format):
    name = "fp8"
    types = (QuantType.FLOAT,)
    kernel = Kernel("evalsuite.kernels.fp8_gemm", "fp8_gemm")
    act_dtype = "fp8"
    accumulation = True
    per_tensor_gemm = True
    checkpoint_format = "float-quantized"
    needs_activations = (
        "fp8 weights run through the fp8 x fp8 GEMM: add fp8 input_activations (preset W8A8_FP8), "
        "or use int, mxfp or nvfp weights for weight-only quantization"
    )

    def quantize(self, w: torch.Tensor, args: QuantArgs) -> QuantizedWeight:
        import torch

        from evalsuite.kernels import fp8_gemm

        n, k = w.shape
        w32 = w.float()
        if args.strategy == Strategy.BLOCK:
            bn, bk = args.block_structure
            if (bn, bk) != (fp8_gemm.BLOCK, fp8_gemm.BLOCK):
                raise ValueError(f"fp8 block scales are {fp8_gemm.BLOCK}x{fp8_gemm.BLOCK}, not {bn}x{bk}")
            padded = torch.nn.functional.pad(w32, (0, -k % bk, 0, -n % bn))
            blocks = padded.reshape(padded.shape[0] // bn, bn, padded.shape[1] // bk, bk)
            amax = blocks.abs().amax(dim=(1, 3))  # (ceil(N/128), ceil(K/128))
            scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
            full = scale.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:n, :k]
        else:
            if args.strategy not in (Strategy.TENSOR, Strategy.CHANNEL):
                raise ValueError(f"fp8 weights use strategy tensor, channel or block, not '{args.strategy.value}'")
            amax = w32.abs().amax() if args.strategy == Strategy.TENSOR else w32.abs().amax(dim=1)
            scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax)).reshape(-1, 1)
            full = scale
        q = torch.clamp(w32 / full, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        return QuantizedWeight(self.name, (n, k), q.contiguous(), scale.float().contiguous(), bits=8)

    def element_scales(self, qw: QuantizedWeight) -> torch.Tensor:
        from evalsuite.kernels import fp8_gemm

        n, k = qw.shape
        if qw.scale.shape == (n, 1) or qw.scale.numel() == 1:
            return qw.scale.float().expand(n, k)
        full = qw.scale.float().repeat_interleave(fp8_gemm.BLOCK, 0).repeat_interleave(fp8_gemm.BLOCK, 1)
        return full[:n, :k]

    def dequantize(self, qw: QuantizedWeight) -> torch.Tensor:
        n, k = qw.shape
        if qw.scale.shape == (n, 1) or qw.scale.numel() == 1:
            return qw.qdata.float() * qw.scale.float()
        return qw.qdata.float() * self.element_scales(qw)

    def saturated(self, scaled: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
        return scaled.abs() > FP8_MAX * (1 + 1e-5)

    def from_compressed_tensors(self, prefix: str, tensors, args: QuantArgs, ct_format: str, scale, zero_point):
        import torch

        weight = self.dense_weight(prefix, tensors, ct_format, torch.float8_e4m3fn)
        s = scale.float()
        s = s.reshape(-1, 1) if s.numel() in (1, weight.shape[0]) else s
        return QuantizedWeight(self.name, tuple(weight.shape), weight.contiguous(), s.contiguous(), bits=8)
