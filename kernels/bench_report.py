"""The kernel bench's output: a row as printed, the rows that decide its targets, the Markdown table, and the
FP8 accuracy check of both accumulation modes against `_scaled_mm` in the same mode."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .bench import Row


def line(r: Row) -> str:
    tt = "-" if r.torch_us is None else f"{r.torch_us:10.1f}"
    ratio = "-" if r.ratio is None else f"{r.ratio:6.2f}x"
    extra = " ".join(f"{k}={v}" for k, v in r.extra.items())
    return (f"{r.op:10s} {r.shape:12s} M={r.m:<5d} N={r.n:<6d} K={r.k:<6d} ours {r.ours_us:10.1f} us  "
            f"{r.baseline} {tt} us  ratio {ratio}  {r.rate:8.1f} {r.unit} {extra} {r.note}")  # fmt: skip


def target_rows(rows: list[Row], targets: dict) -> list[dict]:
    out = []
    for (op, n, k, m), need in targets.items():
        # the square targets are read off their own rows (a Llama row of the same shape is a second sample)
        for r in sorted(rows, key=lambda r: r.shape != "square"):
            if r.op == op and r.k == k and r.m == m and (op == "act_quant" or r.n == n):
                ok = r.ratio is not None and r.ratio >= need
                out.append({"op": op, "M": m, "N": n, "K": k, "target": need, "ratio": r.ratio, "met": ok})
                break
    return out


def markdown(rows: list[Row], targets: list[dict], device: str, meta: dict | None = None) -> str:
    lines = [f"# Kernel benchmarks on {device}", ""]
    if meta:
        lines += [f"torch {meta.get('torch')}, triton {meta.get('triton')}; timing: {meta.get('timing', '')}; "
                  f"fp8 max relative error vs fp32 accumulation (4096^3): {meta.get('fp8_accuracy')}", ""]  # fmt: skip
    lines += ["## Targets", "", "| op | M | N | K | target | measured | met |"]
    lines.append("|---|---|---|---|---|---|---|")
    for t in targets:
        lines.append(f"| {t['op']} | {t['M']} | {t['N']} | {t['K']} | {t['target']}x | {t['ratio']}x | "
                     f"{'yes' if t['met'] else 'NO'} |")  # fmt: skip
    lines += ["", "## All rows", "", "| op | shape | M | N | K | ours (us) | baseline | torch (us) | ratio | rate |"]
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append(f"| {r.op} | {r.shape} | {r.m} | {r.n} | {r.k} | {r.ours_us} | {r.baseline} | "
                     f"{'-' if r.torch_us is None else r.torch_us} | {'-' if r.ratio is None else r.ratio} | "
                     f"{r.rate} {r.unit} {' '.join(f'{k}={v}' for k, v in r.extra.items())} {r.note} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def fp8_accuracy(log: Callable[[str], None]) -> dict:
    """Max |error| / max |ref| at 4096^3 against fp32 accumulation (fp8_gemm_ref), each accumulation mode of
    ours beside the same mode of _scaled_mm."""
    from . import act_quant, fp8_gemm

    x = torch.randn(4096, 4096, device="cuda")
    w = torch.randn(4096, 4096, device="cuda")
    a, sa = act_quant.act_quant(x, "fp8", "token")
    b, sb = act_quant.act_quant(w, "fp8", "token")
    ref = fp8_gemm.fp8_gemm_ref(a, sa, b, sb, None, torch.float32)
    outs = {
        "fp8_gemm_fast": fp8_gemm.fp8_gemm(a, sa, b, sb, None, torch.float32, "fast"),
        "fp8_gemm_precise": fp8_gemm.fp8_gemm(a, sa, b, sb, None, torch.float32, "precise"),
        "_scaled_mm": torch._scaled_mm(a, b.t(), sa, sb.reshape(1, -1), out_dtype=torch.float32),
        "_scaled_mm_fast_accum": torch._scaled_mm(
            a, b.t(), sa, sb.reshape(1, -1), out_dtype=torch.float32, use_fast_accum=True
        ),
    }
    errs = {k: float((v - ref).abs().max() / ref.abs().max()) for k, v in outs.items()}
    log("fp8 max relative error vs fp32 accumulation at 4096^3: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    return errs
