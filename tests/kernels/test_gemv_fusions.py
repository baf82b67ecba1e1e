"""The decode GEMV's fused RMSNorm (prologue) and residual add (epilogue): each equals, bit for bit, the same
GEMV run on the input normalized outside it or followed by the add in torch, and the public entries, their
references and their errors. The norm inputs are chosen so that every sum of squares is exact in fp32 (values
on a 1/4 grid): the kernel's summation order then cannot change its rstd, and equality is the test."""

import numpy as np
import pytest
import torch

from evalsuite.kernels import _weight_only
from evalsuite.kernels.fp4_gemm import fp4_gemm, fp4_gemm_ref, mxfp4_quantize_ref, nvfp4_quantize_ref
from evalsuite.kernels.w4a16_gemm import pack_int4, w4a16_gemm, w4a16_gemm_ref
from tests.kernels.common import DEVICE, GEMM_TOL
from tests.utils import assert_close

CONFIGS = {  # split K or not, staged loads, a tile narrower than the norm's block
    "n8-k64-split2": _weight_only.WeightOnlyConfig(8, 4, 64, 2, 4, 1, gemv=True),
    "n16-k128": _weight_only.WeightOnlyConfig(16, 4, 128, 1, 4, 1, gemv=True),
    "n4-k32-split2-staged3": _weight_only.WeightOnlyConfig(4, 4, 32, 2, 2, 3, gemv=True, prefetch=False),
}
FORMATS = ["int4-sym", "int4-asym", "int8", "mxfp4", "nvfp4"]
# every config and format in bf16, and the other activation dtypes (their own rounding) on one config
CASES = [pytest.param(c, f, torch.bfloat16, id=f"{name}-{f}-bf16") for name, c in CONFIGS.items() for f in FORMATS]
CASES += [
    pytest.param(CONFIGS["n8-k64-split2"], f, d, id=f"n8-k64-split2-{f}-{str(d)[6:]}")
    for f in ("int4-asym", "int8", "nvfp4")
    for d in (torch.float16, torch.float32)
]


def _grid_values(m, k, dtype, offset=0):
    """(m, k) values on a 1/4 grid in [-2, 2): their squares sum exactly in fp32 in any order."""
    base = torch.randint(-8, 8, (m, k + offset), device=DEVICE).to(dtype) / 4
    return base[:, offset:]


