"""The FP8 training GEMM (E4M3 or E5M2 times E4M3, rowwise or tensorwise scales) against its reference."""

import pytest
import torch

from evalsuite.kernels.act_quant import act_quant_ref
from evalsuite.kernels.train_gemm import fp8_train_gemm, fp8_train_gemm_ref
from evalsuite.kernels.train_quant import grad_quant_ref
from tests.kernels.common import DEVICE, shapes


def _operands(m, n, k, a_format, granularity):
    gen = torch.Generator().manual_seed(m * 7 + n * 3 + k)
    a = torch.randn(m, k, generator=gen) * torch.logspace(-2, 1, m).reshape(m, 1)  # rows of different scale
    b = torch.randn(n, k, generator=gen)
    a_q = grad_quant_ref(a, granularity) if a_format == "e5m2" else act_quant_ref(a, "fp8", granularity)
    return a_q, act_quant_ref(b, "fp8", granularity)


@pytest.mark.parametrize("shape", shapes([(1, 1, 16), (33, 17, 40), (5, 70, 129), (64, 64, 64)], [(4096, 4096, 4096)]))
@pytest.mark.parametrize("granularity", ["token", "tensor"])
@pytest.mark.parametrize("a_format", ["e4m3", "e5m2"])
def test_fp8_train_gemm_matches_reference(shape, granularity, a_format):
    (a_q, a_s), (b_q, b_s) = _operands(*shape, a_format, granularity)
    ref = fp8_train_gemm_ref(a_q, a_s, b_q, b_s)
    out = fp8_train_gemm(a_q.to(DEVICE), a_s.to(DEVICE), b_q.to(DEVICE), b_s.to(DEVICE))
    # exact products, fp32 sums in another order; on Hopper the fast accumulator keeps a few bits less
    rtol = 1e-5 if DEVICE == "cpu" else 5e-3
    bound = rtol * ((a_q.float().abs() @ b_q.float().abs().t()) * a_s * b_s.t())  # (M, N): the sum of |products|
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert ((out.cpu() - ref).abs() <= bound + 1e-30).all(), f"max error {(out.cpu() - ref).abs().max():.3g}"


def test_fp8_train_gemm_bad_input_is_named():
    (a_q, a_s), (b_q, b_s) = _operands(4, 8, 32, "e5m2", "token")
    with pytest.raises(ValueError, match=r"fit neither rowwise \(4, 1\)/\(8, 1\)"):
        fp8_train_gemm_ref(a_q, a_s, b_q, a_s)
    with pytest.raises(ValueError, match="b_q must be float8_e4m3fn, got float8_e5m2"):
        fp8_train_gemm_ref(a_q, a_s, b_q.to(torch.float8_e5m2), b_s)
    with pytest.raises(ValueError, match=r"b_q must have shape \(\*, 32\)"):
        fp8_train_gemm_ref(a_q, a_s, b_q[:, :16], b_s)
