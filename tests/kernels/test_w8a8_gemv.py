"""The fused W8A8 int8 decode GEMV: bit for bit act_quant + int8_gemm (the reference pair on the CPU, the Triton
pair on the GPU), at odd shapes, any split of K, ties and all-zero tokens; the layer's use of it; the errors."""

import pytest
import torch

from evalsuite.kernels.act_quant import act_quant
from evalsuite.kernels.int8_gemm import int8_gemm
from evalsuite.kernels.w8a8_gemv import DECODE_MAX_M, w8a8_gemv, w8a8_gemv_ref
from tests.kernels.common import DEVICE, ON_GPU, shapes
from tests.utils import assert_close


def _operands(m: int, n: int, k: int, dtype=torch.bfloat16, bias: bool = True):
    x = (torch.randn(m, k) * torch.logspace(-1, 1, k)).to(dtype)
    b_q = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    b_scale = torch.rand(n, 1) * 1e-2 + 1e-3
    b = torch.randn(n).to(dtype) if bias else None
    return x, b_q, b_scale, b


def _same(m, n, k, dtype=torch.bfloat16, bias=True, split_k=None, x=None):
    x0, b_q, b_scale, b = _operands(m, n, k, dtype, bias)
    x = x0 if x is None else x
    want = w8a8_gemv_ref(x, b_q, b_scale, b, dtype)
    dev = [t.to(DEVICE) if t is not None else None for t in (x, b_q, b_scale, b)]
    got = w8a8_gemv(*dev, out_dtype=dtype, split_k=split_k)
    assert_close(got.cpu(), want, what=f"{m}x{n}x{k} split {split_k}")  # bit-exact
    if ON_GPU:  # and the two Triton kernels it replaces
        a_q, a_scale = act_quant(dev[0], "int8", "token")
        assert_close(got, int8_gemm(a_q, a_scale, dev[1], dev[2], dev[3], dtype), what="act_quant + int8_gemm")


CPU_SHAPES = [(1, 1, 4), (1, 65, 260), (3, 130, 1028), (4, 7, 36)]  # (M, N, K)
GPU_SHAPES = [(1, 4096, 4096), (2, 6144, 4096), (1, 4096, 14336), (4, 28672, 4096)]


@pytest.mark.parametrize("shape", shapes(CPU_SHAPES, GPU_SHAPES))
def test_bit_exact_to_act_quant_then_int8_gemm(shape):
    _same(*shape)


@pytest.mark.parametrize("split_k", [1, 2, 3, 7])
def test_any_split_of_k_gives_the_same_bits(split_k):
    _same(2, 70, 1800, split_k=split_k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_other_dtypes_and_no_bias(dtype):
    _same(3, 33, 516, dtype=dtype, bias=False)


def test_ties_and_an_all_zero_token():
    """x / scale lands exactly on .5 (ties to even) in one token; another token is all zero (floor scale, zero
    codes, zero output plus bias)."""
    k = 256
    x = torch.zeros(2, k)
    x[0, :] = torch.arange(k) % 9 - 4.0
    x[0, 0] = 127.0  # scale 1: codes are x itself; the halves below tie
    x[0, 1:64:2] += 0.5
    _same(2, 40, k, dtype=torch.float32, x=x)


def test_mutated_sign_extension_would_be_caught():
    """A weight byte of -128 or -1 in every position: the sign extension of each byte matters."""
    x, b_q, b_scale, b = _operands(1, 16, 64)
    b_q[:, 0::4], b_q[:, 1::4], b_q[:, 2::4], b_q[:, 3::4] = -128, -1, 127, -127
    want = w8a8_gemv_ref(x, b_q, b_scale, b)
    got = w8a8_gemv(*(t.to(DEVICE) for t in (x, b_q, b_scale, b)))
    assert_close(got.cpu(), want, what="extreme bytes")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (lambda x, w, s, b: (x.expand(DECODE_MAX_M + 1, -1), w, s, b), "x has 5 rows; the decode GEMV takes 1 to 4"),
        (lambda x, w, s, b: (x[:, :6], w[:, :6], s, b), "K=6 must be a positive multiple of 4"),
        (lambda x, w, s, b: (x, w.float(), s, b), "b_q must be int8"),
        (lambda x, w, s, b: (x, w, s[:3], b), r"b_scale must have shape \(16, 1\)"),
        (lambda x, w, s, b: (x.int(), w, s, b), "x must be bfloat16 or float16 or float32, got int32"),
    ],
    ids=["rows", "k", "w-dtype", "scale-shape", "x-dtype"],
)
def test_errors_name_the_argument(args, message):
    ops = [t.to(DEVICE) for t in _operands(1, 16, 64)]
    with pytest.raises(ValueError, match=message):
        w8a8_gemv(*args(*ops))


def _layer(backend, in_features=72, out_features=40):
    from evalsuite.quant_schemes.linear import QuantLinear
    from evalsuite.quant_schemes.scheme import resolve

    torch.manual_seed(1)
    linear = torch.nn.Linear(in_features, out_features).to(torch.bfloat16)
    return QuantLinear.from_float(linear, resolve("W8A8_INT8"), backend=backend).to(DEVICE)


def test_a_triton_layer_decodes_with_it_and_gives_the_reference_layers_bits():
    """Up to DECODE_MAX_M tokens the layer runs the fused kernel (recorded), above it act_quant + int8_gemm; both
    give the torch-ref layer's output bit for bit. The kernel list in results.json names it."""
    from evalsuite.kernels import paths

    triton_layer, ref_layer = _layer("triton"), _layer("torch-ref")
    assert triton_layer.kernels == ["act_quant[int8]", "int8_gemm", "w8a8_gemv"]
    assert ref_layer.kernels == ["act_quant[int8]", "int8_gemm"]
    for m in (1, DECODE_MAX_M, DECODE_MAX_M + 1):
        x = torch.randn(m, 72, dtype=torch.bfloat16, device=DEVICE)
        paths.reset()
        got = triton_layer(x)
        kernels = {e["kernel"] for e in paths.taken()}
        assert kernels == ({"w8a8_gemv"} if m <= DECODE_MAX_M else {"int8_gemm[row]"}), (m, paths.taken())
        assert_close(got.cpu(), ref_layer(x).cpu(), what=f"M={m}")


def test_a_backend_without_the_kernel_runs_two_kernels_and_says_so(caplog):
    from evalsuite.quant_schemes.backends import BACKENDS, KernelUnavailableError

    triton = BACKENDS["triton"]

    class NoDecode:
        name, reference, records_paths = "triton-no-decode", False, True

        def resolve(self, kernel):
            if kernel.entry == "w8a8_gemv":
                raise KernelUnavailableError("w8a8_gemv is not in this backend")
            return triton.resolve(kernel)

        def check_device(self, device_type):
            triton.check_device(device_type)

    with caplog.at_level("WARNING"):
        layer = _layer(NoDecode())
    assert layer.decode is None and layer.kernels == ["act_quant[int8]", "int8_gemm"]
    assert "no fused decode kernel (w8a8_gemv is not in this backend)" in caplog.text
    x = torch.randn(1, 72, dtype=torch.bfloat16, device=DEVICE)
    assert_close(layer(x).cpu(), _layer("torch-ref")(x).cpu(), what="two kernels")
