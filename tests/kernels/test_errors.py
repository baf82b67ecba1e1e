"""Every launcher checks its arguments before launching; each message names the launcher, the argument and
what it expects."""

import pytest
import torch

from evalsuite.kernels.act_quant import act_quant
from evalsuite.kernels.fp4_gemm import fp4_gemm, mxfp4_quantize, nvfp4_quantize
from evalsuite.kernels.fp8_gemm import fp8_gemm
from evalsuite.kernels.hadamard import hadamard
from evalsuite.kernels.int8_gemm import int8_gemm
from evalsuite.kernels.w4a16_gemm import w4a16_gemm
from tests.kernels.common import DEVICE

D = DEVICE


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


def test_act_quant_errors():
    x = torch.randn(4, 8, device=D)
    _raises(r"act_quant: x must be a bfloat16, float16 or float32 tensor, got torch.int32", act_quant, x.int())
    _raises(r"act_quant: dtype must be one of \['fp8', 'int8'\], got 'int4'", act_quant, x, "int4")
    _raises(r"granularity must be 'token', 'tensor' or a positive group size, got 0", act_quant, x, "fp8", 0)
    _raises(r"granularity .* got 'row'", act_quant, x, "fp8", "row")
    _raises(r"act_quant: x must be non-empty", act_quant, torch.randn(0, 8, device=D))


def test_device_error_names_the_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    _raises(r"act_quant: tensors are on cpu; .*TRITON_INTERPRET=1.* act_quant_ref", act_quant, torch.randn(2, 8))


def _int8_operands(m=4, n=6, k=8):
    a = torch.ones(m, k, dtype=torch.int8, device=D)
    b = torch.ones(n, k, dtype=torch.int8, device=D)
    return a, torch.ones(m, 1, device=D), b, torch.ones(n, 1, device=D)


def test_int8_gemm_errors():
    a, sa, b, sb = _int8_operands()
    _raises(r"int8_gemm: a_q must be int8, got float32", int8_gemm, a.float(), sa, b, sb)
    _raises(
        r"int8_gemm: b_q must have shape \(\*, 8\), got \(6, 9\)",
        int8_gemm,
        a,
        sa,
        torch.ones(6, 9, dtype=torch.int8, device=D),
        sb,
    )
    _raises(r"int8_gemm: a_scale must be \(4, 1\) per token and b_scale \(6, 1\)", int8_gemm, a, sa[:2], b, sb)
    _raises(r"int8_gemm: bias must have shape \(6\), got \(5,\)", int8_gemm, a, sa, b, sb, torch.ones(5, device=D))
    _raises(
        r"int8_gemm: out_dtype must be torch.bfloat16, torch.float16 or torch.float32",
        int8_gemm,
        a,
        sa,
        b,
        sb,
        None,
        torch.int32,
    )
    _raises(r"int8_gemm: a_q and b_q must be contiguous along K", int8_gemm, a.t().contiguous().t(), sa, b, sb)


def test_fp8_gemm_errors():
    a, sa, b, sb = _int8_operands()
    a8, b8 = a.float().to(torch.float8_e4m3fn), b.float().to(torch.float8_e4m3fn)
    _raises(r"fp8_gemm: a_q must be float8_e4m3fn, got int8", fp8_gemm, a, sa, b8, sb)
    _raises(
        r"fp8_gemm: scales of shape \(2, 1\) and \(6, 1\) fit no scaling .* "
        r"use \(1, 1\)/\(1, 1\), \(4, 1\)/\(6, 1\) or \(4, 1\)/\(1, 1\)",
        fp8_gemm,
        a8,
        sa[:2],
        b8,
        sb,
    )
    _raises(r"fp8_gemm: accumulation 'exact' is not one of fast, precise", fp8_gemm, a8, sa, b8, sb, None,
            torch.bfloat16, "exact")  # fmt: skip


def _w4(n=6, k=64, group=32):
    return torch.zeros(n, k // 2, dtype=torch.uint8, device=D), torch.ones(n, k // group, device=D)


def test_w4a16_gemm_errors():
    x = torch.randn(3, 64, device=D, dtype=torch.bfloat16)
    q, s = _w4()
    _raises(
        r"w4a16_gemm: bits must be 4 \(two codes per byte\) or 8 \(one per byte\), got 3",
        w4a16_gemm,
        x,
        q,
        s,
        None,
        32,
        3,
    )
    _raises(
        r"w4a16_gemm: qweight must have shape \(\*, 32\), got \(6, 64\)", w4a16_gemm, x, q.repeat(1, 2), s, None, 32
    )
    _raises(r"w4a16_gemm: scale must have shape \(6, 2\), got \(6, 4\)", w4a16_gemm, x, q, s.repeat(1, 2), None, 32)
    _raises(r"w4a16_gemm: zero_point must be uint8 or int8 or int32, got float32", w4a16_gemm, x, q, s, s, 32)
    _raises(r"w4a16_gemm: group_size must be a positive int, got 0", w4a16_gemm, x, q, s, None, 0)
    _raises(
        r"w4a16_gemm: x must be bfloat16 or float16 or float32, got int8", w4a16_gemm, x.to(torch.int8), q, s, None, 32
    )


def test_fp4_errors():
    x = torch.randn(3, 64, device=D, dtype=torch.bfloat16)
    q = torch.zeros(6, 32, dtype=torch.uint8, device=D)
    mx_scale = torch.full((6, 2), 127, dtype=torch.uint8, device=D)
    nv_scale = torch.ones(6, 4, device=D).to(torch.float8_e4m3fn)
    _raises(r"fp4_gemm: fmt must be 'mxfp4' or 'nvfp4', got 'fp4'", fp4_gemm, x, q, mx_scale, "fp4")
    _raises(
        r"fp4_gemm: scale must be float8_e4m3fn, got uint8",
        fp4_gemm,
        x,
        q,
        torch.zeros(6, 4, dtype=torch.uint8, device=D),
        "nvfp4",
    )
    _raises(r"fp4_gemm: nvfp4 needs global_scale", fp4_gemm, x, q, nv_scale, "nvfp4")
    _raises(
        r"fp4_gemm: global_scale must hold one value or one per output row, shape \(6,\), got shape \(5,\)",
        fp4_gemm,
        x,
        q,
        nv_scale,
        "nvfp4",
        torch.ones(5, device=D),
    )
    _raises(r"fp4_gemm: mxfp4 takes no global_scale", fp4_gemm, x, q, mx_scale, "mxfp4", torch.tensor(1.0, device=D))
    _raises(r"fp4_gemm: scale must have shape \(6, 2\), got \(6, 4\)", fp4_gemm, x, q, mx_scale.repeat(1, 2), "mxfp4")
    _raises(r"mxfp4_quantize: w must have shape \(\*, \*\), got \(64,\)", mxfp4_quantize, torch.randn(64, device=D))
    _raises(
        r"nvfp4_quantize: global_scale must hold one value",
        nvfp4_quantize,
        torch.randn(2, 64, device=D),
        torch.ones(2, device=D),
    )


def test_hadamard_errors():
    _raises(r"hadamard: the last dimension must be a power of two, got 12", hadamard, torch.randn(2, 12, device=D))
    _raises(
        r"hadamard: x must be float32 or bfloat16 or float16, got int64",
        hadamard,
        torch.ones(2, 8, dtype=torch.long, device=D),
    )
