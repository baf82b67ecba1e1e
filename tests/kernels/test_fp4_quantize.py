import pytest
import torch

from evalsuite.kernels.fp4_gemm import (
    E2M1_MIDPOINTS,
    E2M1_VALUES,
    mxfp4_quantize,
    mxfp4_quantize_ref,
    nvfp4_quantize,
    nvfp4_quantize_ref,
)
from tests.kernels.common import DEVICE, shapes
from tests.utils import assert_close


def _same_mx(w):
    packed, scale = mxfp4_quantize(w)
    packed_ref, scale_ref = mxfp4_quantize_ref(w.cpu())
    assert_close(scale.cpu(), scale_ref, what="E8M0 scales")
    assert_close(packed.cpu(), packed_ref, what="packed codes")


def _same_nv(w, global_scale=None):
    packed, scale, gs = nvfp4_quantize(w, global_scale)
    packed_ref, scale_ref, gs_ref = nvfp4_quantize_ref(w.cpu(), None if global_scale is None else global_scale.cpu())
    assert_close(gs.cpu(), gs_ref, what="global scale")
    assert_close(scale.cpu(), scale_ref, what="E4M3 scales")
    assert_close(packed.cpu(), packed_ref, what="packed codes")


@pytest.mark.parametrize("shape", shapes([(1, 1), (3, 40), (5, 33), (7, 200)], [(4096, 4096), (257, 1000)]))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_matches_reference(shape, dtype):
    w = torch.randn(shape) * torch.logspace(-4, 1, shape[1])  # groups of very different magnitude
    w[0] = 0  # all-zero groups
    w = w.to(dtype).to(DEVICE)
    _same_mx(w)
    _same_nv(w)
    _same_nv(w, torch.tensor(123.4, device=DEVICE))


def _ties(amax: float) -> torch.Tensor:
    """One MX group per row: the E2M1 values, midpoints (ties go to the even code) and their neighbours,
    saturating values and signed zeros, padded with `amax` so the group's scale is fixed."""
    mids = torch.tensor([m for m, _ in E2M1_MIDPOINTS])
    vals = torch.cat(
        [torch.tensor(E2M1_VALUES), mids, mids.nextafter(torch.tensor(0.0)), mids.nextafter(torch.tensor(9.0))]
    )
    vals = torch.cat([vals, -vals, torch.tensor([5.9, 7.5, -7.9, -0.0, 0.1, -0.1])])
    rows = vals.reshape(-1, 8)
    return torch.cat([rows, torch.full((rows.shape[0], 24), amax)], dim=1)  # (R, 32): one MX, two NV groups


def test_mxfp4_ties_and_saturation():
    w = _ties(7.9)  # amax in [4, 8): shared exponent 0, scale 1, so the codes round the values themselves
    packed, scale = mxfp4_quantize(w.to(DEVICE))
    assert (scale.cpu() == 127).all()
    _same_mx(w.to(DEVICE))


def test_nvfp4_ties_and_saturation():
    w = _ties(6.0)  # amax 6 with global scale 448: block scale 448 / 448 = 1
    _same_nv(w.to(DEVICE), torch.tensor(448.0))
    _same_nv(w.to(DEVICE))


def test_tiny_and_subnormal_groups():
    w = torch.tensor([[1e-39] * 32 + [3e-38] * 32 + [1e-30] * 16 + [0.0] * 16])
    _same_mx(w.to(DEVICE))
    _same_nv(w.to(DEVICE))
