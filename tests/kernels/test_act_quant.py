import pytest
import torch

from evalsuite.kernels import act_quant as act_quant_module
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


@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_programs_that_loop_over_rows_match_the_reference(monkeypatch, dtype):
    """Fewer programs than rows (each takes every P-th row, the next one's load ahead of this one's work),
    including the last program's rows past M and a static scale."""
    monkeypatch.setattr(act_quant_module, "ROW_WARPS_PER_SM", 1)  # one program an SM
    x = (torch.randn(4 * act_quant_module.num_sms(torch.device(DEVICE)) + 3, 136) * 7).to(torch.bfloat16)
    x[5] = 0
    for granularity in ("token", "tensor"):
        _same(x.to(DEVICE), dtype, granularity)
    scale = torch.full((1, 1), 0.05)
    q, _ = act_quant(x.to(DEVICE), dtype, "tensor", scale.to(DEVICE))
    q_ref, _ = act_quant_ref(x, dtype, "tensor", scale)
    assert_close(q.cpu(), q_ref, what="codes")


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


@pytest.mark.parametrize(
    "k, granularity", [(3, "token"), (3, 128), (3, 40), (33000, "token")], ids=["token", "g128", "g40", "two-pass"]
)
def test_quotients_that_round_to_a_tie_give_the_even_code(k, granularity):
    """Row (or group) [2m, m, -m, ...]: the scale 2m / 127 is inexact, and m / scale rounds to exactly 63.5
    in fp32, whose code is 64 (round half to even). Triton 3.8's interpreter rounds the product inside
    `tl.fma`, so the one-FMA correction of x * (1 / scale) gave 63.499996 and the code 63."""
    m = torch.arange(100, 300 if k == 3 else 104).float()[:, None]
    x = torch.cat([2 * m, m.expand(-1, k - 1) * torch.tensor([1.0, -1.0]).repeat((k - 1 + 1) // 2)[: k - 1]], 1)
    q, scale = act_quant(x.to(DEVICE), "int8", granularity)
    q_ref, scale_ref = act_quant_ref(x, "int8", granularity)
    ties = (x[:, 1] / scale_ref[:, 0]).abs() == 63.5
    assert ties.sum() > len(m) // 4, "the inputs no longer produce ties: the test would check nothing"
    assert torch.all(q_ref[ties, 1].abs() == 64)
    assert_close(scale.cpu(), scale_ref, what="scale")
    assert_close(q.cpu(), q_ref, what="int8 codes of quotients that round to a tie")


@pytest.mark.parametrize("granularity", GRANULARITIES, ids=str)
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_a_nan_activation_gives_a_nan_scale_as_the_reference(granularity, dtype):
    """A NaN in the input must not vanish into a finite scale (the GPU's plain max drops NaN): the scale of
    its row, group or tensor is NaN, as torch's amax makes it, and the other scales are unchanged."""
    x = torch.randn(3, 200)
    x[1, 77] = float("nan")
    _, scale = act_quant(x.to(DEVICE), dtype, granularity)
    _, scale_ref = act_quant_ref(x, dtype, granularity)
    assert torch.equal(scale.cpu().isnan(), scale_ref.isnan()) and scale_ref.isnan().any()
    assert_close(scale.cpu()[~scale_ref.isnan()], scale_ref[~scale_ref.isnan()], what="finite scales")


# --- static (given) per-tensor scales: a calibrated checkpoint's input_scale ---------------------------------


def _same_static(x: torch.Tensor, dtype: str, scale: torch.Tensor) -> None:
    q, s = act_quant(x, dtype, "tensor", scale.to(x.device))
    q_ref, s_ref = act_quant_ref(x.cpu(), dtype, "tensor", scale.cpu())
    assert_close(s.cpu(), scale.cpu(), what="static scale is returned as given")
    assert_close(s_ref, scale.cpu(), what="reference returns the static scale as given")
    assert_close(q.cpu(), q_ref, what="static codes")


@pytest.mark.parametrize(
    "shape", shapes([(1, 1), (3, 40), (33, 200), (2, 33000)], [(1, 4096), (133, 528), (2048, 4096)])
)
@pytest.mark.parametrize("fraction", [0.25, 1.0, 3.0], ids=lambda f: f"amax_x{f}")
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_static_scale_matches_reference(shape, fraction, dtype):
    """A scale of amax * fraction / QMAX: below 1 a share of the values saturates, above 1 none does."""
    x = (torch.randn(shape) * torch.logspace(-2, 2, shape[1])).to(torch.bfloat16)
    x[0] = 0
    amax = x.float().abs().amax().clamp(min=1.0)
    scale = (amax * fraction / QMAX[dtype]).reshape(1, 1)
    _same_static(x.to(DEVICE), dtype, scale)


@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_static_scale_with_arbitrary_scales_and_input_dtypes(dtype):
    """Scales that are not absmax / QMAX (random mantissas, tiny and huge), fp32/fp16/bf16 inputs."""
    x = torch.randn(5, 3, 77) * torch.logspace(-3, 3, 77)
    for scale in torch.cat([torch.rand(6) * 10.0 ** torch.randint(-4, 3, (6,)), torch.tensor([1e-30, 1e30])]):
        for x_dtype in (torch.float32, torch.float16, torch.bfloat16):
            _same_static(x.to(x_dtype).to(DEVICE), dtype, scale.reshape(1, 1))


def test_static_fp8_ties_saturation_and_overflow():
    """Scale 1: the codes are torch's RNE cast of x itself, values past +-448 saturate, and quotients that
    overflow fp32 (3e38 / 0.01) saturate instead of turning into NaN."""
    cases = _e4m3_cases()
    beyond = torch.tensor([448.5, 464.0, 480.0, -500.0, 1e4, -1e30, 3e38, -3e38])
    x = torch.cat([cases, beyond])[None, :]  # (1, K)
    q, s = act_quant(x.to(DEVICE), "fp8", "tensor", torch.ones(1, 1, device=DEVICE))
    assert_close(q.cpu(), x.clamp(-448, 448).to(torch.float8_e4m3fn), what="fp8 codes vs torch's RNE cast")
    _same_static(x.to(DEVICE), "fp8", torch.ones(1, 1))
    q, _ = act_quant(x.to(DEVICE), "fp8", "tensor", torch.full((1, 1), 0.01, device=DEVICE))
    assert q.cpu().float()[0, -2:].tolist() == [448.0, -448.0]
    _same_static(x.to(DEVICE), "fp8", torch.full((1, 1), 0.01))


def test_static_int8_uses_the_given_scale_rounds_to_even_and_saturates():
    x = torch.tensor([[1.0, 2.0, 0.25, 0.75, 1.25, -0.25, -1.25, 63.0, 64.0, -63.5, -63.75, -64.0, -100.0, 3e38]])
    q, s = act_quant(x.to(DEVICE), "int8", "tensor", torch.full((1, 1), 0.5, device=DEVICE))
    # x / 0.5, ties to even, saturated at [-128, 127] (compressed-tensors' and vLLM's static range); a dynamic
    # scale would be 3e38 / 127 instead
    expected = torch.tensor([[2, 4, 0, 2, 2, 0, -2, 126, 127, -127, -128, -128, -128, 127]], dtype=torch.int8)
    assert_close(q.cpu(), expected, what="int8 codes with static scale 0.5")
    assert s.item() == 0.5
    _same_static(x.to(DEVICE), "int8", torch.full((1, 1), 0.5))


def test_static_scale_errors_name_the_argument():
    x = torch.randn(2, 8, device=DEVICE)
    for fn in (act_quant, act_quant_ref):
        with pytest.raises(ValueError, match="static scale is per tensor: pass granularity 'tensor', not 'token'"):
            fn(x, "fp8", "token", torch.ones(1, 1, device=DEVICE))
        with pytest.raises(ValueError, match=r"scale \(static\) must be float32, got bfloat16"):
            fn(x, "fp8", "tensor", torch.ones(1, 1, dtype=torch.bfloat16, device=DEVICE))
        with pytest.raises(ValueError, match=r"scale \(static\) must have shape \(1, 1\), got \(2,\)"):
            fn(x, "int8", "tensor", torch.ones(2, device=DEVICE))
