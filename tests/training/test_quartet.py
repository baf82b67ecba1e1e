"""The MXFP4 Quartet-style recipe trains (the loss falls) and is bit-reproducible from its seed; its GEMMs
quantize as stated."""

import torch

from evalsuite.training.linear import LowPrecisionLinear, QuantOps
from evalsuite.training.loop import train
from evalsuite.training.recipes import get_recipe
from tests.training.common import micro
from tests.utils import sqnr


def _quartet(steps, seed=0):
    return micro("mxfp4-quartet", steps, hidden=64, intermediate=128, batch=2, lr=1e-2, seed=seed)


def test_mxfp4_quartet_trains_and_is_bit_reproducible(tmp_path):
    first = train(_quartet(30), out=tmp_path / "a")
    second = train(_quartet(30), out=tmp_path / "b")
    assert sum(first.losses[-5:]) / 5 < sum(first.losses[:5]) / 5 - 1.0, first.losses
    assert first.losses == second.losses
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    other = train(_quartet(3, seed=1))
    assert other.losses != first.losses[:3]
    assert len(first.linears) == 7  # q, k, v, o, gate, up, down of the one layer


def _linear(recipe, seed=0):
    torch.manual_seed(seed)
    base = torch.nn.Linear(64, 96, bias=False)
    return LowPrecisionLinear(base, get_recipe(recipe), QuantOps(), torch.Generator().manual_seed(seed))


def test_quartet_gradients_are_unbiased_and_masked_where_clipped():
    layer = _linear("mxfp4-quartet")
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(2))
    x[0, 5] = 40.0  # clipped in the forward pass
    g = torch.randn(64, 96, generator=torch.Generator().manual_seed(3))
    grads = []
    for _ in range(64):
        xi = x.clone().requires_grad_(True)
        layer.weight.grad = None
        (layer(xi) * g).sum().backward()
        grads.append(xi.grad)
    mean = torch.stack(grads).mean(0)
    ops = QuantOps()
    *wq, _ = ops.mx_clip(ops.rotate(layer.weight.detach()))
    wq = ops.mx_values(*wq, 64)
    *_, kept = ops.mx_clip(ops.rotate(x))
    exact = ops.rotate((g @ wq) * kept)  # the straight-through gradient with the trust mask, unquantized
    assert sqnr(exact, mean) > sqnr(exact, grads[0]) + 12  # averaging 64 draws: the noise falls, no bias stays
    assert not torch.equal(grads[0], grads[1])  # stochastic rounding draws fresh bits each backward pass


def test_fp8_gradient_is_the_e5m2_gemm():
    layer = _linear("fp8")
    x = torch.randn(8, 64).requires_grad_(True)
    g = torch.randn(8, 96)
    (layer(x) * g).sum().backward()
    ops = QuantOps()
    # the weight's transpose is quantized per input channel (the summed dimension is the output's), so that its
    # scales apply in a rowwise FP8 GEMM's epilogue
    (gq, g_scale), (wq, w_scale) = ops.e5m2_quantize(g, "token"), ops.e4m3_quantize(layer.weight.detach().t(), "token")
    expected = (gq.float() @ wq.float().t()) * g_scale * w_scale.t()  # scales in the epilogue
    assert torch.equal(x.grad, expected)
    assert sqnr(g @ layer.weight.detach(), x.grad) > 20
