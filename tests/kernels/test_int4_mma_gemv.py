"""The int4 weights stored in the tensor-core decode GEMV's K order ("mma128"): the permutation and its
inverse, W4A16 calls on weights in that order against the same weights in K order (the GEMV itself on a GPU,
gathered x and the K-order kernels elsewhere), and the kernel against its reference over odd shapes."""

import pytest
import torch

from evalsuite.kernels import _int4_mma_gemv as mg
from evalsuite.kernels import paths
from evalsuite.kernels.w4a16_gemm import pack_int4, unpack_int4, w4a16_gemm, w4a16_gemm_ref
from tests.kernels.common import DEVICE, GEMM_TOL, GPU, ON_GPU
from tests.utils import assert_close


def _weights(n, k, group, asymmetric, device=DEVICE):
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    scale = torch.rand(n, k // group) * 2 / (16 * k**0.5)
    zero = torch.randint(0, 16, (n, k // group), dtype=torch.uint8) if asymmetric else None
    return codes.to(device), scale.to(device), None if zero is None else zero.to(device)


def test_segment_order_is_a_permutation_of_each_128_columns():
    order = mg._segment_order()
    assert sorted(order.tolist()) == list(range(128))
    # the first word (lane block 0, first chunk) holds operand positions 0..7, the pairs (0, 1), (2, 3), ... in
    # nibbles (0, 4), (1, 5), ...; position 2q + e0 of chunk 0 is K 4q + e0 (chunk 1 fills 4q + 2 + e0)
    assert order[:8].tolist() == [0, 4, 8, 12, 1, 5, 9, 13]
    # every MMA's B fragment, positions (chunk c, e, e + 1) and (chunk c + 1, e, e + 1) for c, e even, is 4
    # consecutive K: x loads straight into it
    for c in (0, 2):
        for lane_block in range(4):
            for e in (0, 2, 4, 6):
                ks = [mg._operand_k(32 * (c + dc) + 8 * lane_block + e + de) for dc in (0, 1) for de in (0, 1)]
                assert ks == list(range(ks[0], ks[0] + 4)), ks
    full = mg.stored_order(384, torch.device("cpu"))
    assert sorted(full.tolist()) == list(range(384))
    assert ((full // 128) == torch.arange(384) // 128).all(), "codes never leave their 128-column segment"


@pytest.mark.parametrize("shape", [(1, 128), (5, 384), (7, 1024)])
def test_the_stored_order_is_undone_bit_for_bit(shape):
    codes = torch.randint(0, 16, shape, dtype=torch.uint8)
    words = mg.mma_layout_words(codes)
    assert words.dtype == torch.int32 and words.shape == (shape[0], shape[1] // 8)
    assert torch.equal(mg.mma_layout_codes(words), codes)
    packed = pack_int4(codes)
    stored = mg.to_mma_order(packed, shape[1])
    assert stored.shape == packed.shape and stored.dtype == torch.uint8
    assert torch.equal(mg.from_mma_order(stored, shape[1]), packed)
    # the stored bytes, read in canonical order, are the codes gathered by stored_order
    assert torch.equal(unpack_int4(stored, shape[1]), codes[:, mg.stored_order(shape[1], torch.device("cpu"))])


def test_the_words_hold_one_bf16_pair_per_shift_and_mask():
    """(word >> 4i) & 0x000F000F | 0x43004300 is the bf16 pair 128 + the codes of the word's operand positions
    2i and 2i + 1."""
    codes = torch.randint(0, 16, (3, 128), dtype=torch.uint8)
    words = mg.mma_layout_words(codes).to(torch.int64) & 0xFFFFFFFF
    for slot in range(16):
        lane_block, chunk = divmod(slot, 4)
        for i in range(4):
            pair = ((words[:, slot] >> (4 * i)) & 0x000F000F) | 0x43004300
            lo = (pair & 0xFFFF).to(torch.int16).view(torch.bfloat16).float()
            hi = (pair >> 16).to(torch.int16).view(torch.bfloat16).float()
            position = chunk * 32 + lane_block * 8 + 2 * i
            assert torch.equal(lo, 128 + codes[:, mg._operand_k(position)].float())
            assert torch.equal(hi, 128 + codes[:, mg._operand_k(position + 1)].float())


@pytest.mark.parametrize(
    "shape",
    [(1, 40, 256), (3, 72, 384), (9, 40, 256)]
    + [
        pytest.param(s, marks=GPU)
        for s in [(1, 4096, 4096), (8, 1000, 8192), (5, 4099, 1024), (12, 300, 384), (16, 520, 1024), (17, 300, 384)]
    ],
)
@pytest.mark.parametrize("asymmetric", [False, True], ids=["sym", "asym"])
def test_calls_on_the_stored_order_match_the_same_weights_in_k_order(shape, asymmetric):
    m, n, k = shape
    group = 128 if k < 1024 else 256
    codes, scale, zero = _weights(n, k, group, asymmetric)
    packed = pack_int4(codes)
    stored = mg.to_mma_order(packed, k)
    x = torch.randn(m, k, device=DEVICE).to(torch.bfloat16)
    bias = torch.randn(n, device=DEVICE).to(torch.bfloat16) if m % 2 else None
    paths.reset()
    y = w4a16_gemm(x, stored, scale, zero, group, 4, bias, k_order=mg.K_ORDER)
    reasons = {e["reason"] for e in paths.taken()}
    assert (mg.WHY in reasons) == (ON_GPU and m <= mg.MAX_M), reasons
    ref = w4a16_gemm_ref(x, packed, scale, zero, group, 4, bias)
    atol, rtol = GEMM_TOL[torch.bfloat16]
    assert_close(y.cpu(), ref.cpu(), atol=atol, rtol=rtol, what="w4a16_gemm on the stored order")
    ref_stored = w4a16_gemm_ref(x, stored, scale, zero, group, 4, bias, k_order=mg.K_ORDER)
    assert_close(ref_stored.cpu(), ref.cpu(), atol=atol, rtol=rtol, what="the reference on the stored order")


@pytest.mark.parametrize(
    "k_order, bits, group, message",
    [("mma64", 4, 128, "k_order must be None"), ("mma128", 8, 128, "holds 4-bit codes"),
     ("mma128", 4, 64, "group_size=64")],
)  # fmt: skip
def test_stored_orders_the_kernels_cannot_read_are_refused(k_order, bits, group, message):
    k = 256
    codes = torch.randint(0, 16, (8, k), dtype=torch.uint8, device=DEVICE)
    qweight = pack_int4(codes) if bits == 4 else codes
    scale = torch.rand(8, k // group, device=DEVICE)
    x = torch.randn(1, k, device=DEVICE).to(torch.bfloat16)
    with pytest.raises(ValueError, match=message):
        w4a16_gemm(x, qweight, scale, None, group, bits, k_order=k_order)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU or not mg.available(), reason="the Gluon kernel runs on an NVIDIA GPU only")
@pytest.mark.parametrize("m, n, k, group", [(1, 64, 128, 128), (3, 1000, 384, 128), (8, 4099, 2048, 256),
                                            (5, 72, 1024, 512), (2, 6144, 4096, 128), (11, 200, 640, 128),
                                            (16, 4099, 1024, 256)])  # fmt: skip
@pytest.mark.parametrize(
    "config",
    [dict(num_warps=4, reps=1, prefetch=1, splits=1), dict(num_warps=4, reps=2, prefetch=2),
     dict(num_warps=8, reps=1, prefetch=1, splits=3), dict(num_warps=4, reps=4, prefetch=1)],
    ids=["w4-r1-pf1-nosplit", "w4-r2-pf2", "w8-r1-split3", "w4-r4"],
)  # fmt: skip
@pytest.mark.parametrize("asymmetric", [False, True], ids=["sym", "asym"])
def test_mma_gemv_matches_its_reference(m, n, k, group, config, asymmetric):
    codes, scale, zero = _weights(n, k, group, asymmetric)
    words = mg.mma_layout_words(codes)
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    bias = torch.randn(n, device="cuda").to(torch.bfloat16) if m % 2 else None
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    mg.launch(x, words, scale, zero, bias, group, out, **config)
    ref = mg.mma_gemv_ref(x, words, scale, zero, group, bias)
    atol, rtol = GEMM_TOL[torch.bfloat16]
    assert_close(out.cpu(), ref.cpu(), atol=atol, rtol=rtol, what=f"int4 mma GEMV {config}")