def _weights(fmt, n, k):
    """(launch arguments after x, reference call) for `fmt` weights of shape (n, k)."""
    if fmt.startswith("int"):
        bits, group = (8, 64) if fmt == "int8" else (4, 32)
        codes = torch.randint(0, 2**bits, (n, k), dtype=torch.uint8, device=DEVICE)
        qweight = pack_int4(codes) if bits == 4 else codes
        scale = torch.rand(n, k // group, device=DEVICE) * 2 / (2**bits * k**0.5)
        zp = torch.randint(0, 16, (n, k // group), dtype=torch.uint8, device=DEVICE) if fmt == "int4-asym" else None
        code = _weight_only.FMT_INT4 if bits == 4 else _weight_only.FMT_INT8
        args = (qweight, scale, zp, None, None, group, code)
        return args, lambda x, **kw: w4a16_gemm_ref(x, qweight, scale, zp, group, bits, **kw)
    w = torch.randn(n, k, device=DEVICE) / k**0.5
    if fmt == "mxfp4":
        (packed, scale), gs = mxfp4_quantize_ref(w), None
    else:
        packed, scale, gs = nvfp4_quantize_ref(w)
    code = _weight_only.FMT_MXFP4 if fmt == "mxfp4" else _weight_only.FMT_NVFP4
    args = (packed, scale.view(torch.uint8), None, gs, None, 32 if fmt == "mxfp4" else 16, code)
    return args, lambda x, **kw: fp4_gemm_ref(x, packed, scale, fmt, gs, **kw)


def _normalized(h, weight, eps):
    """The kernel's RMSNorm, rstd in numpy float32 (each operation correctly rounded, which torch's CPU division
    and reciprocal are not always): with the exact sums of `_grid_values` the same bits as the GEMV's prologue,
    and rms_norm_ref's result but for the last bit of rstd."""
    h32 = h.float()
    sums = h32.pow(2).sum(-1, keepdim=True).cpu().numpy()  # exact
    one, k, eps32 = np.float32(1), np.float32(h.shape[-1]), np.float32(eps)
    rstd = torch.from_numpy(one / np.sqrt(sums / k + eps32)).to(h.device)
    return weight * (h32 * rstd).to(h.dtype)


@pytest.mark.parametrize("config, fmt, dtype", CASES)
def test_norm_prologue_is_the_gemv_of_the_normalized_input(config, fmt, dtype):
    """M 1 and 3, K with a partial last tile (160 and 192 are not multiples of 128), gated and not."""
    for m, n, k in ((1, 12, 160), (3, 6, 192)):
        h = _grid_values(m, k, dtype)
        weight = torch.randn(k, device=DEVICE).to(dtype)
        args, _ = _weights(fmt, n, k)
        x = _normalized(h, weight, 1e-5)
        for gated in (False, True):
            got = _weight_only.launch(h, *args, config, gated=gated, norm=(weight, 1e-5))
            want = _weight_only.launch(x, *args, config, gated=gated)
            assert torch.equal(got, want), f"{fmt} M={m} K={k} gated={gated}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_norm_prologue_reads_values_one_by_one_where_quads_do_not_apply(fmt):
    """h two bytes off 8-byte alignment, or a norm weight that is: each value loaded on its own, same bits."""
    m, n, k = 2, 12, 128
    args, _ = _weights(fmt, n, k)
    h_aligned, h_off = _grid_values(m, k, torch.bfloat16), _grid_values(m, k, torch.bfloat16, offset=1)
    weight_store = torch.randn(k + 1, device=DEVICE).to(torch.bfloat16)
    for h, weight in ((h_off, weight_store[:k]), (h_aligned, weight_store[1:])):
        want = _weight_only.launch(_normalized(h, weight, 1e-6), *args, CONFIGS["n16-k128"])
        assert torch.equal(_weight_only.launch(h, *args, CONFIGS["n16-k128"], norm=(weight, 1e-6)), want)


def test_norm_prologue_sums_rows_longer_than_its_block_in_several_steps(monkeypatch):
    """Rows longer than the prologue's block are summed a block at a time: one value per thread (4 warps: a
    128-value block) on a 200-wide row, partial last block included."""
    from evalsuite.kernels import _weight_only_gemv

    monkeypatch.setattr(_weight_only_gemv, "NORM_PER_THREAD", 1)
    m, n, k = 2, 12, 200
    args, _ = _weights("int4-asym", n, k)
    h = _grid_values(m, k, torch.bfloat16)
    weight = torch.randn(k, device=DEVICE).to(torch.bfloat16)
    want = _weight_only.launch(_normalized(h, weight, 1e-5), *args, CONFIGS["n16-k128"])
    assert torch.equal(_weight_only.launch(h, *args, CONFIGS["n16-k128"], norm=(weight, 1e-5)), want)


@pytest.mark.parametrize("config, fmt, dtype", CASES)
def test_residual_epilogue_adds_the_rounded_output(config, fmt, dtype):
    """residual + y, with y rounded to the output dtype first, as torch adds a layer's output to h; a bias and
    the split-K reduction before it."""
    m, n, k = 2, 30, 192
    x = torch.randn(m, k, device=DEVICE).to(dtype)
    residual = torch.randn(m, n, device=DEVICE).to(dtype) * 4
    args, _ = _weights(fmt, n, k)
    bias = torch.randn(n, device=DEVICE).to(dtype)
    args = (*args[:4], bias, *args[5:])
    got = _weight_only.launch(x, *args, config, residual=residual)
    assert torch.equal(got, residual + _weight_only.launch(x, *args, config)), f"{fmt} {dtype}"


@pytest.mark.parametrize("m", [1, 5], ids=["M1-gemv", "M5-gemm"])
@pytest.mark.parametrize("fmt", ["int4-asym", "nvfp4"])
def test_public_entries_match_their_references(m, fmt):
    """w4a16_gemm / fp4_gemm with norm and residual against their references, at an M the GEMV takes and one it
    does not (there both are done in torch around the GEMM), leading dims kept; the references normalize with
    rms_norm_ref."""
    k, n = 128, 48
    h = torch.randn(2, m, k, device=DEVICE).to(torch.bfloat16)
    weight = (1 + torch.randn(k, device=DEVICE) / 4).to(torch.bfloat16)
    residual = torch.randn(2, m, n, device=DEVICE).to(torch.bfloat16)
    args, ref = _weights(fmt, n, k)
    if fmt.startswith("int"):
        qweight, scale, zp, _, _, group, _ = args

        def call(x, **kw):
            return w4a16_gemm(x, qweight, scale, zp, group, 4, **kw)
    else:
        packed, _, _, gs, _, _, _ = args
        scale = args[1].view(torch.float8_e4m3fn)

        def call(x, **kw):
            return fp4_gemm(x, packed, scale, "nvfp4", gs, **kw)

    for kw in ({"norm": (weight, 1e-5)}, {"residual": residual}, {"norm": (weight, 1e-5), "residual": residual}):
        got, want = call(h, **kw), ref(h, **kw)
        assert got.shape == want.shape == (2, m, n)
        atol, rtol = GEMM_TOL[torch.bfloat16]
        scale_ = float(want.abs().max())
        assert_close(got / scale_, want / scale_, atol=atol, rtol=rtol, what=f"{fmt} M={m} {sorted(kw)}")
    normed_ref = ref(_weight_only.rms_norm_ref(h, weight, 1e-5))
    assert torch.equal(ref(h, norm=(weight, 1e-5)), normed_ref)


def test_bad_norm_and_residual_arguments_are_refused():
    k, n = 64, 16
    x = torch.randn(1, k, device=DEVICE).to(torch.bfloat16)
    (qweight, scale, zp, _, _, group, _), _ = _weights("int4-asym", n, k)
    weight = torch.ones(k, device=DEVICE, dtype=torch.bfloat16)
    cases = [
        ({"norm": weight}, "norm must be a tuple \\(weight, eps\\)"),
        ({"norm": (weight[:-1], 1e-5)}, r"norm weight must have shape \(64\)"),
        ({"norm": (weight.float(), 1e-5)}, "norm weight must be bfloat16"),
        ({"norm": (weight, -1.0)}, "norm eps must be a float >= 0"),
        ({"residual": torch.zeros(1, n + 1, device=DEVICE, dtype=torch.bfloat16)}, "residual must have the output"),
        ({"residual": torch.zeros(1, n, device=DEVICE)}, "residual must be bfloat16"),
        ({"residual": torch.zeros(1, n // 2, device=DEVICE, dtype=torch.bfloat16), "gated": True},
         "residual and gated=True do not go together"),
    ]  # fmt: skip
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            w4a16_gemm(x, qweight, scale, zp, group, 4, **kw)


def test_decode_graph_rms_norm_is_the_kernels_reference():
    """The graph decoder's RMSNorm (compiled by Inductor where the layers do not fuse it) and the kernels'
    reference are the same arithmetic."""
    from evalsuite.decode_graph import rms_norm

    h = torch.randn(3, 1, 96).to(torch.bfloat16)
    weight = torch.randn(96).to(torch.bfloat16)
    assert torch.equal(rms_norm(h, weight, 1e-6), _weight_only.rms_norm_ref(h, weight, 1e-6))


def test_quant_linear_refuses_fusions_its_kernels_lack():
    from evalsuite.quant_schemes.apply import quantize
    from tests.test_decode_graph import random_model

    model = random_model("llama")
    quantize(model, "W8A8_INT8", backend="torch-ref")
    layer = model.model.layers[0].self_attn.o_proj
    x = torch.randn(1, 1, 64)
    with pytest.raises(ValueError, match="residual need a triton, torch-ref layer of a format whose kernels fuse"):
        layer(x, residual=torch.zeros(1, 1, 64))
