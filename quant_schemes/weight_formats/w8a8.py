"""What the W8A8 formats (int8, fp8) share: legality of weights with input activations, the activation
quantizer in front of the scaled GEMM, and one dense `weight` tensor in compressed-tensors checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..args import QuantArgs, QuantType, Strategy
from ..backends import Kernel
from .base import ONLY_8BIT_PAIRS, QuantizedWeight, WeightFormat

if TYPE_CHECKING:
    import torch


class W8A8Format(WeightFormat):
    act_kernel = Kernel("evalsuite.kernels.act_quant", "act_quant")
    algorithms = ("smoothquant",)
    per_tensor_gemm: ClassVar[bool] = False  # the GEMM takes (1, 1) scales of both operands as they are
    needs_activations: ClassVar[str]  # the message when a scheme gives it no input_activations

    def check(self, weights: QuantArgs, acts: QuantArgs | None) -> None:
        super().check(weights, acts)
        w, a = weights, acts
        if a is None:
            raise ValueError(self.needs_activations)
        if w.num_bits != 8 or a.num_bits != 8 or a.type != w.type:
            raise ValueError(ONLY_8BIT_PAIRS)
        if not a.symmetric or not w.symmetric:
            raise ValueError("W8A8 weights and input_activations must be symmetric: the GEMMs apply no zero point")
        if w.strategy == Strategy.BLOCK:
            if w.type != QuantType.FLOAT or a.strategy != Strategy.GROUP or a.group_size != 128 or not a.dynamic:
                raise ValueError(
                    "block-scaled weights are fp8 128x128 and go with dynamic fp8 input_activations of "
                    "strategy 'group', group_size 128 (see preset W8A8_FP8_BLOCK)"
                )
        elif w.strategy not in (Strategy.CHANNEL, Strategy.TENSOR):
            raise ValueError(
                f"W8A8 weights use strategy 'channel', 'tensor' or (fp8) 'block', not '{w.strategy.value}'"
            )
        elif a.strategy not in (Strategy.TOKEN, Strategy.TENSOR):
            raise ValueError(f"input_activations use strategy 'token' or 'tensor', not '{a.strategy.value}'")

    def act_granularity(self, acts: QuantArgs | None) -> str | int | None:
        if acts is None:
            return None
        if not acts.dynamic:
            if acts.strategy != Strategy.TENSOR:
                raise ValueError(
                    f"static (dynamic: false) input_activations use strategy 'tensor', not '{acts.strategy.value}'; "
                    "set dynamic: true for scales computed from each input"
                )
            return "tensor"
        if acts.strategy == Strategy.GROUP:
            return acts.group_size
        return "tensor" if acts.strategy == Strategy.TENSOR else "token"

    def matmul(self, layer, x: torch.Tensor) -> torch.Tensor:
        if layer.decode is not None and x.shape[0] <= layer.decode_max_m and self.fusable(layer):
            b_scale = layer.scale.reshape(-1, 1).expand(layer.out_features, 1)  # (N, 1)
            return layer.decode(x, layer.qdata, b_scale, layer.bias, out_dtype=x.dtype)
        a_q, a_scale = layer.act_quant(x, self.act_dtype, layer.act_granularity, layer.input_scale)
        b_scale = layer.scale
        per_tensor = self.per_tensor_gemm and a_scale.numel() == 1 and b_scale.numel() == 1
        if layer.act_granularity in ("token", "tensor") and not per_tensor:  # rowwise: broadcast per-tensor
            a_scale = a_scale.expand(x.shape[0], 1)  # (M, 1)
            b_scale = b_scale.reshape(-1, 1).expand(layer.out_features, 1)  # (N, 1)
        extra = {"accumulation": layer.fp8_accumulation} if self.accumulation and not layer.backend.reference else {}
        return layer.gemm(a_q, a_scale, layer.qdata, b_scale, layer.bias, out_dtype=x.dtype, **extra)

    @staticmethod
    def fusable(layer) -> bool:
        """The decode kernel quantizes the input per token with a dynamic scale, as act_quant does here."""
        return layer.act_granularity == "token" and layer.input_scale is None

    def to_compressed_tensors(self, qw: QuantizedWeight) -> dict[str, torch.Tensor]:
        return {"weight": qw.qdata, "weight_scale": qw.scale.float()}

    def dense_weight(self, prefix: str, tensors, ct_format: str, dtype) -> torch.Tensor:
        """The layer's `weight` tensor, refused unless it holds codes of `dtype`."""
        from ..checkpoints import CheckpointError

        weight = None if ct_format == "pack-quantized" else tensors[f"{prefix}.weight"]
        if weight is None or weight.dtype != dtype:
            what = f"{weight.dtype} weights" if weight is not None else f"{self.name} weights"
            raise CheckpointError(f"{prefix}: compressed-tensors format {ct_format!r} with {what} is not supported")
        return weight
