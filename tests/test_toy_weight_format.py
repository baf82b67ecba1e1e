"""A weight format and a kernel backend added from outside quant_schemes, through their registries only: a toy
6-bit format (its class, its pure-torch kernel below, one registration) quantizes layers through the normal
entry points, and a third backend is registered and selected by name."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from evalsuite.quant_schemes import PRESETS, QuantArgs, Scheme, backends, weight_formats
from evalsuite.quant_schemes.algorithms import UnknownAlgorithmError, check_combination
from evalsuite.quant_schemes.apply import quantize
from evalsuite.quant_schemes.args import QuantType, Strategy
from evalsuite.quant_schemes.backends import Kernel, KernelUnavailableError
from evalsuite.quant_schemes.linear import QuantLinear
from evalsuite.quant_schemes.weight_formats import QuantizedWeight, WeightFormat
from tests.utils import assert_close, seed_everything, sqnr

QMAX = 31  # symmetric 6-bit codes, -31..31, stored one per int8 byte


def toy_int6_gemm_ref(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    """The toy format's kernel: y = x @ (codes * scale).T (+ bias), in fp32."""
    y = x.float() @ (qdata.float() * scale).t()  # (M, N)
    return (y if bias is None else y + bias.float()).to(x.dtype)


class Int6Format(WeightFormat):
    name = "toy_int6"
    types = (QuantType.INT,)
    kernel = Kernel(__name__, "toy_int6_gemm")  # only the torch reference exists

    def check(self, weights: QuantArgs, acts: QuantArgs | None) -> None:
        super().check(weights, acts)
        if weights.num_bits != 6 or weights.strategy != Strategy.CHANNEL or not weights.symmetric:
            raise ValueError("weight_format 'toy_int6' is symmetric per channel: write num_bits: 6, strategy: channel")

    def quantize(self, w: torch.Tensor, args: QuantArgs) -> QuantizedWeight:
        scale = (w.float().abs().amax(dim=1, keepdim=True) / QMAX).clamp(min=1e-12)  # (N, 1)
        q = torch.clamp(torch.round(w.float() / scale), -QMAX, QMAX).to(torch.int8)  # (N, K)
        return QuantizedWeight(self.name, tuple(w.shape), q, scale, bits=6)

    def dequantize(self, qw: QuantizedWeight) -> torch.Tensor:
        return qw.qdata.float() * qw.scale

    def saturated(self, scaled: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
        return scaled.abs() > QMAX + 0.5

    def matmul(self, layer, x: torch.Tensor) -> torch.Tensor:
        return layer.gemm(x, layer.qdata, layer.scale, layer.bias)


class CountingBackend:
    """A third backend: the torch references, counting which kernels it ran."""

    name = "counting"
    reference = True

    def __init__(self):
        self.calls: list[str] = []

    def resolve(self, kernel: Kernel):
        ref = backends.TORCH_REF.resolve(kernel)

        def run(*args, **kwargs):
            self.calls.append(kernel.entry)
            return ref(*args, **kwargs)

        return run

    def check_device(self, device_type: str) -> None:
        if device_type != "cpu":
            raise backends.KernelUnavailableError("the counting backend runs on the CPU only")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(64, 96)
        self.down = nn.Linear(96, 48)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(weight_formats, "FORMATS", dict(weight_formats.FORMATS))
    weight_formats.register_format("toy_int6", Int6Format())
    return Scheme(weights=QuantArgs(num_bits=6, strategy="channel"), weight_format="toy_int6")


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setattr(backends, "BACKENDS", dict(backends.BACKENDS))
    return backends.register_backend(CountingBackend())


def test_a_registered_format_quantizes_a_linear_and_runs_its_own_kernel(toy):
    seed_everything(0)
    linear = nn.Linear(130, 40)
    layer = QuantLinear.from_float(linear, toy, "torch-ref")
    assert (layer.kind, layer.kernels, layer.qdata.dtype) == ("toy_int6", ["toy_int6_gemm"], torch.int8)
    amax = linear.weight.detach().abs().amax(dim=1, keepdim=True)
    assert_close(layer.scale, amax / QMAX, what="per-channel scale")
    assert int(layer.qdata.abs().max()) == QMAX and (layer.qdata.abs().amax(dim=1) == QMAX).all()
    w_hat = layer.qdata.float() * layer.scale  # (N, K), written out here
    assert_close(layer.dequantize(), w_hat, what="dequantize")
    x = torch.randn(5, 3, 130)
    y = layer(x)
    assert y.shape == (5, 3, 40)
    expected = x @ w_hat.t() + linear.bias.detach()  # (5, 3, N)
    assert_close(y, expected, atol=1e-5, rtol=1e-5, what="toy kernel against its dequantized weight")
    assert sqnr(linear(x).detach(), y) > 30
    default = QuantLinear.from_float(linear, Scheme(weights=toy.weights), "torch-ref")
    assert (default.kind, default.kernels) == ("wna16", ["w4a16_gemm"])


def test_a_registered_format_goes_through_quantize(toy):
    seed_everything(1)
    model, x = Tiny(), torch.randn(7, 64)
    expected = model(x).detach()
    report = quantize(model, toy, backend="torch-ref")
    assert report.layers == ["up", "down"] and report.kernels == ["toy_int6_gemm"]
    assert report.quantized_bytes == sum(m.nbytes for m in model.modules() if isinstance(m, QuantLinear))
    assert [s["saturated"] for s in report.layer_stats.values()] == [0, 0]
    assert all(isinstance(m, QuantLinear) and m.kind == "toy_int6" for m in (model.up, model.down))
    assert 25 < sqnr(expected, model(x).detach()) < 60


def test_a_registered_format_checks_its_scheme(toy):
    with pytest.raises(ValidationError, match="toy_int6' is symmetric per channel: write num_bits: 6"):
        Scheme(weights=QuantArgs(num_bits=4, strategy="channel"), weight_format="toy_int6")
    with pytest.raises(ValidationError, match="stores weights of type 'int', not 'float'"):
        Scheme(weights=QuantArgs(num_bits=8, type="float", strategy="channel"), weight_format="toy_int6")
    with pytest.raises(ValidationError, match="for weight-only quantization leave input_activations out"):
        Scheme(**{**toy.model_dump(), "input_activations": QuantArgs(num_bits=8, strategy="token", dynamic=True)})
    with pytest.raises(UnknownAlgorithmError, match="gptq cannot quantize this scheme"):
        check_combination(toy, "gptq")
    check_combination(toy, "rtn")


def test_an_unregistered_format_is_refused_naming_the_registered_ones():
    with pytest.raises(ValidationError, match="weight_format 'toy_int6' is not registered; use one of int8, fp8"):
        Scheme(weights=QuantArgs(num_bits=6, strategy="channel"), weight_format="toy_int6")
    with pytest.raises(ValueError, match="already registered"):
        weight_formats.register_format("int8", Int6Format())


def test_naming_a_format_changes_the_hash_and_naming_none_keeps_the_old_ones(toy):
    before = {"W8A8_INT8": "ac577123984ec7b2", "W8A8_FP8": "b531b0567a133302", "W4A16": "80d268f34d685f64"}
    assert {name: PRESETS[name].hash for name in before} == before
    assert "weight_format" not in PRESETS["W4A16"].model_dump()
    assert toy.hash != Scheme(weights=toy.weights).hash
    assert Scheme(**toy.model_dump()) == toy


def test_a_backend_without_the_formats_kernel_is_refused(toy):
    with pytest.raises(KernelUnavailableError, match="has no toy_int6_gemm: backend 'triton' cannot run it"):
        QuantLinear.from_float(nn.Linear(8, 4), toy, "triton")


def test_a_third_backend_registers_and_is_selected_by_name(counting):
    seed_everything(2)
    model, x = Tiny(), torch.randn(4, 64)
    reference = Tiny()
    reference.load_state_dict(model.state_dict())
    report = quantize(model, "W8A8_INT8", backend="counting")
    quantize(reference, "W8A8_INT8", backend="torch-ref")
    assert report.backend == "counting" and model.up.backend is counting
    assert "backend=counting" in repr(model.up)
    y = model(x)
    assert counting.calls == ["act_quant", "int8_gemm", "act_quant", "int8_gemm"]
    assert_close(y, reference(x), what="counting backend against torch-ref")
    model.up.use_backend("torch-ref")
    model(x)
    assert counting.calls[4:] == ["act_quant", "int8_gemm"]
    with pytest.raises(ValueError, match="unknown kernel backend 'cuda'; use one of triton, torch-ref, counting"):
        QuantLinear.from_float(nn.Linear(8, 4), PRESETS["W8A16"], "cuda")
    with pytest.raises(ValueError, match="'counting' is already registered"):
        backends.register_backend(CountingBackend())


def test_a_third_backend_runs_a_registered_format(toy, counting):
    layer = QuantLinear.from_float(nn.Linear(16, 8), toy, "counting")
    layer(torch.randn(2, 16))
    assert counting.calls == ["toy_int6_gemm"]


def test_a_third_backend_is_chosen_in_the_suite_file_and_recorded(tmp_path, counting):
    from evalsuite.config import ConfigError, parse_suite
    from evalsuite.models import EMBEDDED
    from evalsuite.runner import run_suite

    suite = {
        "name": "toy",
        "model": {"path": str(EMBEDDED["embedded:tiny"])},
        "variants": ["W8A8_INT8"],
        "suites": {"academic": {"tasks": ["tiny_mc"], "limit": 3}},
        "run": {"batch_size": 4, "bootstrap_iters": 0, "calibration": None, "backend": "counting", "device": "cpu"},
    }
    outcome = run_suite(parse_suite(suite), tmp_path / "run")
    assert outcome.data["provenance"]["backend"] == "counting"
    assert outcome.data["variants"]["W8A8_INT8"]["backend"] == "counting"
    assert counting.calls[:2] == ["act_quant", "int8_gemm"]
    with pytest.raises(ConfigError, match=r"suite\.yaml.*run\.backend.*unknown kernel backend 'cuda'"):
        parse_suite({**suite, "run": {"backend": "cuda"}}, "suite.yaml")


def test_a_gpu_backend_is_refused_on_the_cpu_unless_interpreted(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert backends.pick_backend("auto", "cpu") is backends.TORCH_REF
    assert backends.pick_backend("auto", "cuda").name == "triton"
    with pytest.raises(backends.KernelUnavailableError, match="'triton' needs a CUDA device .or TRITON_INTERPRET=1"):
        backends.pick_backend("triton", "cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backends.pick_backend("triton", "cpu").name == "triton"
