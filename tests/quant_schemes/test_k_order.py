"""W4A16 layers holding their codes in the tensor-core decode GEMV's K order (`QuantLinear.use_k_order`): the
same outputs, the same weight for everything that reads it in K order (dequantize, export, byte counts), the
order carried through concatenation, refused where no kernel reads it, and `use_decode_order` choosing it
only where the GPU kernel runs."""

import pytest
import torch

from evalsuite.kernels import _int4_mma_gemv as mg
from evalsuite.quant_schemes import PRESETS
from evalsuite.quant_schemes.linear import QuantLinear, use_decode_order
from tests.utils import assert_close, seed_everything


def _layer(preset="W4A16", n=40, k=256, bias=True):
    seed_everything(0)
    return QuantLinear.from_float(torch.nn.Linear(k, n, bias=bias), PRESETS[preset], "torch-ref")


@pytest.mark.parametrize("preset", ["W4A16", "W4A16_ASYM"])
def test_a_layer_in_the_stored_order_computes_and_reports_the_same_weight(preset):
    layer = _layer(preset)
    x = torch.randn(3, 256)
    before, weight, nbytes = layer(x), layer.quantized_weight(), layer.nbytes
    layer.use_k_order(mg.K_ORDER)
    assert layer.k_order == mg.K_ORDER and "k_order=mma128" in repr(layer)
    assert not torch.equal(layer.qdata, weight.qdata), "the stored bytes are permuted"
    assert torch.equal(layer.quantized_weight().qdata, weight.qdata), "quantized_weight gives K order back"
    assert torch.equal(layer.dequantize(), weight.dequantize())
    assert layer.nbytes == nbytes
    assert_close(layer(x), before, atol=1e-5, rtol=1e-5, what="forward in the stored order")
    layer.use_backend("torch-ref")
    assert layer.k_order == mg.K_ORDER, "a backend that reads the order keeps it"
    layer.use_k_order(None)
    assert layer.k_order is None and torch.equal(layer.qdata, weight.qdata), "back to K order, bit for bit"


def test_concatenated_layers_keep_the_stored_order():
    a, b = _layer(n=40), _layer(n=24)
    x = torch.randn(2, 256)
    want = torch.cat([a(x), b(x)], dim=-1)
    for layer in (a, b):
        layer.use_k_order(mg.K_ORDER)
    fused = QuantLinear.concatenated([a, b])
    assert fused.k_order == mg.K_ORDER
    assert_close(fused(x), want, atol=1e-5, rtol=1e-5, what="concatenated layers in the stored order")
    c = _layer(n=8)
    with pytest.raises(ValueError, match="k_order"):
        QuantLinear.concatenated([fused, c])


def test_the_order_is_refused_where_no_kernel_reads_it():
    with pytest.raises(ValueError, match="wna16 layers"):
        _layer("W8A8_INT8").use_k_order(mg.K_ORDER)
    with pytest.raises(ValueError, match="group_size=32"):
        QuantLinear.from_float(torch.nn.Linear(256, 8), _group_scheme(32), "torch-ref").use_k_order(mg.K_ORDER)


def _group_scheme(group):
    scheme = PRESETS["W4A16"]
    return scheme.model_copy(update={"weights": scheme.weights.model_copy(update={"group_size": group})})


def test_use_decode_order_changes_only_layers_the_gpu_kernel_runs():
    model = torch.nn.Sequential(_layer(), _layer("W8A8_INT8"))
    qdata = model[0].qdata.clone()
    assert use_decode_order(model, torch.bfloat16) == 0, "torch-ref layers keep K order"
    assert torch.equal(model[0].qdata, qdata)
    model[0].use_backend("triton")
    runs = mg.runs_on(model[0].qdata.device)
    assert use_decode_order(model, torch.float16) == 0, "fp16 activations: the kernel multiplies bf16"
    assert use_decode_order(model, torch.bfloat16) == int(runs)
    assert model[1].k_order is None
