import pytest
import torch

from evalsuite.kernels import _weight_only, _weight_only_gemv
from evalsuite.kernels._launch import interpreting
from evalsuite.kernels.fp4_gemm import (
    dequantize_fp4,
    fp4_gemm,
    fp4_gemm_ref,
    mxfp4_quantize_ref,
    nvfp4_global_scale,
    nvfp4_quantize_ref,
)
from evalsuite.kernels.w4a16_gemm import dequantize_wna16, pack_int4, w4a16_gemm, w4a16_gemm_ref
from tests.kernels.common import DEVICE, GEMM_TOL, shapes
from tests.utils import assert_close

CPU_SHAPES = [(1, 1, 1), (3, 40, 72), (16, 96, 200), (17, 130, 257)]
GPU_SHAPES = [(1, 4096, 4096), (16, 4096, 4096), (1, 1, 1023), (133, 512, 528), (2048, 1024, 4096)]
# (bits, asymmetric, group_size, activation dtype): tiles inside a group, groups inside a tile, neither
VARIANTS = [
    (4, False, 128, torch.bfloat16),
    (4, True, 32, torch.bfloat16),
    (4, True, 40, torch.float16),
    (8, False, 64, torch.bfloat16),
    (8, True, 128, torch.float16),
    (4, False, 16, torch.float32),
]
VARIANT_IDS = [f"int{b}-{'asym' if z else 'sym'}-g{g}-{str(d)[6:]}" for b, z, g, d in VARIANTS]


