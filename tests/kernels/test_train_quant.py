"""The training quantize kernels: bit-exact to their references (same random bits for stochastic rounding),
hand-checked E5M2 rounding, unbiased stochastic rounding, and the clipped scale's error on Gaussian data."""

import pytest
import torch

from evalsuite.kernels.fp4_gemm import dequantize_fp4, mxfp4_quantize_ref
from evalsuite.kernels.train_quant import (
    E5M2_MAX,
    grad_quant,
    grad_quant_ref,
    mx_dequantize,
    mxfp4_clip_quantize,
    mxfp4_clip_quantize_ref,
    mxfp4_sr_quantize,
    mxfp4_sr_quantize_ref,
    random_bits,
)
from tests.kernels.common import DEVICE, shapes
from tests.utils import assert_close


def _spread(shape, dtype):
    x = torch.randn(shape) * torch.logspace(-5, 2, shape[-1])  # columns of very different magnitude
    x[0] = 0
    return x.to(dtype)


@pytest.mark.parametrize("shape", shapes([(1, 1), (3, 40), (5, 33), (7, 1100)], [(4096, 4096), (257, 1000)]))
@pytest.mark.parametrize("granularity", ["token", "tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_grad_quant_matches_reference(shape, granularity, dtype):
    x = _spread(shape, dtype)
    q, scale = grad_quant(x.to(DEVICE), granularity)
    q_ref, scale_ref = grad_quant_ref(x, granularity)
    assert_close(scale.cpu(), scale_ref, what="scales")
    assert_close(q.cpu(), q_ref, what="E5M2 codes")


def test_e5m2_rounding_ties_carries_and_subnormals():
    # absmax 57344 (the largest E5M2 value) makes the scale exactly 1, so the codes show the rounding itself
    x = torch.tensor([[E5M2_MAX, 1.0, 1.125, 1.375, 1.625, 1.875, -2.5, 3 * 2**-16, 2**-17, 2**-15 + 2**-17, -0.0]])
    expected = torch.tensor([[E5M2_MAX, 1.0, 1.0, 1.5, 1.5, 2.0, -2.5, 3 * 2**-16, 0.0, 2**-15, -0.0]])
    q, scale = grad_quant(x.to(DEVICE), "token")
    assert scale.item() == 1.0
    assert_close(q.cpu().float(), expected, what="rounded values (ties to even, carry, subnormal ties)")
    assert_close(q.cpu(), grad_quant_ref(x, "token")[0], what="reference")


@pytest.mark.parametrize("shape", shapes([(1, 32), (3, 64), (5, 96), (2, 1024)], [(4096, 4096), (257, 1024)]))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_mxfp4_train_quantize_matches_reference(shape, dtype):
    x = _spread(shape, dtype)
    x[-1, :8] = 1e4  # an outlier that the clipped scale saturates
    bits = random_bits(shape, torch.Generator().manual_seed(7))
    for (packed, scale), (packed_ref, scale_ref), what in (
        (mxfp4_sr_quantize(x.to(DEVICE), bits.to(DEVICE)), mxfp4_sr_quantize_ref(x, bits), "stochastic"),
        (mxfp4_clip_quantize(x.to(DEVICE)), mxfp4_clip_quantize_ref(x), "clipped"),
    ):
        assert_close(scale.cpu(), scale_ref, what=f"{what}: E8M0 scales")
        assert_close(packed.cpu(), packed_ref, what=f"{what}: packed codes")


def test_stochastic_rounding_is_unbiased_and_seeded():
    x = torch.randn(4, 64) * 3
    gen = torch.Generator().manual_seed(1)
    draws = torch.stack([mx_dequantize(*mxfp4_sr_quantize_ref(x, random_bits(x.shape, gen)), 64) for _ in range(2000)])
    assert (draws.abs() <= 6 * 2 ** torch.ceil(torch.log2(x.abs().amax() / 6))).all()  # nothing saturates
    mean, spread = draws.mean(0), draws.std(0)
    z = (mean - x) / (spread / 2000**0.5 + 1e-12)  # per element, about N(0, 1) if unbiased
    assert z.abs().max() < 5.0, f"biased: max |z| {z.abs().max():.2f}"
    assert ((mean - x).abs() <= 0.05 * x.abs().amax()).all()
    # round-to-nearest would be biased on the same values: the test can tell the two apart
    rne = mx_dequantize(*mxfp4_clip_quantize_ref(x), 64)
    assert (rne - x).abs().mean() > 5 * (mean - x).abs().mean()
    one = mxfp4_sr_quantize_ref(x, random_bits(x.shape, torch.Generator().manual_seed(3)))
    two = mxfp4_sr_quantize_ref(x, random_bits(x.shape, torch.Generator().manual_seed(3)))
    other = mxfp4_sr_quantize_ref(x, random_bits(x.shape, torch.Generator().manual_seed(4)))
    assert torch.equal(one[0], two[0]) and not torch.equal(one[0], other[0])


def test_clipped_scale_beats_the_absmax_scale_on_gaussian_data():
    x = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0))
    clipped = ((mx_dequantize(*mxfp4_clip_quantize_ref(x), 1024) - x) ** 2).mean()
    absmax = ((dequantize_fp4(*mxfp4_quantize_ref(x), "mxfp4", 1024) - x) ** 2).mean()
    assert clipped < 0.98 * absmax, f"clipped MSE {clipped:.5f} vs absmax {absmax:.5f}"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: grad_quant_ref(torch.ones(2, 4), "block"), "granularity must be 'token' or 'tensor'"),
        (lambda: mxfp4_clip_quantize_ref(torch.ones(2, 40)), "K a positive multiple of 32"),
        (lambda: mxfp4_sr_quantize_ref(torch.ones(2, 32), torch.zeros(2, 32)), "bits must be int32"),
        (lambda: mxfp4_sr_quantize_ref(torch.ones(2, 32), torch.zeros(2, 64, dtype=torch.int32)), "shape (2, 32)"),
    ],
    ids=["granularity", "k-not-multiple", "bits-dtype", "bits-shape"],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


