"""`WeightFormat`: one way of storing a quantized weight, and everything that depends on it: which QuantArgs it
takes, quantize (codes and scales, packed), dequantize, the kernel a layer calls and how, and its tensors in
a compressed-tensors checkpoint. `QuantizedWeight` holds one weight in a format, named by `kind`.

    fmt = get_format("wna16")
    qw = fmt.quantize(w, args)              # QuantizedWeight("wna16", (N, K), qdata, scale, zero_point, ...)
    w_hat = fmt.dequantize(qw)               # (N, K) fp32, what the kernel computes with
    y = fmt.matmul(layer, x)                 # through layer.gemm, the kernel resolved for layer.backend

Importing a format module imports no torch (validating a scheme calls `check`); its codec imports torch and
the kernels on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..args import QuantArgs, QuantType

if TYPE_CHECKING:
    import torch

    from ..backends import Kernel

ONLY_8BIT_PAIRS = (
    "input_activations are only quantized together with weights of the same 8-bit type "
    "(int8 x int8 or fp8 x fp8); for weight-only quantization leave input_activations out"
)


@dataclass
class QuantizedWeight:
    kind: str  # the registered name of its WeightFormat
    shape: tuple[int, int]
    qdata: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None = None
    global_scale: torch.Tensor | None = None
    group_size: int | None = None
    bits: int = 8
    storage_bits: int = 8

    @property
    def format(self) -> WeightFormat:
        from . import get_format

        return get_format(self.kind)

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ("qdata", "scale", "zero_point", "global_scale")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def dequantize(self) -> torch.Tensor:
        return self.format.dequantize(self)


class WeightFormat:
    """A format is a stateless object registered by `name`; subclasses set the class attributes and implement
    quantize, dequantize, saturated and matmul (and the checkpoint methods, where they are exported)."""

    name: ClassVar[str]
    types: ClassVar[tuple[QuantType, ...]]  # the weights' QuantArgs.type values it stores
    kernel: ClassVar[Kernel]  # the GEMM its layers call
    act_kernel: ClassVar[Kernel | None] = None  # quantizes the input first (W8A8); None: weight-only
    # act_kernel and kernel fused for decode (a few tokens), where a non-reference backend has it; `matmul` says
    # when it applies
    decode_kernel: ClassVar[Kernel | None] = None
    act_dtype: ClassVar[str | None] = None  # the act_kernel's dtype argument
    algorithms: ClassVar[tuple[str, ...]] = ()  # calibrated algorithms that produce its weights (rtn always does)
    accumulation: ClassVar[bool] = False  # its Triton GEMM has the fp8 accumulation modes (fast / precise)
    checkpoint_format: ClassVar[str | None] = None  # compressed-tensors `format` it exports as; None: not exported
    # its kernel takes `gated` (a fused [gate; up] layer's silu(gate) * up), `norm` (the input's RMSNorm) and
    # `residual` (the residual add), done in the decode GEMV's prologue and epilogue, so `matmul` takes them
    fuses_ops: ClassVar[bool] = False
    # whether the graph decoder hands a layer's RMSNorms and residual adds to this format's kernels by default
    # (`decode_graph.LayerOps`, for formats with `fuses_ops`): where that made the batch-1 step faster
    decode_layer_ops: ClassVar[bool] = False
    # what a count of saturated weights (clipped at the largest code) means for this format, for the report
    saturation_note: ClassVar[str] = (
        "expected 0 with round-to-nearest absmax scales (the largest weight of each group maps to the largest "
        "code); clipping observers (mse) and calibrated algorithms may clip on purpose"
    )

    @staticmethod
    def fusable(layer) -> bool:
        """Whether `decode_kernel` computes what this layer's kernels compute (formats with one say when)."""
        return False

    def check(self, weights: QuantArgs, acts: QuantArgs | None) -> None:
        """Refuse arguments this format cannot store or run, with the fix in the message."""
        if weights.type not in self.types:
            legal = " or ".join(repr(t.value) for t in self.types)
            raise ValueError(
                f"weight_format {self.name!r} stores weights of type {legal}, not {weights.type.value!r}: "
                "change weights.type or weight_format"
            )
        if acts is not None and self.act_kernel is None:
            raise ValueError(ONLY_8BIT_PAIRS)

    def act_granularity(self, acts: QuantArgs | None) -> str | int | None:
        """The act_kernel's granularity for these input activations; None: the input is not quantized."""
        if acts is not None:
            static = "static " if not acts.dynamic else ""
            raise ValueError(f"{static}input_activations go with int8 or fp8 weights (W8A8), not {self.name!r} weights")
        return None

    def quantize(self, w: torch.Tensor, args: QuantArgs) -> QuantizedWeight:
        """Round-to-nearest codes and scales of a (N, K) weight, in this format's storage."""
        raise NotImplementedError

    def dequantize(self, qw: QuantizedWeight) -> torch.Tensor:
        raise NotImplementedError

    def element_scales(self, qw: QuantizedWeight) -> torch.Tensor:
        """(N, K) fp32: the scale each element was divided by."""
        n, k = qw.shape
        return qw.scale.float().expand(n, k)

    def saturated(self, scaled: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
        """(N, K) bool: elements of the weight divided by its element scales that fall past the largest code."""
        raise NotImplementedError

    def matmul(self, layer, x: torch.Tensor, **fused) -> torch.Tensor:
        """y (M, N) of x (M, K) through the layer's resolved kernels (layer.gemm, layer.act_quant). `fused`
        (formats with `fuses_ops`): gated=True (silu(gate) * up of y = [gate | up], (M, N / 2)), norm=(weight,
        eps) (x normalized first), residual (M, N) (residual + y), passed on to the kernel."""
        raise NotImplementedError

    def to_compressed_tensors(self, qw: QuantizedWeight) -> dict[str, torch.Tensor]:
        """The layer's tensors in a compressed-tensors checkpoint, by name after the layer's prefix."""
        raise NotImplementedError

    def from_compressed_tensors(self, prefix: str, tensors, args: QuantArgs, ct_format: str, scale, zero_point):
        """Layer `prefix` of a compressed-tensors checkpoint (its weight_scale and zero point already read)."""
        from ..checkpoints import CheckpointError

        raise CheckpointError(
            f"{prefix}: compressed-tensors checkpoints of {self.name} weights are not supported (int and fp8 are)"
        )
