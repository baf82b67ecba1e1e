"""`QuantLinear`: an nn.Linear whose weight lives as low-precision codes plus scales, and whose forward calls
the kernel of its format: the Triton kernel (`backend="triton"`) or its pure-torch reference
(`backend="torch-ref"`, the CPU path). There is no float copy of the weight and no fallback between the two.

    layer = QuantLinear.from_float(linear, scheme, backend="torch-ref")
    y = layer(x)                  # x: (..., in_features) -> (..., out_features)
    layer.dequantize()            # (out_features, in_features) fp32, for inspection and error analysis

W8A8 layers quantize their input first: dynamically (a scale from each input), or with a static per-tensor
`input_scale` buffer (`input_activations.dynamic: false`, a calibrated checkpoint's scale, used as it is).
"""

from __future__ import annotations

import contextlib
import importlib

import torch
from torch import nn

from .args import QuantArgs, Strategy
from .formats import QuantizedWeight, quantize_weight
from .scheme import Scheme

BACKENDS = ("triton", "torch-ref")
# kind -> (kernel module, entry point); W8A8 kinds also quantize activations with act_quant first.
GEMMS = {
    "int8": ("int8_gemm", "int8_gemm"),
    "fp8": ("fp8_gemm", "fp8_gemm"),
    "wna16": ("w4a16_gemm", "w4a16_gemm"),
    "mxfp4": ("fp4_gemm", "fp4_gemm"),
    "nvfp4": ("fp4_gemm", "fp4_gemm"),
}


class KernelUnavailableError(RuntimeError):
    pass


def use_fp8_accumulation(model: nn.Module, mode: str) -> int:
    """Set the fp8 accumulation mode of every fp8 QuantLinear in model; returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, QuantLinear) and m.kind == "fp8"]
    for layer in layers:
        layer.use_fp8_accumulation(mode)
    return len(layers)


def on_device(x: torch.Tensor):
    """Make x's GPU the current one while launching (Triton launches on the current device), for models
    spread over several GPUs; a no-op elsewhere."""
    if x.is_cuda and x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def kernel(module: str, name: str, backend: str):
    """The Triton launcher `name` or its reference `name_ref` from evalsuite.kernels.<module>."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; use one of {', '.join(BACKENDS)}")
    mod = importlib.import_module(f"evalsuite.kernels.{module}")
    attr = name if backend == "triton" else f"{name}_ref"
    fn = getattr(mod, attr, None)
    if fn is None:
        raise KernelUnavailableError(f"evalsuite.kernels.{module} has no {attr}: backend {backend!r} cannot run it")
    return fn


def _granularity(args: QuantArgs | None):
    if args is None:
        return None
    if not args.dynamic:
        if args.strategy != Strategy.TENSOR:
            raise ValueError(
                f"static (dynamic: false) input_activations use strategy 'tensor', not '{args.strategy.value}'; "
                "set dynamic: true for scales computed from each input"
            )
        return "tensor"
    if args.strategy == Strategy.GROUP:
        return args.group_size
    return "tensor" if args.strategy == Strategy.TENSOR else "token"


def _static_input_scale(args: QuantArgs | None, input_scale: torch.Tensor | None, kind: str) -> torch.Tensor | None:
    """The (1, 1) fp32 input scale of static input_activations, checked once here (the kernels do not)."""
    static = args is not None and not args.dynamic
    if not static:
        if input_scale is not None:
            raise ValueError(
                "an input_scale was given but input_activations are "
                f"{'absent' if args is None else 'dynamic'}: it would be ignored; pass it only with static "
                "(dynamic: false) input_activations"
            )
        return None
    if kind not in ("int8", "fp8"):
        raise ValueError(f"static input_activations go with int8 or fp8 weights (W8A8), not {kind!r} weights")
    if input_scale is None:
        raise ValueError(
            "input_activations are static (dynamic: false) and need a calibrated per-tensor input_scale, which "
            "only a pre-quantized checkpoint provides here; set input_activations.dynamic: true for scales "
            "computed from each input"
        )
    return check_static_scale(input_scale)


def check_static_scale(input_scale: torch.Tensor) -> torch.Tensor:
    """A static per-tensor input scale as (1, 1) fp32, once checked: one element, a positive normal float32."""
    s = input_scale.detach().float()
    if s.numel() != 1:
        raise ValueError(f"a static input_scale is per tensor (one element), got shape {tuple(input_scale.shape)}")
    value = float(s)
    if not (value >= torch.finfo(torch.float32).tiny and value < float("inf")):
        raise ValueError(f"static input_scale is {value!r}; it must be a positive normal float32 number")
    return s.reshape(1, 1).clone()  # (1, 1)


