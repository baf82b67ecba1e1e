"""int8 weights for the int8 x int8 GEMM (W8A8_INT8): signed symmetric codes (N, K) int8 and a per-channel
(N, 1) or per-tensor (1, 1) fp32 scale; the input is quantized to int8 per token or per tensor first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..args import QuantArgs, QuantType
from ..backends import Kernel
from .base import QuantizedWeight
from .w8a8 import W8A8Format

if TYPE_CHECKING:
    import torch


class Int8Format(W8A8Format):
    name = "int8"
    types = (QuantType.INT,)
    kernel = Kernel("evalsuite.kernels.int8_gemm", "int8_gemm")
    decode_kernel = Kernel("evalsuite.kernels.w8a8_gemv", "w8a8_gemv")
    act_dtype = "int8"
    checkpoint_format = "int-quantized"
    needs_activations = (
        "int8 weights run through the int8 x int8 GEMM: add int8 input_activations (preset W8A8_INT8), "
        "or leave weight_format out for weight-only int weights"
    )

    def quantize(self, w: torch.Tensor, args: QuantArgs) -> QuantizedWeight:
        from .int_codec import int_quantize

        return self.from_int_codes(*int_quantize(w, args), args)

    def from_int_codes(self, q, scale, zero, group: int, args: QuantArgs) -> QuantizedWeight:
        """Signed codes q (N, K) and their scale; symmetric, so zero is None."""
        import torch

        n, k = q.shape
        return QuantizedWeight(self.name, (n, k), q.to(torch.int8), scale.reshape(-1, 1).contiguous(), bits=8)

    def dequantize(self, qw: QuantizedWeight) -> torch.Tensor:
        return qw.qdata.float() * qw.scale.float()

    def saturated(self, scaled: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
        from .int_codec import int_saturated

        return int_saturated(scaled, qw)

    def from_compressed_tensors(self, prefix: str, tensors, args: QuantArgs, ct_format: str, scale, zero_point):
        import torch

        weight = self.dense_weight(prefix, tensors, ct_format, torch.int8)
        return QuantizedWeight(
            self.name, tuple(weight.shape), weight.contiguous(), scale.float().reshape(-1, 1), bits=8
        )
