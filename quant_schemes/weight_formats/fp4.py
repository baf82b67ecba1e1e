"""FP4 (E2M1) weights for the fp4 GEMM, two values per byte, (N, K/2) uint8, with one scale per group:
MXFP4 (an E8M0 scale per 32, uint8) and NVFP4 (an E4M3 scale per 16 and an fp32 global scale). Weight-only;
not exported to compressed-tensors yet."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..args import QuantArgs, QuantType
from ..backends import Kernel
from .base import QuantizedWeight, WeightFormat

if TYPE_CHECKING:
    import torch


class FP4Format(WeightFormat):
    kernel = Kernel("evalsuite.kernels.fp4_gemm", "fp4_gemm")
    group: ClassVar[int]
    fuses_ops = True  # decode_layer_ops stays off: NVFP4's batch-1 8B step on an H100 went 313 -> 297 tok/s with them

    def quantize(self, w: torch.Tensor, args: QuantArgs) -> QuantizedWeight:
        n, k = w.shape
        if k % 2:
            raise ValueError(f"FP4 weights pack two values per byte: in_features must be even, got {k}")
        packed, scale, global_scale = self.codes(w)
        return QuantizedWeight(
            self.name, (n, k), packed, scale, global_scale=global_scale, group_size=self.group, bits=4, storage_bits=4
        )

    def codes(self, w: torch.Tensor):
        """(packed codes, group scales, global scale or None) of fp32 weights, by the kernel's reference."""
        raise NotImplementedError

    def dequantize(self, qw: QuantizedWeight) -> torch.Tensor:
        from evalsuite.kernels.fp4_gemm import dequantize_fp4

        return dequantize_fp4(qw.qdata, qw.scale, self.name, qw.shape[1], qw.global_scale)

    def element_scales(self, qw: QuantizedWeight) -> torch.Tensor:
        import torch

        from evalsuite.kernels.fp4_gemm import dequantize_fp4

        n, k = qw.shape
        ones = torch.full((n, (k + 1) // 2), 0x22, dtype=torch.uint8, device=qw.qdata.device)  # every code 1.0
        return dequantize_fp4(ones, qw.scale, self.name, k, qw.global_scale)

    def saturated(self, scaled: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
        from evalsuite.kernels.fp4_gemm import E2M1_MAX

        return scaled.abs() > E2M1_MAX * (1 + 1e-5)

    def matmul(self, layer, x: torch.Tensor, **fused) -> torch.Tensor:
        return layer.gemm(x, layer.qdata, layer.scale, self.name, layer.global_scale, layer.bias, **fused)


class MXFP4Format(FP4Format):
    name = "mxfp4"
    types = (QuantType.MXFP,)
    group = 32
    saturation_note = (
        "expected by design: the OCP MX scale 2^(floor(log2 amax) - 2) puts each 32-block's largest weights "
        "between 4 and 8 scale units, and those above 6 (E2M1's largest) clip; a few percent of weights is normal"
    )

    def codes(self, w: torch.Tensor):
        from evalsuite.kernels.fp4_gemm import mxfp4_quantize_ref

        packed, scale = mxfp4_quantize_ref(w)
        return packed, scale, None


class NVFP4Format(FP4Format):
    name = "nvfp4"
    types = (QuantType.NVFP,)
    group = 16
    saturation_note = (
        "expected by design: round-to-nearest E4M3 block scales round down for about half of the 16-blocks, "
        "and their largest weight then lands just past 6 (E2M1's largest) and clips; about 3% of weights is normal"
    )

    def codes(self, w: torch.Tensor):
        from evalsuite.kernels.fp4_gemm import nvfp4_quantize_ref

        return nvfp4_quantize_ref(w)