class QuantLinear(nn.Module):
    def __init__(
        self,
        weight: QuantizedWeight,
        bias: torch.Tensor | None,
        input_activations: QuantArgs | None,
        backend: str,
        input_scale: torch.Tensor | None = None,
    ):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.kind = weight.kind
        self.group_size = weight.group_size
        self.bits = weight.bits
        self.storage_bits = weight.storage_bits
        self.act_granularity = _granularity(input_activations)
        tensors = weight.tensors()
        for name in ("qdata", "scale", "zero_point", "global_scale"):
            self.register_buffer(name, tensors.get(name))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("input_scale", _static_input_scale(input_activations, input_scale, self.kind))
        self.use_backend(backend)
        self.fp8_accumulation = "fast"  # see evalsuite.kernels.fp8_gemm; use_fp8_accumulation changes it
        gemm = GEMMS[self.kind][1]
        act = f"act_quant[{self._act_dtype}{' static' if self.input_scale is not None else ''}]"
        self.kernels = ([act] if self._act_quant else []) + [gemm]

    def use_backend(self, backend: str) -> None:
        """Switch between the Triton kernels and their torch references (e.g. to measure the noise floor)."""
        module, name = GEMMS[self.kind]
        self._gemm = kernel(module, name, backend)
        self._act_quant = kernel("act_quant", "act_quant", backend) if self.act_granularity else None
        self.backend = backend

    def use_fp8_accumulation(self, mode: str) -> None:
        """How the Triton fp8 GEMM sums on Hopper: "fast" (the tensor core's accumulator, as deployed) or
        "precise" (fp32 promotion every 128 columns). The torch reference accumulates in fp32 in both."""
        from evalsuite.kernels.fp8_gemm import ACCUMULATIONS

        if mode not in ACCUMULATIONS:
            raise ValueError(f"fp8 accumulation {mode!r} is not one of {', '.join(ACCUMULATIONS)}")
        self.fp8_accumulation = mode

    @property
    def _act_dtype(self) -> str:
        return "int8" if self.kind == "int8" else "fp8"

    @classmethod
    def from_float(cls, linear: nn.Linear, scheme: Scheme, backend: str) -> QuantLinear:
        weight = quantize_weight(linear.weight.detach(), scheme.weights, scheme.input_activations is not None)
        return cls(weight, linear.bias, scheme.input_activations, backend)

    def quantized_weight(self) -> QuantizedWeight:
        return QuantizedWeight(
            self.kind,
            (self.out_features, self.in_features),
            self.qdata,
            self.scale,
            self.zero_point,
            self.global_scale,
            self.group_size,
            self.bits,
            self.storage_bits,
        )

    def dequantize(self) -> torch.Tensor:
        return self.quantized_weight().dequantize()

    @property
    def nbytes(self) -> int:
        extra = sum(t.numel() * t.element_size() for t in (self.bias, self.input_scale) if t is not None)
        return self.quantized_weight().nbytes + extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with on_device(x):
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if self.kind in ("int8", "fp8"):
            a_q, a_scale = self._act_quant(x2, self._act_dtype, self.act_granularity, self.input_scale)
            b_scale = self.scale
            tensorwise = self.kind == "fp8" and a_scale.numel() == 1 and b_scale.numel() == 1  # fp8_gemm has it
            if self.act_granularity in ("token", "tensor") and not tensorwise:  # rowwise: broadcast per-tensor
                a_scale = a_scale.expand(x2.shape[0], 1)  # (M, 1)
                b_scale = b_scale.reshape(-1, 1).expand(self.out_features, 1)  # (N, 1)
            extra = {"accumulation": self.fp8_accumulation} if self.kind == "fp8" and self.backend == "triton" else {}
            y = self._gemm(a_q, a_scale, self.qdata, b_scale, self.bias, out_dtype=x.dtype, **extra)
        elif self.kind == "wna16":
            y = self._gemm(x2, self.qdata, self.scale, self.zero_point, self.group_size, self.storage_bits, self.bias)
        else:
            y = self._gemm(x2, self.qdata, self.scale, self.kind, self.global_scale, self.bias)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind}, "
            f"bits={self.bits}, group_size={self.group_size}, backend={self.backend}"
            + (f", fp8_accumulation={self.fp8_accumulation}" if self.kind == "fp8" else "")
        )