# The kernel path's FP8 GEMMs sum in another order than the fp32 matmul of the emulation (and on a GPU in the
# tensor core's fast accumulator, a few bits short of fp32); bf16 matmul and fp4_gemm return bf16 products: the
# stated tolerances, relative to the largest value of each result.
FP8_LAYER_TOLERANCE = 1e-5 if DEVICE == "cpu" else 2e-3
LAYER_TOLERANCE = {"bf16": 2**-8, "fp8": FP8_LAYER_TOLERANCE, "fp8-tensor": FP8_LAYER_TOLERANCE, "mxfp4-quartet": 2**-8}


@pytest.mark.parametrize("recipe", ["bf16", "fp8", "fp8-tensor", "mxfp4-quartet"])
def test_training_layer_on_the_kernels_equals_the_emulation(recipe):
    """A low-precision linear layer's forward and backward on our Triton kernels (quantize steps and GEMMs)
    equal the emulated reference (torch quantize references, fp32 matmuls of the dequantized values) within
    the stated tolerance; the same seed drives the stochastic rounding on both paths."""
    from evalsuite.training.linear import LowPrecisionLinear, QuantOps
    from evalsuite.training.recipes import get_recipe

    torch.manual_seed(0)
    base = torch.nn.Linear(64, 96, bias=False).to(DEVICE)
    x = torch.randn(32, 64, device=DEVICE)
    g = torch.randn(32, 96, device=DEVICE)
    outputs = []
    for backend in ("torch-ref", "triton"):
        gen = torch.Generator(device=DEVICE).manual_seed(5)
        layer = LowPrecisionLinear(base, get_recipe(recipe), QuantOps(backend), gen)
        xi = x.clone().requires_grad_(True)
        base.weight.grad = None
        y = layer(xi)
        (y * g).sum().backward()
        outputs.append((y.detach(), xi.grad, base.weight.grad.clone()))
    for ref, kernel, what in zip(outputs[0], outputs[1], ("output", "input gradient", "weight gradient"), strict=True):
        atol = LAYER_TOLERANCE[recipe] * ref.abs().max().item()
        assert_close(kernel.cpu(), ref.cpu(), atol=atol, what=f"{recipe}: {what}")
        assert not torch.equal(ref, torch.zeros_like(ref)), f"{recipe}: {what} is all zeros"
