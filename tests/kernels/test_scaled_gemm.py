import pytest
import torch

from evalsuite.kernels import _scaled_gemm
from evalsuite.kernels.act_quant import act_quant_ref
from evalsuite.kernels.fp8_gemm import fp8_gemm, fp8_gemm_ref
from evalsuite.kernels.int8_gemm import int8_gemm, int8_gemm_ref
from tests.kernels.common import DEVICE, GEMM_TOL, ON_GPU, shapes
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


def _check(y, y_ref, out_dtype, what):
    atol, rtol = GEMM_TOL[out_dtype]
    if ON_GPU and "fp8" in what and out_dtype == torch.float32:  # Hopper's fp8 MMA accumulates a few bits short
        atol, rtol = 1e-2, 1e-2
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
def test_fp8_gemm(shape, scaling, out_dtype):
    m, n, k = shape
    a_q, a_scale, b_q, b_scale = _operands(m, n, k, "fp8", scaling)
    bias = torch.randn(n, device=DEVICE, dtype=torch.bfloat16) if m % 2 else None
    y = fp8_gemm(a_q, a_scale, b_q, b_scale, bias, out_dtype)
    y_ref = fp8_gemm_ref(a_q, a_scale, b_q, b_scale, bias, out_dtype)
    _check(y, y_ref, out_dtype, "fp8_gemm")


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
    _check(y, ref, torch.float32, f"{dtype} tile config")