def _int_weights(n, k, bits, asymmetric, group_size):
    groups = -(-k // group_size)
    codes = torch.randint(0, 2**bits, (n, k), dtype=torch.uint8)
    qweight = pack_int4(codes) if bits == 4 else codes
    scale = torch.rand(n, groups) * 2 / (2**bits * k**0.5)
    zero_point = torch.randint(0, 2**bits, (n, groups), dtype=torch.uint8) if asymmetric else None
    return [t if t is None else t.to(DEVICE) for t in (qweight, scale, zero_point)]


def _check(y, y_ref, what):
    atol, rtol = GEMM_TOL[y_ref.dtype]
    assert_close(y.cpu(), y_ref.cpu(), atol=atol, rtol=rtol, what=what)


@pytest.mark.parametrize("shape", shapes(CPU_SHAPES, GPU_SHAPES))
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_w4a16_gemm(shape, variant):
    m, n, k = shape
    bits, asymmetric, group_size, dtype = variant
    x = torch.randn(m, k, device=DEVICE).to(dtype)
    qweight, scale, zero_point = _int_weights(n, k, bits, asymmetric, group_size)
    bias = torch.randn(n, device=DEVICE).to(dtype) if m % 2 else None
    y = w4a16_gemm(x, qweight, scale, zero_point, group_size, bits, bias)
    _check(y, w4a16_gemm_ref(x, qweight, scale, zero_point, group_size, bits, bias), "w4a16_gemm")


CONFIGS = {  # both orientations, with and without the per-tile scale epilogue, split-K
    "swap-epilogue-split3": _weight_only.WeightOnlyConfig(32, 16, 32, 3, 4, 1, swap_ab=True),
    "swap-dequant": _weight_only.WeightOnlyConfig(32, 16, 32, 1, 4, 1, swap_ab=True, epilogue_scale=False),
    "noswap-epilogue": _weight_only.WeightOnlyConfig(32, 32, 32, 1, 4, 1, swap_ab=False),
    "noswap-dequant-split2": _weight_only.WeightOnlyConfig(32, 32, 64, 2, 4, 1, swap_ab=False, epilogue_scale=False),
    "dequantize-then-matmul": _weight_only.WeightOnlyConfig(32, 32, 32, dequant_gemm=True),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("variant", [VARIANTS[0], VARIANTS[2], VARIANTS[4]], ids=[VARIANT_IDS[i] for i in (0, 2, 4)])
def test_weight_only_paths(config, variant):
    m, n, k = 5, 72, 200
    bits, asymmetric, group_size, dtype = variant
    x = torch.randn(m, k, device=DEVICE).to(dtype)
    qweight, scale, zero_point = _int_weights(n, k, bits, asymmetric, group_size)
    fmt = _weight_only.FMT_INT4 if bits == 4 else _weight_only.FMT_INT8
    y = _weight_only.launch(x, qweight, scale, zero_point, None, None, group_size, fmt, config)
    _check(y, w4a16_gemm_ref(x, qweight, scale, zero_point, group_size, bits), "weight-only path")


@pytest.mark.parametrize("shape", shapes(CPU_SHAPES, GPU_SHAPES))
@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_fp4_gemm(shape, fmt, dtype):
    m, n, k = shape
    x = torch.randn(m, k, device=DEVICE).to(dtype)
    w = torch.randn(n, k, device=DEVICE) / k**0.5
    if fmt == "mxfp4":
        (packed, scale), global_scale = mxfp4_quantize_ref(w), None
    else:
        packed, scale, global_scale = nvfp4_quantize_ref(w)
    bias = torch.randn(n, device=DEVICE) if m % 2 else None
    y = fp4_gemm(x, packed, scale, fmt, global_scale, bias)
    _check(y, fp4_gemm_ref(x, packed, scale, fmt, global_scale, bias), fmt)


def _nvfp4_row_blocks(rows, k):
    """NVFP4 weights of row blocks quantized apart (each its own global scale: its absmax one times 1, 1/2, 1/8)
    and the same weights as one tensor with one global scale per row, as QuantLinear.concatenated builds them
    for a fused layer."""
    ws = [torch.randn(n, k, device=DEVICE) / k**0.5 for n in rows]
    blocks = [nvfp4_quantize_ref(w, nvfp4_global_scale(w) / 8**i) for i, w in enumerate(ws)]
    packed = torch.cat([b[0] for b in blocks])  # (N, K/2)
    scale = torch.cat([b[1] for b in blocks])  # (N, K/16)
    gs = torch.cat([b[2].reshape(1).expand(n) for b, n in zip(blocks, rows, strict=True)])  # (N,)
    return blocks, packed, scale, gs


def _per_row(global_scale, n):
    return global_scale.reshape(1).expand(n) * torch.linspace(0.5, 2.0, n, device=global_scale.device)  # (N,)


@pytest.mark.parametrize("per_row", [False, True], ids=["one-global-scale", "global-scale-per-row"])
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_fp4_paths(config, per_row):
    x = torch.randn(3, 96, device=DEVICE).to(torch.bfloat16)
    packed, scale, global_scale = nvfp4_quantize_ref(torch.randn(40, 96, device=DEVICE) / 10)
    if per_row:
        global_scale = _per_row(global_scale, 40)
    y = _weight_only.launch(x, packed, scale.view(torch.uint8), None, global_scale, None, 16, 3, config)
    _check(y, fp4_gemm_ref(x, packed, scale, "nvfp4", global_scale), "fp4 path")


def test_leading_dims():
    x = torch.randn(2, 3, 64, device=DEVICE).to(torch.bfloat16)
    qweight, scale, zero_point = _int_weights(24, 64, 4, True, 32)
    y = w4a16_gemm(x, qweight, scale, zero_point, 32)
    assert y.shape == (2, 3, 24)
    _check(y, w4a16_gemm_ref(x, qweight, scale, zero_point, 32), "w4a16_gemm (..., K)")


@pytest.mark.parametrize("shape", shapes([(3, 72), (40, 200), (17, 257)], [(4096, 4096), (1000, 1030)]))
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_dequantize_is_bit_exact(shape, variant):
    """The large-M path's dequantize kernel reproduces dequantize_wna16(...).to(dtype) bit for bit."""
    n, k = shape
    bits, asymmetric, group_size, dtype = variant
    qweight, scale, zero_point = _int_weights(n, k, bits, asymmetric, group_size)
    fmt = _weight_only.FMT_INT4 if bits == 4 else _weight_only.FMT_INT8
    w = _weight_only.dequantize(qweight, scale, zero_point, None, group_size, fmt, k, dtype)
    ref = dequantize_wna16(
        qweight.cpu(), scale.cpu(), None if zero_point is None else zero_point.cpu(), group_size, k, bits
    )
    assert_close(w.cpu(), ref.to(dtype), what="dequantized weights")


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
def test_dequantize_fp4_is_bit_exact(fmt):
    w = torch.randn(37, 130, device=DEVICE) * torch.logspace(-3, 1, 130, device=DEVICE)
    if fmt == "mxfp4":
        (packed, scale), gs = mxfp4_quantize_ref(w), None
    else:
        packed, scale, gs = nvfp4_quantize_ref(w)
    code = _weight_only.FMT_MXFP4 if fmt == "mxfp4" else _weight_only.FMT_NVFP4
    group = 32 if fmt == "mxfp4" else 16
    out = _weight_only.dequantize(packed, scale.view(torch.uint8), None, gs, group, code, 130, torch.bfloat16)
    ref = dequantize_fp4(packed.cpu(), scale.cpu(), fmt, 130, None if gs is None else gs.cpu())
    assert_close(out.cpu(), ref.to(torch.bfloat16), what=f"{fmt} dequantized weights")


GEMV_CONFIGS = {  # tiles inside a group, holding several groups, gathered per word; K split or not
    "n8-k64-split2": _weight_only.WeightOnlyConfig(8, 4, 64, 2, 4, 1, gemv=True),
    "n16-k128": _weight_only.WeightOnlyConfig(16, 4, 128, 1, 4, 1, gemv=True),
    "n4-k32-split5": _weight_only.WeightOnlyConfig(4, 4, 32, 5, 2, 1, gemv=True),
    "n4-k32-split2-staged3": _weight_only.WeightOnlyConfig(4, 4, 32, 2, 2, 3, gemv=True, prefetch=False),
}


@pytest.mark.parametrize("config", GEMV_CONFIGS.values(), ids=GEMV_CONFIGS.keys())
@pytest.mark.parametrize("variant", VARIANTS + [(4, True, 8, torch.bfloat16)], ids=VARIANT_IDS + ["int4-asym-g8-bf16"])
def test_weight_only_gemv(config, variant):
    """The decode GEMV against the reference: odd N, M from 1 to 4, K with a partial last tile."""
    bits, asymmetric, group_size, dtype = variant
    for m, n, k in ((1, 37, 200), (4, 9, 96)):
        if k % group_size and group_size % 8:
            k = 240  # whole words per group (40 -> 5 words)
        x = torch.randn(m, k, device=DEVICE).to(dtype)
        qweight, scale, zero_point = _int_weights(n, k, bits, asymmetric, group_size)
        bias = torch.randn(n, device=DEVICE).to(dtype) if m == 1 else None
        fmt = _weight_only.FMT_INT4 if bits == 4 else _weight_only.FMT_INT8
        y = _weight_only.launch(x, qweight, scale, zero_point, None, bias, group_size, fmt, config)
        _check(y, w4a16_gemm_ref(x, qweight, scale, zero_point, group_size, bits, bias), f"gemv M={m} N={n} K={k}")


@pytest.mark.parametrize("config", GEMV_CONFIGS.values(), ids=GEMV_CONFIGS.keys())
@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4", "nvfp4-per-row"])
def test_fp4_gemv(config, fmt):
    m, n, k = 3, 21, 160
    x = torch.randn(m, k, device=DEVICE).to(torch.bfloat16)
    w = torch.randn(n, k, device=DEVICE) * torch.logspace(-3, 1, k, device=DEVICE)
    if fmt == "mxfp4":
        (packed, scale), gs = mxfp4_quantize_ref(w), None
    else:
        packed, scale, gs = nvfp4_quantize_ref(w)
        if fmt == "nvfp4-per-row":
            fmt, gs = "nvfp4", _per_row(gs, n)
    code = _weight_only.FMT_MXFP4 if fmt == "mxfp4" else _weight_only.FMT_NVFP4
    y = _weight_only.launch(x, packed, scale.view(torch.uint8), None, gs, None, 32 if fmt == "mxfp4" else 16, code,
                            config)  # fmt: skip
    ref = fp4_gemm_ref(x, packed, scale, fmt, gs)
    _check(y / ref.abs().max(), ref / ref.abs().max(), f"{fmt} gemv")


@pytest.mark.parametrize("widen", [True, False], ids=["fp8-cast", "integer-decode"])
@pytest.mark.parametrize("config", GEMV_CONFIGS.values(), ids=GEMV_CONFIGS.keys())
def test_nvfp4_gemv_decodes_every_e4m3_scale(config, widen, monkeypatch):
    """Row r takes the E4M3 scale byte r in every group: zero, the subnormals and every finite positive value
    (0x00 to 0x7E). A code decoded wrong shows in its own row, whatever the other rows' magnitudes: each row is
    compared with the reference to the output's rounding plus fp32 summation error of its own terms. Both
    decodes: Triton's float8 cast (FP8-capable GPUs, the interpreter) and the integer one (other GPUs)."""
    if not widen:
        monkeypatch.setattr(_weight_only_gemv, "fp8_widening", lambda device: False)
    n, k = 127, 96
    x = torch.randn(1, k, device=DEVICE).to(torch.bfloat16)
    packed = pack_int4(torch.randint(0, 16, (n, k), dtype=torch.uint8)).to(DEVICE)
    scale = torch.arange(n, dtype=torch.uint8, device=DEVICE)[:, None].repeat(1, k // 16).view(torch.float8_e4m3fn)
    gs = torch.tensor(1.0, device=DEVICE)
    y = _weight_only.launch(x, packed, scale.view(torch.uint8), None, gs, None, 16, _weight_only.FMT_NVFP4, config)
    ref = fp4_gemm_ref(x, packed, scale, "nvfp4", gs).float().cpu()[0]
    magnitude = (x.float().abs() @ dequantize_fp4(packed, scale, "nvfp4", k, gs).float().abs().T).cpu()[0]
    err = (y.float().cpu()[0] - ref).abs()
    bad = (err > 2**-8 * ref.abs() + 1e-5 * magnitude).nonzero().flatten().tolist()
    assert y[0, 0] == 0 and not bad, f"rows (scale bytes) off the reference: {bad[:8]}"


def _gated_check(y, ungated, ref, what):
    """The gated output is silu_gate of the same kernel's ungated output (its pre-gate values are that output
    bit for bit: same tiles, same summation) to one rounding of the output dtype, and the gated reference
    within the GEMM tolerance."""
    assert y.shape == (ungated.shape[0], ungated.shape[1] // 2), what
    expected = _weight_only.silu_gate(ungated)
    ulp = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 2**-22}[y.dtype]
    assert_close(y.float(), expected.float(), ulp, 1e-6 * float(expected.abs().max()), what=f"{what} vs ungated")
    _check(y / ref.abs().max(), ref / ref.abs().max(), f"{what} vs reference")


@pytest.mark.parametrize("config", GEMV_CONFIGS.values(), ids=GEMV_CONFIGS.keys())
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_gated_gemv_writes_silu_gate_of_the_fused_gate_up_output(config, variant):
    """gated=True on a [gate; up] weight: each program pairs gate and up rows and its epilogue writes silu(gate) *
    up, (M, N / 2); halves not a multiple of the tile (13, 40 rows), M 1 to 4, a bias, split K or not."""
    bits, asymmetric, group_size, dtype = variant
    for m, half, k in ((1, 13, 200), (4, 40, 96)):
        if k % group_size and group_size % 8:
            k = 240
        x = torch.randn(m, k, device=DEVICE).to(dtype)
        qweight, scale, zero_point = _int_weights(2 * half, k, bits, asymmetric, group_size)
        bias = torch.randn(2 * half, device=DEVICE).to(dtype) if m == 1 else None
        fmt = _weight_only.FMT_INT4 if bits == 4 else _weight_only.FMT_INT8
        args = (x, qweight, scale, zero_point, None, bias, group_size, fmt, config)
        ref = w4a16_gemm_ref(x, qweight, scale, zero_point, group_size, bits, bias, gated=True)
        _gated_check(_weight_only.launch(*args, gated=True), _weight_only.launch(*args), ref, f"M={m} I={half}")


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4", "nvfp4-per-row"])
def test_gated_fp4_gemv(fmt):
    m, half, k = 2, 11, 160
    x = torch.randn(m, k, device=DEVICE).to(torch.bfloat16)
    w = torch.randn(2 * half, k, device=DEVICE) * torch.logspace(-3, 1, k, device=DEVICE)
    if fmt == "mxfp4":
        (packed, scale), gs = mxfp4_quantize_ref(w), None
    else:
        packed, scale, gs = nvfp4_quantize_ref(w)
        if fmt == "nvfp4-per-row":
            fmt, gs = "nvfp4", _per_row(gs, 2 * half)
    code = _weight_only.FMT_MXFP4 if fmt == "mxfp4" else _weight_only.FMT_NVFP4
    args = (x, packed, scale.view(torch.uint8), None, gs, None, 32 if fmt == "mxfp4" else 16, code,
            GEMV_CONFIGS["n4-k32-split5"])  # fmt: skip
    ref = fp4_gemm_ref(x, packed, scale, fmt, gs, gated=True)
    _gated_check(_weight_only.launch(*args, gated=True), _weight_only.launch(*args), ref, f"{fmt} gated GEMV")
    assert torch.equal(fp4_gemm(x, packed, scale, fmt, gs, gated=True), fp4_gemm(x, packed, scale, fmt, gs, gated=True))


@pytest.mark.parametrize("m", [1, 5, 40], ids=["M1-gemv", "M5-gemm", "M40-gemm"])
def test_gated_w4a16_gemm_at_every_m(m):
    """The public entry: the GEMV's epilogue at M <= 4, silu_gate after the GEMM above; leading dims kept; an odd
    N or a non-bool gated is refused."""
    k, half = 96, 24
    x = torch.randn(2, m, k, device=DEVICE).to(torch.bfloat16)
    qweight, scale, zero_point = _int_weights(2 * half, k, 4, True, 32)
    y = w4a16_gemm(x, qweight, scale, zero_point, 32, gated=True)
    assert y.shape == (2, m, half)
    ref = w4a16_gemm_ref(x, qweight, scale, zero_point, 32, gated=True)
    _check(y / ref.abs().max(), ref / ref.abs().max(), f"gated w4a16_gemm M={m}")
    with pytest.raises(ValueError, match=r"a fused \[gate; up\] weight, an even number of rows; got N=47"):
        w4a16_gemm(x, qweight[:47], scale[:47], zero_point[:47], 32, gated=True)
    with pytest.raises(ValueError, match="gated must be True or False, got 1"):
        w4a16_gemm(x, qweight, scale, zero_point, 32, gated=1)


def test_the_graph_decoder_gates_in_the_gemv_epilogue():
    """W4A16 with our Triton kernels (the interpreter on CPU): the graph decoder's gate/up layers run the gated
    GEMV, no separate SiLU-gate; at two rows the q/k/v and gate/up GEMVs normalize their input and the o and down
    GEMVs add the residual, so a step's only RMSNorm of its own is the final one, and no add+RMSNorm runs; the
    tokens and logits are the HF path's over the same layers on the torch reference (float32, eager steps)."""
    import copy

    from evalsuite.decode_graph import EAGER, GraphDecoder
    from evalsuite.graphs import DynamicDecoder
    from evalsuite.kernels import paths
    from evalsuite.quant_schemes.apply import quantize
    from evalsuite.quant_schemes.linear import QuantLinear
    from tests.test_decode_graph import greedy, random_model

    model = random_model("llama").to(DEVICE)
    quantize(model, "W4A16", backend="triton")
    reference = copy.deepcopy(model)
    for layer in reference.modules():
        if isinstance(layer, QuantLinear):
            layer.use_backend("torch-ref")
    contexts = [[5], [7]]  # two rows: the prefill runs the GEMV too (the fused GEMM is slow to interpret)
    want, want_logits = greedy(DynamicDecoder(reference), contexts, 2)
    decoder = GraphDecoder(model, batch_size=2, max_len=8, graphs=False, fuse=None, layer_ops=True)
    assert "SiLU-gate in the gate/up kernel in" in decoder.describe()
    assert "RMSNorm and residual add in the linear layers' kernels (8/8:" in decoder.describe()
    calls = []
    decoder.fns = {**decoder.fns, "gated": None, "add_norm": None,  # a call would fail
                   "norm": lambda *a: calls.append(1) or EAGER["norm"](*a)}  # fmt: skip
    paths.reset()
    got, got_logits = greedy(decoder, contexts, 2)
    assert got == want
    assert len(calls) == 2  # the final norm of each step; the prefill (one token a row) fuses the rest too
    assert any(e["path"] == paths.TRITON_GEMV for e in paths.taken())
    for a, b in zip(got_logits, want_logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_split_k_gemv_reduces_in_one_launch_and_leaves_its_counters_at_zero():
    """The last program of each tile adds the partials and writes the output; the per-tile counters are back at
    zero for the next call, which gives the same bits."""
    from evalsuite.kernels._weight_only_gemv import split_counters

    m, n, k, group_size = 2, 37, 200, 40
    x = torch.randn(m, k, device=DEVICE).to(torch.bfloat16)
    qweight, scale, zero_point = _int_weights(n, k, 4, True, group_size)
    bias = torch.randn(n, device=DEVICE).to(torch.bfloat16)
    cfg = GEMV_CONFIGS["n4-k32-split5"]
    first = _weight_only.launch(x, qweight, scale, zero_point, None, bias, group_size, 0, cfg)
    tiles = -(-n // cfg.block_n) * m
    assert not split_counters(x.device, tiles)[:tiles].any()
    second = _weight_only.launch(x, qweight, scale, zero_point, None, bias, group_size, 0, cfg)
    assert torch.equal(first, second)
    _check(first, w4a16_gemm_ref(x, qweight, scale, zero_point, group_size, 4, bias), "split-K GEMV")


def test_gemv_reads_x_four_at_a_time_only_where_it_may():
    """16-bit x with 8-byte aligned rows is read as int64 quads; an x 2 bytes off alignment or fp32 x is read
    value by value; each gives the reference's result (`launch` takes x with K contiguous, so a transposed x
    only has to be refused quads)."""
    from evalsuite.kernels._weight_only_gemv import x_in_quads

    m, n, k, group_size = 2, 21, 96, 32
    qweight, scale, _ = _int_weights(n, k, 4, False, group_size)
    base = torch.randn(m, k + 4, device=DEVICE).to(torch.bfloat16)
    cases = {
        "aligned": (base[:, 4:], True),
        "2 bytes off": (base[:, 1 : k + 1], False),
        "fp32": (torch.randn(m, k, device=DEVICE), False),
        "fp16": (base[:, :k].to(torch.float16), True),
    }
    assert not x_in_quads(torch.randn(k, m, device=DEVICE).to(torch.bfloat16).t())
    for what, (x, quads) in cases.items():
        assert x_in_quads(x) == quads, what
        y = _weight_only.launch(x, qweight, scale, None, None, None, group_size, 0, GEMV_CONFIGS["n16-k128"])
        _check(y, w4a16_gemm_ref(x, qweight, scale, None, group_size, 4), f"GEMV with {what} x")


def test_gemv_dispatch():
    """Decode shapes with whole words take the GEMV; K or groups that split a word, and M > 4, do not."""
    w = torch.zeros(8, 64, dtype=torch.uint8, device=DEVICE)
    assert _weight_only.pick_config(1, 8, 128, 128, 0, _weight_only.gemv_applies(1, 128, 128, 0, w)).gemv
    assert _weight_only.pick_config(4, 8, 128, 16, 2, _weight_only.gemv_applies(4, 128, 16, 2, w)).gemv
    assert not _weight_only.gemv_applies(1, 130, 128, 0, w)
    assert not _weight_only.gemv_applies(1, 128, 6, 1, w)
    assert not _weight_only.gemv_applies(5, 128, 128, 0, w)


def test_gemv_refuses_partial_words():
    x = torch.randn(1, 36, device=DEVICE).to(torch.bfloat16)
    qweight, scale, _ = _int_weights(8, 36, 4, False, 12)
    with pytest.raises(ValueError, match="multiples of 8"):
        _weight_only.launch(x, qweight, scale, None, None, None, 12, 0, GEMV_CONFIGS["n16-k128"])


def test_nvfp4_reference_with_a_global_scale_per_row_is_the_row_blocks_apart():
    """A global scale per row divides each row's E4M3 scales by its own value: the fused weights dequantize
    bit for bit as the blocks do apart, and the reference GEMM gives each block's outputs."""
    blocks, packed, scale, gs = _nvfp4_row_blocks((37, 11, 12), 96)
    x = torch.randn(3, 96, device=DEVICE).to(torch.bfloat16)
    apart = torch.cat([dequantize_fp4(*b[:2], "nvfp4", 96, b[2]) for b in blocks])
    assert_close(dequantize_fp4(packed, scale, "nvfp4", 96, gs), apart, what="per-row dequantize")
    want = torch.cat([fp4_gemm_ref(x, *b[:2], "nvfp4", b[2]) for b in blocks], dim=-1)
    assert_close(fp4_gemm_ref(x, packed, scale, "nvfp4", gs), want, what="per-row fp4_gemm_ref")


def test_dequantize_kernel_with_a_global_scale_per_row_is_bit_exact():
    _, packed, scale, gs = _nvfp4_row_blocks((37, 11, 12), 130)
    out = _weight_only.dequantize(packed, scale.view(torch.uint8), None, gs, 16, _weight_only.FMT_NVFP4, 130,
                                  torch.bfloat16)  # fmt: skip
    ref = dequantize_fp4(packed.cpu(), scale.cpu(), "nvfp4", 130, gs.cpu())
    assert_close(out.cpu(), ref.to(torch.bfloat16), what="nvfp4 dequantized weights, global scale per row")


@pytest.mark.parametrize("m", [1, 5, 256], ids=["M1-gemv", "M5-fused-gemm", "M256-dequant-matmul"])
def test_fp4_gemm_with_a_global_scale_per_row_is_the_row_blocks_apart(m):
    """fp4_gemm on row blocks fused with a global scale per row: the reference's result, and on the interpreter
    (whose tiles do not depend on N) each block's own fp4_gemm bit for bit. On a GPU the K split depends on N,
    so the fused call sums in another order: GEMM tolerance there."""
    blocks, packed, scale, gs = _nvfp4_row_blocks((37, 11, 12), 96)
    x = torch.randn(m, 96, device=DEVICE).to(torch.bfloat16)
    bias = torch.randn(60, device=DEVICE).to(torch.bfloat16)
    y = fp4_gemm(x, packed, scale, "nvfp4", gs, bias)
    _check(y, fp4_gemm_ref(x, packed, scale, "nvfp4", gs, bias), "fp4_gemm, global scale per row")
    biases = bias.split([37, 11, 12])
    apart = torch.cat([fp4_gemm(x, b[0], b[1], "nvfp4", b[2], c) for b, c in zip(blocks, biases, strict=True)], dim=-1)
    atol, rtol = (0, 0) if interpreting() else GEMM_TOL[torch.bfloat16]
    assert_close(y.cpu(), apart.cpu(), atol=atol, rtol=rtol, what="fused rows vs the blocks apart")


def test_gemv_tiles_at_llama_8b_shapes(monkeypatch):
    """The GEMV tiles the GPU dispatch picks (`_weight_only._gemv_config`, from the H100 sweeps): 8B o splits K
    in 4 (16 steps of 256), down takes 32 rows with one warp, NVFP4 gate/up 16 rows with one warp; q/k/v and
    int4 gate/up keep theirs."""
    monkeypatch.setattr(_weight_only, "interpreting", lambda: False)
    int4, nvfp4 = _weight_only.FMT_INT4, _weight_only.FMT_NVFP4

    def tiles(n, k, fmt):
        cfg = _weight_only.pick_config(1, n, k, 128, fmt, gemv=True)
        return cfg.block_n, cfg.num_warps, cfg.split_k

    assert tiles(4096, 4096, int4) == (64, 4, 4)  # o
    assert tiles(6144, 4096, int4) == (64, 4, 4)  # q/k/v
    assert tiles(4096, 14336, int4) == (32, 1, 8)  # down
    assert tiles(28672, 4096, int4) == (32, 1, 1)  # gate/up
    assert tiles(28672, 4096, nvfp4) == (16, 1, 1)
    assert tiles(8192, 8192, int4) == (64, 4, 4)
