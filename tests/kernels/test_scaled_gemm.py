import pytest
import torch

from evalsuite.kernels import _scaled_gemm
from evalsuite.kernels.act_quant import act_quant_ref
from evalsuite.kernels.fp8_gemm import fp8_gemm, fp8_gemm_ref
from evalsuite.kernels.int8_gemm import int8_gemm, int8_gemm_ref
from tests.kernels.common import DEVICE, GEMM_TOL, GPU, HOPPER, fp8_gemm_tol, shapes
from tests.utils import assert_close

CPU_SHAPES = [(1, 1, 1), (3, 40, 72), (33, 96, 200), (17, 130, 257)]
GPU_SHAPES = [(1, 1, 1023), (1, 4096, 4096), (16, 4096, 4096), (133, 512, 528), (2048, 4096, 4096)]
OUT_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def _operands(m, n, k, dtype, granularity="token"):
    x = torch.randn(m, k, device=DEVICE) / k**0.25
    w = torch.randn(n, k, device=DEVICE) / k**0.25
    a_q, a_scale = act_quant_ref(x, dtype, granularity)
    if granularity == 128:  # weights: one scale per 128x128 block
        b_q = (torch.randn(n, k, device=DEVICE) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
        b_scale = torch.rand(-(-n // 128), -(-k // 128), device=DEVICE) / (100 * k**0.25)
    else:
        b_q, b_scale = act_quant_ref(w, dtype, "token" if granularity == "token" else "tensor")
    return a_q, a_scale, b_q, b_scale


def _check(y, y_ref, out_dtype, what, tol=None):
    atol, rtol = tol or GEMM_TOL[out_dtype]
    assert y.dtype == out_dtype
    assert_close(y.cpu(), y_ref.cpu(), atol=atol, rtol=rtol, what=what)


@pytest.mark.parametrize("shape", shapes(CPU_SHAPES, GPU_SHAPES))
@pytest.mark.parametrize("out_dtype", OUT_DTYPES, ids=str)
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_int8_gemm(shape, out_dtype, with_bias):
    m, n, k = shape
    a_q, a_scale, b_q, b_scale = _operands(m, n, k, "int8")
    bias = torch.randn(n, device=DEVICE) if with_bias else None
    y = int8_gemm(a_q, a_scale, b_q, b_scale, bias, out_dtype)
    _check(y, int8_gemm_ref(a_q, a_scale, b_q, b_scale, bias, out_dtype), out_dtype, "int8_gemm")


@pytest.mark.parametrize("shape", shapes(CPU_SHAPES, GPU_SHAPES))
@pytest.mark.parametrize("scaling", ["tensor", "token", 128], ids=["tensorwise", "rowwise", "block128"])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("accumulation", ["fast", "precise"])
def test_fp8_gemm(shape, scaling, out_dtype, accumulation):
    m, n, k = shape
    a_q, a_scale, b_q, b_scale = _operands(m, n, k, "fp8", scaling)
    bias = torch.randn(n, device=DEVICE, dtype=torch.bfloat16) if m % 2 else None
    y = fp8_gemm(a_q, a_scale, b_q, b_scale, bias, out_dtype, accumulation)
    y_ref = fp8_gemm_ref(a_q, a_scale, b_q, b_scale, bias, out_dtype)
    _check(y, y_ref, out_dtype, f"fp8_gemm ({accumulation})", fp8_gemm_tol(out_dtype, accumulation))


@GPU[0]
@GPU[1]
@pytest.mark.parametrize("accumulation", ["fast", "precise"])
def test_fp8_gemm_gives_the_same_bits_every_call(accumulation):
    """A run on an H100 (2026-12-06) put one element of the 2048x4096x4096 fp32 case just outside tolerance
    that another run with the same seed passed. The kernel must not be the variable: the same inputs give the
    same bits in every call (the reference, a fixed cuBLAS matmul, is checked the same way)."""
    a_q, a_scale, b_q, b_scale = _operands(2048, 4096, 4096, "fp8", "tensor")
    first = fp8_gemm(a_q, a_scale, b_q, b_scale, None, torch.float32, accumulation)
    ref = fp8_gemm_ref(a_q, a_scale, b_q, b_scale, None, torch.float32)
    for call in range(10):
        again = fp8_gemm(a_q, a_scale, b_q, b_scale, None, torch.float32, accumulation)
        assert torch.equal(again, first), f"call {call + 1}: {int((again != first).sum())} elements changed"
        assert torch.equal(fp8_gemm_ref(a_q, a_scale, b_q, b_scale, None, torch.float32), ref), "the reference"


@GPU[0]
@GPU[1]
@pytest.mark.parametrize("config_name", ["heuristic", "persistent"])
@pytest.mark.parametrize("accumulation", ["fast", "precise"])
def test_fp8_accumulation_errs_as_scaled_mm_in_the_same_mode(accumulation, config_name):
    """Each mode's error against fp32 accumulation is that of torch._scaled_mm in the same mode (fast:
    use_fast_accum=True); on Hopper, where the two modes differ, precise is several times more accurate."""
    m, n, k = 512, 4096, 4096
    torch.manual_seed(0)
    a_q, a_scale, b_q, b_scale = _operands(m, n, k, "fp8")
    config = None if config_name == "heuristic" else _scaled_gemm.GemmConfig(128, 128, 128, 8, 8, 3, persistent=True)
    ref = fp8_gemm_ref(a_q, a_scale, b_q, b_scale, None, torch.float32)

    def err(y):
        return float((y - ref).abs().max() / ref.abs().max())

    precise = accumulation == "precise"
    ours = _scaled_gemm.launch(a_q, a_scale, b_q, b_scale, None, torch.float32, "row", config, precise)
    theirs = torch._scaled_mm(
        a_q, b_q.t(), a_scale, b_scale.reshape(1, -1), out_dtype=torch.float32, use_fast_accum=accumulation == "fast"
    )
    assert err(ours) <= 1.5 * err(theirs) + 1e-6, f"ours {err(ours):.2e} vs _scaled_mm {err(theirs):.2e}"
    if HOPPER:
        other = _scaled_gemm.launch(a_q, a_scale, b_q, b_scale, None, torch.float32, "row", config, not precise)
        fast_err, precise_err = (err(other), err(ours)) if precise else (err(ours), err(other))
        assert precise_err * 4 < fast_err, f"precise {precise_err:.2e} is not well under fast {fast_err:.2e}"


def test_expanded_per_tensor_scales():
    """QuantLinear passes per-tensor activation scales expanded to (M, 1): stride 0 rows."""
    a_q, a_scale, b_q, b_scale = _operands(5, 48, 64, "int8", "tensor")
    a_rows, b_rows = a_scale.expand(5, 1), b_scale.expand(48, 1)
    y = int8_gemm(a_q, a_rows, b_q, b_rows)
    _check(y, int8_gemm_ref(a_q, a_rows, b_q, b_rows), torch.bfloat16, "int8_gemm with expanded scales")


@pytest.mark.parametrize(
    "config",
    [
        _scaled_gemm.GemmConfig(16, 16, 32, 1, 4, 1),
        _scaled_gemm.GemmConfig(32, 64, 128, 2, 4, 2),
        _scaled_gemm.GemmConfig(32, 32, 64, 2, 4, 2, persistent=True),
    ],
    ids=["16x16x32", "32x64x128-group2", "persistent-tma-32x32x64"],
)
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_other_tile_configs(config, dtype):
    a_q, a_scale, b_q, b_scale = _operands(70, 150, 304, dtype)  # K % 16 == 0: TMA-aligned rows
    bias = torch.randn(150, device=DEVICE)
    y = _scaled_gemm.launch(a_q, a_scale, b_q, b_scale, bias, torch.float32, "row", config)
    ref = (int8_gemm_ref if dtype == "int8" else fp8_gemm_ref)(a_q, a_scale, b_q, b_scale, bias, torch.float32)
    tol = fp8_gemm_tol(torch.float32, "fast") if dtype == "fp8" else None
    _check(y, ref, torch.float32, f"{dtype} tile config", tol)
