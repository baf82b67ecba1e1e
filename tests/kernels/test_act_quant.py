import pytest
import torch

from evalsuite.kernels.act_quant import AMAX_FLOOR, QMAX, act_quant, act_quant_ref
from tests.kernels.common import DEVICE, shapes
from tests.utils import assert_close

GRANULARITIES = ["token", "tensor", 128, 40]


def _same(x: torch.Tensor, dtype: str, granularity) -> None:
    q, scale = act_quant(x, dtype, granularity)
    q_ref, scale_ref = act_quant_ref(x.cpu(), dtype, granularity)
    assert_close(scale.cpu(), scale_ref, what="scale")
    assert_close(q.cpu(), q_ref, what="codes")


@pytest.mark.parametrize(
    "shape", shapes([(1, 1), (3, 40), (33, 200), (2, 33000)], [(1, 4096), (133, 528), (2048, 4096)])
)
@pytest.mark.parametrize("granularity", GRANULARITIES, ids=str)
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_matches_reference(shape, granularity, dtype):
    x = (torch.randn(shape) * torch.logspace(-2, 2, shape[1])).to(torch.bfloat16)
    x[0] = 0  # an all-zero row gets the finite floor scale and zero codes
    _same(x.to(DEVICE), dtype, granularity)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_other_input_dtypes_and_leading_dims(x_dtype, dtype):
    x = (torch.randn(2, 3, 72) * 5).to(x_dtype).to(DEVICE)
    for granularity in GRANULARITIES:
        _same(x, dtype, granularity)


def test_all_zero_input_gets_the_floor_scale():
    x = torch.zeros(3, 50, device=DEVICE)
    for dtype in ("int8", "fp8"):
        q, scale = act_quant(x, dtype, "tensor")
        assert torch.equal(q.cpu().view(torch.uint8), torch.zeros(3, 50, dtype=torch.uint8))
        floor = torch.tensor([[AMAX_FLOOR]], dtype=torch.float32) / QMAX[dtype]  # fp32 division, as the reference
        assert_close(scale.cpu(), floor, what="scale")


def _e4m3_cases() -> torch.Tensor:
    """Every finite E4M3 value, every midpoint between neighbours (ties to even), values just either side of
    a binade carry, signed zeros, tiny subnormal ties; all within +-448 so a row with 448 in it has scale 1."""
    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    values = codes[torch.isfinite(codes)].unique()
    mids = (values[1:] + values[:-1]) / 2
    eps = torch.tensor([2**-22, 2**-21, -(2**-22)])
    near = (mids[:, None] * (1 + eps[None, :])).flatten()
    special = torch.tensor(
        [448.0, -448.0, 447.99, 127.99, -127.99, -336.0, 336.0, 0.0, -0.0, 2**-10, 3 * 2**-10, 1e-30]
    )
    return torch.cat([special, values, mids, -mids, near, -near])


def test_fp8_ties_saturation_and_subnormals():
    x = _e4m3_cases()[None, :].to(DEVICE)  # (1, K), amax 448 -> scale exactly 1
    q, scale = act_quant(x, "fp8", "token")
    assert scale.item() == 1.0
    assert_close(q.cpu(), x.cpu().to(torch.float8_e4m3fn), what="fp8 codes vs torch's RNE cast")
    _same(x, "fp8", "token")


def test_int8_ties_round_to_even_and_saturate():
    x = torch.tensor([[127.0, -127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -126.5, 0.49999997, 3.5000002, 0.0, -0.0]])
    q, scale = act_quant(x.to(DEVICE), "int8", "token")
    assert scale.item() == 1.0
    expected = torch.tensor([[127, -127, 0, 2, 2, 0, -2, 126, -126, 0, 4, 0, 0]], dtype=torch.int8)
    assert_close(q.cpu(), expected, what="int8 codes")
    _same(x.to(DEVICE), "int8", "token")
