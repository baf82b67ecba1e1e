"""The graph decoder's fused q/k/v layer through the Triton kernels (the interpreter on CPU): at M = 1 it takes
the GEMV over the three layers' rows and gives the outputs the layers give apart."""

import pytest
import torch
from torch import nn

from evalsuite.fused_linears import fused
from evalsuite.kernels import paths
from evalsuite.quant_schemes import PRESETS
from evalsuite.quant_schemes.linear import QuantLinear
from tests.kernels.common import DEVICE, GEMM_TOL, ON_GPU
from tests.utils import assert_close


@pytest.mark.parametrize("scheme", ["W4A16", "MXFP4"])
def test_the_fused_layer_runs_the_triton_decode_kernel(scheme):
    torch.manual_seed(0)
    layers = [
        QuantLinear.from_float(nn.Linear(128, n).to(DEVICE, torch.bfloat16), PRESETS[scheme], "triton")
        for n in (64, 32, 32)
    ]
    x = torch.randn(1, 128, device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        want = [layer(x).float() for layer in layers]
        paths.reset()
        got = fused(*layers)(x)
    assert [(e["path"], e["calls"]) for e in paths.taken()] == [(paths.TRITON_GEMV, 1)]  # one launch, not three
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g.float(), w, rtol=2e-2, atol=2e-2 * w.abs().max().item())


@pytest.mark.parametrize(
    "m, path",
    [(1, paths.TRITON_GEMV), (5, paths.TRITON_GEMM), (256, paths.DEQUANT_CUBLAS)],
    ids=["M1-gemv", "M5-fused-gemm", "M256-dequant-matmul"],
)
def test_fused_nvfp4_layers_give_each_layers_output_in_one_launch(m, path):
    """q/k/v in NVFP4 with three different global scales fuse (one per output row) and run one kernel; on the
    interpreter, whose tiles do not depend on N, each row's arithmetic is its layer's: bit for bit. On a GPU the
    K split depends on N: GEMM tolerance."""
    torch.manual_seed(0)
    linears = [nn.Linear(128, n) for n in (64, 32, 32)]
    for linear in linears:  # normal weights: their absmax, and so their global scales, differ
        nn.init.normal_(linear.weight, std=0.05)
    layers = [QuantLinear.from_float(lin.to(DEVICE, torch.bfloat16), PRESETS["NVFP4"], "triton") for lin in linears]
    assert len({float(layer.global_scale) for layer in layers}) == 3
    x = torch.randn(m, 128, device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        want = [layer(x) for layer in layers]
        group = fused(*layers)
        paths.reset()
        got = group(x)
    assert [(e["path"], e["calls"]) for e in paths.taken()] == [(path, 1)]
    atol, rtol = GEMM_TOL[torch.bfloat16] if ON_GPU else (0, 0)
    for w, g in zip(want, got, strict=True):
        assert_close(g.cpu(), w.cpu(), atol=atol, rtol=rtol, what=f"fused nvfp4, M={m}")
