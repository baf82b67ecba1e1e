"""Sibling projections fused into one layer for the graph decoder: the same outputs as the layers apart, no
weight stored twice, a stale group rebuilt, and a group that cannot be fused says why."""

import pytest
import torch
from torch import nn

from evalsuite import fused_linears
from evalsuite.fused_linears import FusedGroup, fused
from evalsuite.quant_schemes import PRESETS
from evalsuite.quant_schemes.linear import QuantLinear
from tests.utils import assert_close

SIZES = (64, 32, 32)  # q, k, v rows of a grouped-query attention


def _siblings(scheme: str | None, backend: str = "torch-ref", bias: bool = False, k: int = 128) -> list[nn.Module]:
    torch.manual_seed(0)
    layers = [nn.Linear(k, n, bias=bias) for n in SIZES]
    if scheme is None:
        return layers
    return [QuantLinear.from_float(layer, PRESETS[scheme], backend) for layer in layers]


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


@pytest.mark.parametrize("scheme", [None, "W4A16", "W4A16_ASYM", "MXFP4", "NVFP4", "W8A8_INT8", "W8A8_FP8"])
def test_a_fused_group_gives_each_layers_output_and_stores_nothing_twice(scheme):
    layers = _siblings(scheme, bias=scheme is None)
    x = torch.randn(3, 128)
    with torch.no_grad():
        want = [layer(x) for layer in layers]
        group = fused(*layers)
        assert isinstance(group, FusedGroup) and group.sizes == list(SIZES)
        got = group(x)
        alone = [layer(x) for layer in layers]  # the layers still work on their own, through the views
    for w, g, a in zip(want, got, alone, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
        assert torch.equal(a, w)
    weight = "weight" if scheme is None else "qdata"
    storage = _storage(getattr(group.layer, weight))
    assert all(_storage(getattr(layer, weight)) == storage for layer in layers)
    assert fused(*layers) is group  # kept: one fusion per model


def test_a_replaced_layer_or_a_reassigned_weight_makes_the_group_stale():
    layers = _siblings("W4A16")
    group = fused(*layers)
    layers[1].qdata = layers[1].qdata.clone()  # no longer the view the group reads
    again = fused(*layers)
    assert again is not group and isinstance(again, FusedGroup)
    replaced = [layers[0], _siblings("W4A16")[1], layers[2]]
    assert fused(*replaced) is not again
    x = torch.randn(1, 128)
    with torch.no_grad():
        torch.testing.assert_close(fused(*replaced)(x)[1], replaced[1](x), rtol=1e-5, atol=1e-5)


def test_layers_that_cannot_share_a_kernel_stay_apart_and_say_why(monkeypatch):
    monkeypatch.setattr(fused_linears, "_LOGGED", set())
    mixed = [_siblings("W4A16")[0], _siblings("W8A16")[1], _siblings("W4A16")[2]]
    assert fused(*mixed) == "QuantLinear layers not fused: the layers differ in bits: ['4', '8']"
    assert "types ['Linear', 'QuantLinear']" in fused(nn.Linear(128, 64), *_siblings("W4A16")[1:])


def test_nvfp4_layers_with_different_global_scales_fuse_with_one_per_row_bit_exactly():
    """Each NVFP4 layer has its own per-tensor global scale; the fused layer holds them per output row and gives
    each layer's outputs bit for bit (the torch reference), while the layers keep their own one value."""
    layers = _siblings("NVFP4")
    scales = [layer.global_scale.clone() for layer in layers]
    assert len({float(s) for s in scales}) == 3
    group = fused(*layers)
    assert isinstance(group, FusedGroup)
    fused_layer = group.layer
    assert fused_layer.global_scale.shape == (sum(SIZES),)
    assert torch.equal(fused_layer.global_scale, torch.cat([s.expand(n) for s, n in zip(scales, SIZES, strict=True)]))
    for layer, scale in zip(layers, scales, strict=True):
        assert layer.global_scale.shape == () and torch.equal(layer.global_scale, scale)
        assert _storage(layer.global_scale) != _storage(fused_layer.global_scale)
    assert_close(fused_layer.dequantize(), torch.cat([layer.dequantize() for layer in layers]), what="dequantize")
    assert fused_layer.nbytes == sum(layer.nbytes for layer in layers) + 4 * (sum(SIZES) - len(SIZES))
    assert "kind=nvfp4" in repr(fused_layer)
    for m in (1, 3, 7):
        x = torch.randn(m, 128)
        with torch.no_grad():
            got = group(x)
            for layer, g in zip(layers, got, strict=True):
                assert_close(g, layer(x), what=f"fused nvfp4 rows, M={m}")
