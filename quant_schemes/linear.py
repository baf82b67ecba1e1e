"""`QuantLinear`: an nn.Linear whose weight lives as low-precision codes plus scales, and whose forward calls
the kernel of its weight format through a kernel backend: the Triton kernel (`backend="triton"`) or its
pure-torch reference (`backend="torch-ref"`, the CPU path). There is no float copy of the weight and no
fallback between backends.

    layer = QuantLinear.from_float(linear, scheme, backend="torch-ref")
    y = layer(x)                  # x: (..., in_features) -> (..., out_features)
    layer.dequantize()            # (out_features, in_features) fp32, for inspection and error analysis

W8A8 layers quantize their input first: dynamically (a scale from each input), or with a static per-tensor
`input_scale` buffer (`input_activations.dynamic: false`, a calibrated checkpoint's scale, used as it is).
"""

from __future__ import annotations

import contextlib
import importlib
import logging

import torch
from torch import nn

from evalsuite.kernels import paths

from .args import QuantArgs
from .backends import KernelBackend, KernelUnavailableError, get_backend
from .scheme import Scheme
from .weight_formats import QuantizedWeight, WeightFormat, get_format

log = logging.getLogger(__name__)
_LOGGED: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.warning(message)


OWN_BACKENDS = ("triton", "torch-ref")  # the backends whose weight-only kernels take a k_order and fusions


def use_decode_order(model: nn.Module, dtype: torch.dtype) -> int:
    """Store the codes of each W4A16 layer that the tensor-core decode GEMV can run in that kernel's K order
    (`QuantLinear.use_k_order("mma128")`): 4-bit integer codes with K and the group size multiples of 128, on
    the "triton" backend, bf16 activations (`dtype`), on an NVIDIA GPU where the kernel runs. Returns how many
    layers now hold that order; the others keep K order, and their decode runs the CUDA-core GEMV. The loaders
    do not call it: on an H100 that GEMV decodes faster (docs/architecture.md, "Codes stored in a kernel's K
    order")."""
    from evalsuite.kernels import _int4_mma_gemv

    count = 0
    for layer in model.modules():
        if not isinstance(layer, QuantLinear) or layer.kind != "wna16" or layer.backend.name != "triton":
            continue
        fits = layer.storage_bits == 4 and layer.in_features % _int4_mma_gemv.SEGMENT == 0
        fits = fits and layer.group_size % _int4_mma_gemv.SEGMENT == 0 and dtype == torch.bfloat16
        if fits and _int4_mma_gemv.runs_on(layer.qdata.device):
            layer.use_k_order(_int4_mma_gemv.K_ORDER)
            count += 1
    return count


