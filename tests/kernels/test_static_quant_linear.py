"""QuantLinear with a static per-tensor input scale (a calibrated checkpoint's input_scale), on both backends:
the Triton kernels (the interpreter on CPU) and the torch references, against a reference written out here."""

import pytest
import torch

from evalsuite.kernels.act_quant import QMAX
from evalsuite.quant_schemes import Scheme
from evalsuite.quant_schemes.args import QuantArgs
from evalsuite.quant_schemes.formats import quantize_weight
from evalsuite.quant_schemes.linear import QuantLinear
from tests.kernels.common import DEVICE, GEMM_TOL, fp8_gemm_tol
from tests.utils import assert_close


def _scheme(dtype: str, weights: str) -> Scheme:
    kind = "float" if dtype == "fp8" else "int"
    return Scheme(
        weights=QuantArgs(num_bits=8, type=kind, strategy=weights),
        input_activations=QuantArgs(num_bits=8, type=kind, strategy="tensor", dynamic=False),
    )


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 40, 72), (17, 130, 257)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("weights", ["tensor", "channel"])
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
@pytest.mark.parametrize("backend", ["triton", "torch-ref"])
def test_static_input_scale_is_used_on_both_backends(backend, dtype, weights, shape):
    m, n, k = shape
    x = torch.randn(m, k, device=DEVICE)
    scheme = _scheme(dtype, weights)
    qw = quantize_weight(torch.randn(n, k), scheme.weights, True)
    input_scale = (x.abs().max().cpu() * 0.5 / QMAX[dtype]).reshape(1)  # half the range: the largest saturate
    layer = QuantLinear(qw, None, scheme.input_activations, backend, input_scale).to(DEVICE)
    assert layer.kernels == [f"act_quant[{dtype} static]", f"{dtype}_gemm"]
    s = input_scale.reshape(1, 1)
    lo = -128.0 if dtype == "int8" else -448.0
    scaled = torch.clamp(x.cpu() / s, lo, QMAX[dtype])
    codes = torch.round(scaled) if dtype == "int8" else scaled.to(torch.float8_e4m3fn).float()
    reference = (codes * s) @ qw.dequantize().t()  # (M, N)
    modes = ["fast", "precise"] if dtype == "fp8" else [None]
    for mode in modes:
        if mode:
            layer.use_fp8_accumulation(mode)
        y = layer(x)
        atol, rtol = fp8_gemm_tol(torch.float32, mode) if mode and backend == "triton" else GEMM_TOL[torch.float32]
        what = f"{backend} output" + (f" ({mode} accumulation)" if mode else "")
        assert_close(y.cpu(), reference, atol=atol * max(1.0, k**0.5), rtol=rtol, what=what)


def test_static_activations_without_an_input_scale_are_refused():
    """Our own schemes have no calibrated input scale (RTN is data-free): static activations are refused,
    never quantized dynamically in their place."""
    lin = torch.nn.Linear(64, 32)
    for dtype in ("int8", "fp8"):
        with pytest.raises(ValueError, match=r"static \(dynamic: false\).* set input_activations\.dynamic: true"):
            QuantLinear.from_float(lin, _scheme(dtype, "channel"), "torch-ref")


def test_bad_static_input_scales_are_refused():
    scheme = _scheme("fp8", "tensor")
    qw = quantize_weight(torch.randn(8, 16), scheme.weights, True)
    for bad in (torch.zeros(1), torch.tensor([float("inf")]), torch.tensor([-1.0]), torch.tensor([1e-40])):
        with pytest.raises(ValueError, match="positive normal float32"):
            QuantLinear(qw, None, scheme.input_activations, "torch-ref", bad)
    with pytest.raises(ValueError, match=r"per tensor \(one element\), got shape \(2,\)"):
        QuantLinear(qw, None, scheme.input_activations, "torch-ref", torch.ones(2))
    dynamic = scheme.input_activations.model_copy(update={"dynamic": True})
    with pytest.raises(ValueError, match="input_activations are dynamic: it would be ignored"):
        QuantLinear(qw, None, dynamic, "torch-ref", torch.ones(1))
