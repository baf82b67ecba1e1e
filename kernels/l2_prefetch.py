"""Weights prefetched into the GPU's L2 cache ahead of the kernel that reads them.

In a batch-1 decode step the small kernels (q/k/v, the attention, o) leave HBM mostly idle: they are bound by
launch, ramp and round trips, not by bytes. A prefetch launched on a side stream at the start of a layer pulls
part of the layer's next large weight (the fused gate/up) into L2 during that stretch, so the GEMV that reads
it later streams fewer bytes from HBM. A prefetch is only a hint: it changes no memory and no result.

Which bytes: whole rows of a 2-D weight (codes, scales: any row-major tensor), `take` of every PERIOD rows
(`prefetched_rows`, the reference), so that every program of a GEMV, whatever its row tile or K split, finds
the same share of its rows in L2, optionally at evict-last priority. Each row goes as CHUNK-byte pieces, one
`cp.async.bulk.prefetch.L2` each (NVIDIA sm_90 and later: 16-byte aligned, a multiple of 16 bytes long); the
program ends as soon as it has issued them. With RECORD the kernel writes (row, byte offset, bytes) of each
piece instead of prefetching it, which is how the interpreter tests check the pieces against the reference."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_device, nvidia_ptx

PERIOD = 16  # rows are taken in this pattern: `take` of every PERIOD
CHUNK = 4096  # bytes per prefetch instruction
BLOCK = 128  # pieces per program (one per thread at 4 warps)


def bulk_prefetch(device: torch.device) -> bool:
    """True where `l2_prefetch` can prefetch: NVIDIA sm_90 and later, not the interpreter."""
    return nvidia_ptx(device) and torch.cuda.get_device_capability(device) >= (9, 0)


def rows_taken(fraction: float) -> int:
    """How many of every PERIOD rows a prefetch of `fraction` of a weight takes."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"l2_prefetch: fraction must lie in [0, 1], got {fraction}")
    return round(PERIOD * fraction)


def prefetched_rows(rows: int, fraction: float) -> torch.Tensor:
    """The reference: indices of the rows a prefetch of `fraction` of a `rows`-row weight takes."""
    r = torch.arange(rows)
    return r[(r % PERIOD) < rows_taken(fraction)]


def prefetchable(t: torch.Tensor) -> bool:
    """Whether a tensor's rows can go as bulk prefetches: 2-D, rows contiguous, row starts and lengths
    16-byte multiples."""
    if t.dim() != 2 or t.numel() == 0 or t.stride(1) != 1:
        return False
    size = t.element_size()
    return t.data_ptr() % 16 == 0 and (t.stride(0) * size) % 16 == 0 and (t.shape[1] * size) % 16 == 0


@triton.jit
def _l2_prefetch_kernel(
    base_ptr, out_ptr, rows, row_bytes, stride_bytes, pieces,
    TAKE: tl.constexpr, PERIOD: tl.constexpr, CHUNKS: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
    EVICT_LAST: tl.constexpr, RECORD: tl.constexpr,
):  # fmt: skip
    """Piece i: taken row i // CHUNKS (the (i // CHUNKS // TAKE)-th period's row i // CHUNKS % TAKE), bytes
    from CHUNK * (i % CHUNKS), at most CHUNK of them. Pieces past the end re-prefetch the first 16 bytes."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    taken = i // CHUNKS
    row = (taken // TAKE) * PERIOD + taken % TAKE
    start = (i % CHUNKS) * CHUNK
    size = tl.minimum(row_bytes - start, CHUNK)
    ok = (i < pieces) & (row < rows) & (size > 0)
    row = tl.where(ok, row, 0)
    start = tl.where(ok, start, 0)
    size = tl.where(ok, size, 16)
    offset = row.to(tl.int64) * stride_bytes + start
    if RECORD:
        tl.store(out_ptr + 3 * i, tl.where(ok, row, -1), mask=i < pieces)
        tl.store(out_ptr + 3 * i + 1, offset, mask=i < pieces)
        tl.store(out_ptr + 3 * i + 2, size, mask=i < pieces)
    elif EVICT_LAST:
        tl.inline_asm_elementwise(
            "{ .reg .b64 pol; createpolicy.fractional.L2::evict_last.b64 pol, 1.0; "
            "cp.async.bulk.prefetch.L2.global.L2::cache_hint [$1], $2, pol; mov.u32 $0, 0; }",
            "=r,l,r", [base_ptr + offset, size], dtype=tl.int32, is_pure=False, pack=1,
        )  # fmt: skip
    else:
        tl.inline_asm_elementwise(
            "cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0;", "=r,l,r", [base_ptr + offset, size],
            dtype=tl.int32, is_pure=False, pack=1,
        )  # fmt: skip


def _launch(t: torch.Tensor, fraction: float, record: bool, evict_last: bool = False) -> torch.Tensor | None:
    take = rows_taken(fraction)
    if take == 0:
        return torch.empty(0, 3, dtype=torch.int64, device=t.device) if record else None
    rows, row_bytes = t.shape[0], t.shape[1] * t.element_size()
    chunks = triton.cdiv(row_bytes, CHUNK)
    taken = (rows // PERIOD) * take + min(rows % PERIOD, take)
    pieces = taken * chunks
    out = torch.empty(pieces, 3, dtype=torch.int64, device=t.device) if record else None
    base = t.view(torch.uint8) if t.dtype != torch.uint8 else t
    _l2_prefetch_kernel[(triton.cdiv(pieces, BLOCK),)](
        base, out if record else base, rows, row_bytes, t.stride(0) * t.element_size(), pieces,
        TAKE=take, PERIOD=PERIOD, CHUNKS=chunks, CHUNK=CHUNK, BLOCK=BLOCK, EVICT_LAST=evict_last, RECORD=record,
        num_warps=4,
    )  # fmt: skip
    return out


def l2_prefetch(t: torch.Tensor, fraction: float, evict_last: bool = False) -> None:
    """Prefetch `fraction` of t's rows (`prefetched_rows`) into L2, asynchronously, on the current stream;
    `evict_last` marks the lines to be evicted after lines of normal priority (such as those of a GEMV streaming
    the rest of the weight past them). Needs `bulk_prefetch(t.device)` and `prefetchable(t)`."""
    check_device(t.device, "l2_prefetch")
    if not bulk_prefetch(t.device):
        raise ValueError("l2_prefetch: needs an NVIDIA GPU of compute capability 9.0 or later (bulk prefetch)")
    if not prefetchable(t):
        raise ValueError(
            f"l2_prefetch: the tensor (shape {tuple(t.shape)}, strides {t.stride()}, {t.dtype}) must be 2-D with "
            "contiguous rows whose start and length are multiples of 16 bytes"
        )
    _launch(t, fraction, record=False, evict_last=evict_last)


def l2_prefetch_pieces(t: torch.Tensor, fraction: float) -> torch.Tensor:
    """(pieces, 3) int64: the (row, byte offset from t's start, bytes) of each prefetch `l2_prefetch` would
    issue, computed by the same kernel (RECORD), for tests; runs anywhere Triton runs."""
    if not prefetchable(t):
        raise ValueError(f"l2_prefetch_pieces: tensor of shape {tuple(t.shape)} cannot be prefetched by rows")
    return _launch(t, fraction, record=True)
