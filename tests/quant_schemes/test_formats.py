import pytest
import torch

from evalsuite.kernels.fp4_gemm import E2M1_VALUES, e2m1_decode, e2m1_encode_ref, mxfp4_quantize_ref, nvfp4_quantize_ref
from evalsuite.kernels.w4a16_gemm import pack_int4, unpack_int4
from evalsuite.quant_schemes import PRESETS, QuantArgs
from evalsuite.quant_schemes.formats import quantize_weight
from evalsuite.quant_schemes.linear import QuantLinear
from tests.utils import assert_close, seed_everything, sqnr

# Weight SQNR floors (dB) for Gaussian weights: well under what each format reaches, well over the next worse.
FLOORS = {
    "W8A8_INT8": 40,
    "W8A16": 40,
    "W8A8_FP8": 28,
    "W8A8_FP8_TENSOR": 28,
    "W8A8_FP8_BLOCK": 28,
    "W4A16": 16,
    "W4A16_ASYM": 16,
    "MXFP4": 13,
    "NVFP4": 16,
}


@pytest.mark.parametrize("preset", sorted(FLOORS))
@pytest.mark.parametrize("shape", [(96, 256), (33, 200), (1, 130)], ids=["96x256", "33x200-ragged", "1x130"])
def test_round_trip_sqnr(preset, shape):
    seed_everything(0)
    w = torch.randn(shape)
    scheme = PRESETS[preset]
    if scheme.weights.type.value in ("mxfp", "nvfp") and shape[1] % 2:
        pytest.skip("FP4 packs two values per byte")
    qw = quantize_weight(w, scheme.weights, scheme.input_activations is not None)
    assert qw.dequantize().shape == w.shape
    assert sqnr(w, qw.dequantize()) > FLOORS[preset]


def test_int4_codes_are_packed_and_round_trip_exactly():
    codes = torch.randint(0, 16, (7, 13), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (7, 7) and packed.dtype == torch.uint8
    assert_close(unpack_int4(packed, 13), codes, what="int4 pack/unpack")
    assert packed[0, 0] == codes[0, 0] | (codes[0, 1] << 4)


def test_quantized_layer_stores_no_float_weight():
    lin = torch.nn.Linear(256, 64)
    for name in ("W8A8_INT8", "W8A8_FP8", "W4A16", "MXFP4", "NVFP4"):
        layer = QuantLinear.from_float(lin, PRESETS[name], "torch-ref")
        floats = (torch.float32, torch.bfloat16, torch.float16)
        large = lin.weight.numel() // 8
        float_buffers = [n for n, b in layer.named_buffers() if b.dtype in floats and b.numel() >= large]
        assert float_buffers == [], f"{name} keeps large float buffers {float_buffers}"
        assert layer.qdata.dtype in (torch.int8, torch.uint8, torch.float8_e4m3fn)
    assert QuantLinear.from_float(lin, PRESETS["W4A16"], "torch-ref").qdata.shape == (64, 128)


def test_symmetric_int_rounds_half_to_even_and_saturates():
    args = QuantArgs(num_bits=8, strategy="tensor")
    w = torch.tensor([[127.0, 0.5, 1.5, 2.5, -2.5, -127.0]])  # absmax 127 -> scale 1
    qw = quantize_weight(w, args, with_activations=True)
    assert qw.qdata.tolist() == [[127, 0, 2, 2, -2, -127]]


def test_asymmetric_int4_represents_zero_exactly():
    w = torch.tensor([[0.0, 0.1, 0.7, 1.5] * 32])
    qw = quantize_weight(w, PRESETS["W4A16_ASYM"].weights)
    assert qw.zero_point is not None and qw.dequantize()[0, 0] == 0.0


def test_all_zero_group_gets_a_finite_scale():
    w = torch.zeros(4, 256)
    w[0, :128] = torch.randn(128)
    qw = quantize_weight(w, PRESETS["W4A16"].weights)
    assert torch.isfinite(qw.scale).all() and (qw.dequantize()[1:] == 0).all()


def test_e2m1_ties_round_to_even_and_saturate():
    values = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 100.0, -0.75, -5.0, 0.24, 0.26])
    expected = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, -1.0, -4.0, 0.0, 0.5]
    assert e2m1_decode(e2m1_encode_ref(values)).tolist() == expected
    exact = torch.tensor(E2M1_VALUES)
    assert e2m1_decode(e2m1_encode_ref(exact)).tolist() == list(E2M1_VALUES)


def test_mxfp4_scale_follows_the_ocp_rule():
    w = torch.zeros(1, 64)
    w[0, 0] = 5.0  # floor(log2 5) = 2 -> X = 2**(2 - 2) = 1
    w[0, 32] = 0.3  # floor(log2 0.3) = -2 -> X = 2**-4
    _, scale = mxfp4_quantize_ref(w)
    assert scale.tolist() == [[127, 123]]
    w[0, 0] = 7.9  # 7.9 / 2**0 = 7.9 saturates to 6
    packed, scale = mxfp4_quantize_ref(w)
    assert e2m1_decode(unpack_int4(packed, 64))[0, 0] == 6.0


def test_nvfp4_global_and_block_scales():
    seed_everything(1)
    w = torch.randn(8, 64)
    packed, block, gs = nvfp4_quantize_ref(w)
    assert block.dtype == torch.float8_e4m3fn and block.shape == (8, 4)
    assert torch.isclose(gs, 448 * 6 / w.abs().max())
    assert block.float().max() <= 448
