"""l2_prefetch: the pieces the kernel issues (recorded by the same kernel) cover exactly the rows of the
reference, each row whole, in CHUNK-byte pieces; on a GPU with bulk prefetch the prefetch itself runs, changes
nothing, and a GEMV reading the prefetched weight gives the same bits."""

from __future__ import annotations

import pytest
import torch

from evalsuite.kernels import l2_prefetch as lp

from .common import DEVICE, GPU


def expected_pieces(t: torch.Tensor, fraction: float) -> set[tuple[int, int, int]]:
    row_bytes, stride_bytes = t.shape[1] * t.element_size(), t.stride(0) * t.element_size()
    return {
        (int(r), int(r) * stride_bytes + start, min(lp.CHUNK, row_bytes - start))
        for r in lp.prefetched_rows(t.shape[0], fraction)
        for start in range(0, row_bytes, lp.CHUNK)
    }


@pytest.mark.parametrize("rows", [1, 15, 16, 37, 300])
@pytest.mark.parametrize("cols,dtype", [(4, torch.int32), (1000, torch.int32), (2056, torch.bfloat16)])
@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.4, 1.0])
def test_the_pieces_cover_the_reference_rows_whole(rows, cols, dtype, fraction):
    t = torch.zeros(rows, cols, dtype=dtype, device=DEVICE)
    got = lp.l2_prefetch_pieces(t, fraction).cpu()
    assert (got[:, 0] >= 0).all(), "a piece was masked off inside the grid"
    pieces = [tuple(int(v) for v in p) for p in got]
    assert len(pieces) == len(set(pieces)), "a piece was issued twice"
    assert set(pieces) == expected_pieces(t, fraction)


def test_rows_of_a_strided_view_are_prefetched_at_their_stride():
    t = torch.zeros(40, 64, dtype=torch.int32, device=DEVICE)[:, :32]
    assert lp.prefetchable(t)
    got = {tuple(int(v) for v in p) for p in lp.l2_prefetch_pieces(t, 0.5).cpu()}
    assert got == expected_pieces(t, 0.5)  # offsets at the row stride (256 bytes), 128 bytes each


def test_the_reference_takes_the_fraction_of_every_period():
    rows = lp.prefetched_rows(64, 0.25)
    assert rows.tolist() == [r for r in range(64) if r % lp.PERIOD < lp.PERIOD // 4]
    assert len(lp.prefetched_rows(64, 1.0)) == 64 and len(lp.prefetched_rows(64, 0.0)) == 0


@pytest.mark.parametrize(
    "t,why",
    [
        (torch.zeros(64), "1-D"),
        (torch.zeros(8, 3, dtype=torch.int32), "a 12-byte row"),
        (torch.zeros(8, 8, dtype=torch.int32).t(), "columns contiguous"),
        (torch.zeros(8 * 8 + 1, dtype=torch.int32)[1:].view(8, 8), "a start off 16 bytes"),
    ],
)
def test_tensors_that_bulk_prefetch_cannot_take_are_named(t, why):
    assert not lp.prefetchable(t), why
    with pytest.raises(ValueError, match="cannot be prefetched by rows"):
        lp.l2_prefetch_pieces(t.to(DEVICE), 0.5)


def test_a_fraction_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match=r"fraction must lie in \[0, 1\], got 1.5"):
        lp.rows_taken(1.5)


@pytest.mark.parametrize("fraction", [0.25, 1.0])
@pytest.mark.parametrize(
    "shape",
    [pytest.param((28672, 512), id="8b-gate_up-int4", marks=GPU), pytest.param((300, 1000), id="odd", marks=GPU)],
)
def test_the_prefetch_changes_nothing_on_the_gpu(fraction, shape):
    if not lp.bulk_prefetch(torch.device("cuda")):
        pytest.skip("bulk prefetch needs compute capability 9.0 or later")
    t = torch.randint(-(2**31), 2**31 - 1, shape, dtype=torch.int32, device="cuda")
    before = t.clone()
    lp.l2_prefetch(t, fraction)
    torch.cuda.synchronize()
    assert torch.equal(t, before)
