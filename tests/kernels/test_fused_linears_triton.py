"""The graph decoder's fused q/k/v layer through the Triton kernels (the interpreter on CPU): at M = 1 it takes
the GEMV over the three layers' rows and gives the outputs the layers give apart."""

import pytest
import torch
from torch import nn

from evalsuite.fused_linears import fused
from evalsuite.kernels import paths
from evalsuite.quant_schemes import PRESETS
from evalsuite.quant_schemes.linear import QuantLinear
from tests.kernels.common import DEVICE


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
