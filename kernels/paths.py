"""Which path each quantized GEMM call took, counted per (kernel, path, reason) in this process.

A launcher that chooses between paths says which one it took (`record`); the runner reads the counts of one
variant's evaluation (`taken`) into results.json, so a weight-only variant that ran dequantize-then-cuBLAS at
large M, or the torch reference, says so. Recording is two dict increments on Python ints: no tensor is read,
nothing synchronizes.

    reset()
    y = w4a16_gemm(x, ...)                 # records ("w4a16_gemm[int4]", "dequant-cublas", "M >= 256 ...")
    taken()  # [{"kernel": ..., "path": "dequant-cublas", "reason": ..., "calls": 1, "rows": 512}]

Counts are of dispatches: a CUDA graph replays the launches it captured without passing through Python, so
its replays repeat the captured paths uncounted. Each process (each rank of a distributed run) counts its own.
Importing this module imports nothing else.
"""

from __future__ import annotations

from collections import Counter

TRITON_GEMM = "triton-gemm"  # our fused Triton GEMM (tensor cores)
TRITON_GEMV = "triton-gemv"  # our Triton GEMV (CUDA cores, decode)
DEQUANT_CUBLAS = "dequant-cublas"  # W dequantized to the activation dtype by our kernel, then a dense cuBLAS matmul
TORCH_REF = "torch-ref"  # the pure-torch reference of the kernel's arithmetic
QUANTIZED_PATHS = (TRITON_GEMM, TRITON_GEMV)  # the paths that multiply by the quantized codes themselves

_calls: Counter = Counter()
_rows: Counter = Counter()


def record(kernel: str, path: str, reason: str, rows: int) -> None:
    """One call of `kernel` that took `path` (why: `reason`) over `rows` activation rows (M)."""
    key = (kernel, path, reason)
    _calls[key] += 1
    _rows[key] += rows


def reset() -> None:
    _calls.clear()
    _rows.clear()


def taken() -> list[dict]:
    """The counts since the last reset, one entry per (kernel, path, reason), most calls first."""
    out = []
    for key in sorted(_calls, key=lambda k: (-_calls[k], k)):
        kernel, path, reason = key
        out.append({"kernel": kernel, "path": path, "reason": reason, "calls": _calls[key], "rows": _rows[key]})
    return out


def unquantized_share(entries: list[dict]) -> tuple[int, int]:
    """(calls on a path other than our quantized kernels, all calls) of `taken()`'s entries."""
    total = sum(e["calls"] for e in entries)
    other = sum(e["calls"] for e in entries if e["path"] not in QUANTIZED_PATHS)
    return other, total