def use_fp8_accumulation(model: nn.Module, mode: str) -> int:
    """Set the fp8 accumulation mode of every layer whose format has one; returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, QuantLinear) and m.format.accumulation]
    for layer in layers:
        layer.use_fp8_accumulation(mode)
    return len(layers)


def on_device(x: torch.Tensor):
    """Make x's GPU the current one while launching (Triton launches on the current device), for models
    spread over several GPUs; a no-op elsewhere."""
    if x.is_cuda and x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def _static_input_scale(args: QuantArgs | None, input_scale: torch.Tensor | None) -> torch.Tensor | None:
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


def _global_scale_per_row(scales: list[torch.Tensor], layers: list[QuantLinear]) -> torch.Tensor:
    """(sum of out_features,) fp32: each layer's global scale (one value, or already one per row) on its rows. A
    new tensor, not views: the layers keep their own."""
    rows = []
    for gs, layer in zip(scales, layers, strict=True):
        if gs.numel() != 1 and tuple(gs.shape) != (layer.out_features,):
            raise ValueError(
                f"global_scale is neither one value nor one per output row: shape {tuple(gs.shape)} in a layer "
                f"of {layer.out_features} rows"
            )
        rows.append(gs.float().reshape(-1).expand(layer.out_features))
    return torch.cat(rows)  # (N,)


class QuantLinear(nn.Module):
    def __init__(
        self,
        weight: QuantizedWeight,
        bias: torch.Tensor | None,
        input_activations: QuantArgs | None,
        backend: str | KernelBackend,
        input_scale: torch.Tensor | None = None,
    ):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.kind = weight.kind
        self.group_size = weight.group_size
        self.bits = weight.bits
        self.storage_bits = weight.storage_bits
        self.act_granularity = self.format.act_granularity(input_activations)
        tensors = weight.tensors()
        for name in ("qdata", "scale", "zero_point", "global_scale"):
            self.register_buffer(name, tensors.get(name))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("input_scale", _static_input_scale(input_activations, input_scale))
        self.k_order = None  # None: qdata holds the codes in K order; else the stored order's name (use_k_order)
        self.use_backend(backend)
        self.fp8_accumulation = "fast"  # see evalsuite.kernels.fp8_gemm; use_fp8_accumulation changes it

    @property
    def format(self) -> WeightFormat:
        return get_format(self.kind)

    def use_backend(self, backend: str | KernelBackend) -> None:
        """Switch kernel backend, e.g. between the Triton kernels and their torch references (to measure the
        noise floor)."""
        backend = get_backend(backend)
        if self.k_order is not None and backend.name not in OWN_BACKENDS:
            self.use_k_order(None)  # another backend's kernels read the codes in K order
        fmt = self.format
        self.gemm = backend.resolve(fmt.kernel)
        self.act_quant = backend.resolve(fmt.act_kernel) if self.act_granularity else None
        self.decode, self.decode_max_m = None, 0
        if fmt.decode_kernel is not None and not backend.reference:
            try:
                self.decode = backend.resolve(fmt.decode_kernel)
                self.decode_max_m = importlib.import_module(fmt.decode_kernel.module).DECODE_MAX_M
            except KernelUnavailableError as e:
                _log_once(f"{fmt.name} layers on backend {backend.name!r}: no fused decode kernel ({e}); "
                          "decode runs act_quant and the GEMM as two kernels")  # fmt: skip
        self.backend = backend
        act = f"act_quant[{fmt.act_dtype}{' static' if self.input_scale is not None else ''}]"
        self.kernels = ([act] if self.act_quant else []) + [fmt.kernel.entry]  # what its calls may launch
        if self.decode is not None and fmt.fusable(self):
            self.kernels.append(fmt.decode_kernel.entry)
        if self.k_order is not None:
            self.kernels.append(f"{fmt.kernel.entry}[{self.k_order}]")
        self.path = None  # the path this layer records for each call, where its kernels do not record their own
        if not getattr(backend, "records_paths", False):
            why = f"kernel backend {backend.name!r}" + (": the pure-torch reference" if backend.reference else "")
            self.path = (fmt.kernel.entry, paths.TORCH_REF if backend.reference else backend.name, why)

    def use_fp8_accumulation(self, mode: str) -> None:
        """How the Triton fp8 GEMM sums on Hopper: "fast" (the tensor core's accumulator, as deployed) or
        "precise" (fp32 promotion every 128 columns). The torch reference accumulates in fp32 in both."""
        from evalsuite.kernels.fp8_gemm import ACCUMULATIONS

        if mode not in ACCUMULATIONS:
            raise ValueError(f"fp8 accumulation {mode!r} is not one of {', '.join(ACCUMULATIONS)}")
        self.fp8_accumulation = mode

    @classmethod
    def from_float(cls, linear: nn.Linear, scheme: Scheme, backend: str | KernelBackend) -> QuantLinear:
        weight = scheme.resolved_format().quantize(linear.weight.detach(), scheme.weights)
        return cls(weight, linear.bias, scheme.input_activations, backend)

    @classmethod
    def concatenated(cls, layers: list[QuantLinear]) -> QuantLinear:
        """One layer whose output is the given layers' outputs side by side (out_features concatenated), for
        layers that read the same input; ValueError names what keeps them apart. Per-row tensors are
        concatenated and the layers' own buffers become views into the new layer's, so nothing is stored twice;
        per-tensor ones (a global or input scale) must be equal and are shared, except NVFP4's global scales:
        where they differ, the fused layer gets one per output row (each layer's value on its rows, applied by
        the fp4 kernels where they apply the one value), and the layers keep their own."""
        first = layers[0]
        for name in ("kind", "in_features", "group_size", "bits", "storage_bits", "act_granularity",
                     "fp8_accumulation", "k_order"):  # fmt: skip
            values = {getattr(layer, name) for layer in layers}
            if len(values) > 1:
                raise ValueError(f"the layers differ in {name}: {sorted(map(str, values))}")
        if len({layer.backend.name for layer in layers}) > 1:
            raise ValueError("the layers run on different kernel backends")
        rows: dict[str, torch.Tensor] = {}
        shared: dict[str, torch.Tensor | None] = {}
        for name in ("qdata", "scale", "zero_point", "global_scale", "input_scale", "bias"):
            tensors = [getattr(layer, name) for layer in layers]
            if all(t is None for t in tensors):
                shared[name] = None
            elif any(t is None for t in tensors):
                raise ValueError(f"{name} is present in some of the layers only")
            elif name not in ("global_scale", "input_scale") and all(
                t.shape[0] == layer.out_features for t, layer in zip(tensors, layers, strict=True)
            ):
                rows[name] = torch.cat(tensors)
            elif all(t.numel() == 1 and torch.equal(t, tensors[0]) for t in tensors):
                shared[name] = tensors[0]
            elif name == "global_scale" and first.kind == "nvfp4":
                shared[name] = _global_scale_per_row(tensors, layers)
            else:
                raise ValueError(f"{name} is neither per output row nor one value shared by the layers")
        tensors = {**shared, **rows}
        weight = QuantizedWeight(
            first.kind, (sum(layer.out_features for layer in layers), first.in_features), tensors["qdata"],
            tensors["scale"], tensors["zero_point"], tensors["global_scale"], first.group_size, first.bits,
            first.storage_bits,
        )  # fmt: skip
        fused = cls(weight, None, None, first.backend)
        fused.k_order = first.k_order  # the rows were stored in this order already
        fused.bias = tensors["bias"]
        fused.input_scale = tensors["input_scale"]
        fused.act_granularity = first.act_granularity
        fused.use_backend(first.backend)
        fused.fp8_accumulation = first.fp8_accumulation
        fused.kernels = list(first.kernels)
        start = 0
        for layer in layers:
            for name, tensor in rows.items():
                setattr(layer, name, tensor[start : start + layer.out_features])
            start += layer.out_features
        return fused

    def use_k_order(self, k_order: str | None) -> None:
        """Store the codes in another order along K (a permutation within each row, undone exactly by
        `quantized_weight`), or back in K order (None). "mma128": the tensor-core decode GEMV's order
        (`evalsuite.kernels._int4_mma_gemv`), for 4-bit integer weights with K and the group size multiples of
        128, on the "triton" and "torch-ref" backends."""
        from evalsuite.kernels import _int4_mma_gemv
        from evalsuite.kernels.w4a16_gemm import check_k_order

        if k_order == self.k_order:
            return
        if self.k_order is not None:
            self.qdata = _int4_mma_gemv.from_mma_order(self.qdata, self.in_features)
        if k_order is not None:
            if self.kind != "wna16" or self.backend.name not in OWN_BACKENDS:
                raise ValueError(f"k_order {k_order!r} is for wna16 layers on {OWN_BACKENDS}; this layer is "
                                 f"{self.kind} on {self.backend.name!r}")  # fmt: skip
            check_k_order(k_order, self.storage_bits, self.in_features, self.group_size, "use_k_order")
            self.qdata = _int4_mma_gemv.to_mma_order(self.qdata, self.in_features)
        self.k_order = k_order
        self.use_backend(self.backend)

    def stored_weight(self) -> QuantizedWeight:
        """The weight as this layer holds it (qdata in `k_order`)."""
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

    def quantized_weight(self) -> QuantizedWeight:
        """The weight with its codes in K order, as its format defines it (a copy where `k_order` is set)."""
        qw = self.stored_weight()
        if self.k_order is not None:
            from evalsuite.kernels import _int4_mma_gemv

            qw.qdata = _int4_mma_gemv.from_mma_order(self.qdata, self.in_features)
        return qw

    def dequantize(self) -> torch.Tensor:
        return self.quantized_weight().dequantize()

    @property
    def nbytes(self) -> int:
        extra = sum(t.numel() * t.element_size() for t in (self.bias, self.input_scale) if t is not None)
        return self.stored_weight().nbytes + extra

    def forward(self, x: torch.Tensor, norm: tuple | None = None, residual: torch.Tensor | None = None):
        """(..., K) -> (..., N). For a decoder's step (layers with `fuses_ops`): `norm` (weight, eps): x is the
        residual stream and the layer reads rms_norm(x, weight, eps), as HF's Llama RMSNorm computes it;
        `residual` (..., N): returns residual + the output. The decode GEMV does both in its prologue and
        epilogue, so neither costs a kernel of its own."""
        fused = {k: v for k, v in (("norm", norm), ("residual", residual)) if v is not None}
        return self._matmul(x, **fused)

    def _matmul(self, x: torch.Tensor, **fused) -> torch.Tensor:
        """(..., K) -> (..., N), or with gated=True silu(gate) * up, (..., N / 2)."""
        if fused and not self.fuses_ops:
            raise ValueError(f"{', '.join(fused)} need a {', '.join(OWN_BACKENDS)} layer of a format whose kernels "
                             f"fuse them; this one: {self.extra_repr()}")  # fmt: skip
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if "residual" in fused:
            fused["residual"] = fused["residual"].reshape(x2.shape[0], self.out_features)
        if self.path is not None:
            paths.record(*self.path, x2.shape[0])
        with on_device(x):
            y = self.format.matmul(self, x2, **fused)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @property
    def fuses_ops(self) -> bool:
        """Whether `silu_gated` and forward's `norm` and `residual` run: a weight-only format whose kernels do
        them themselves."""
        return self.format.fuses_ops and self.backend.name in OWN_BACKENDS

    def silu_gated(self, x: torch.Tensor, norm: tuple | None = None) -> torch.Tensor:
        """For a fused [gate; up] layer (`QuantLinear.concatenated` of the two): silu(gate) * up of its output,
        (..., out_features / 2), applied by the layer's kernel (in the decode GEMV's epilogue, where that runs:
        no second kernel, no (M, 2I) output written and read back); `norm` as in forward."""
        if self.out_features % 2:
            raise ValueError(f"silu_gated needs an even out_features; this layer: {self.extra_repr()}")
        return self._matmul(x, gated=True, **({} if norm is None else {"norm": norm}))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind}, "
            f"bits={self.bits}, group_size={self.group_size}, backend={self.backend.name}"
            + (f", fp8_accumulation={self.fp8_accumulation}" if self.format.accumulation else "")
            + (f", k_order={self.k_order}" if self.k_order is not None else "")
        )
