"""act_quant's per-token FP8 kernel (the bench's act_quant op) timed at the bench's shapes with one program per
row against programs that loop over rows (`act_quant.ROW_WARPS_PER_SM` / warps per SM, the next row's load in flight),
at several warp counts, each against the bench's baseline (a bf16 copy of x), side by side in one process:

    python3 benchmarks/act_quant_ab.py [OUT_DIR]      # prints a table per shape, writes act-quant-ab.json

Each variant's codes and scales are compared with the one-row-per-program kernel's ("DIFFERS" would be a bug:
the arithmetic is the same, only the rows' assignment to programs changes)."""

import json
import os
import sys

import torch
import triton

from evalsuite.kernels import act_quant as aq
from evalsuite.kernels.bench import time_gpu

SHAPES = [(1, 4096), (16, 4096), (2048, 4096), (2048, 8192), (8192, 4096), (8192, 8192)]  # (M, K)
PER_SM = (1, 2, 4, 8, 16)
WARPS = (2, 4, 8, 16)
REP = 60


def run(m: int, k: int, per_sm: int | None, warps: int | None):
    """Codes, scale and GPU time (us) with per_sm programs per SM (None: one per row) and warps (None: default)."""
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    saved = aq.ROW_WARPS_PER_SM, aq.row_warps
    if warps is not None:
        aq.row_warps = lambda block_k: warps
    aq.ROW_WARPS_PER_SM = m * 16 if per_sm is None else per_sm * aq.row_warps(triton.next_power_of_2(k))
    try:
        q, s = aq.act_quant(x, "fp8", "token")
        us = time_gpu(lambda: aq.act_quant(x, "fp8", "token"), REP)
    finally:
        aq.ROW_WARPS_PER_SM, aq.row_warps = saved
    return x, q, s, us


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", ".")
    os.makedirs(out, exist_ok=True)
    results = []
    for m, k in SHAPES:
        torch.manual_seed(0)
        x, q0, s0, base_us = run(m, k, None, None)
        copy_out = torch.empty_like(x)
        copy_us = time_gpu(lambda src=x, dst=copy_out: dst.copy_(src), REP)
        work = m * k * 2 + m * k + m * 4
        copy_bytes = 2 * m * k * 2
        rows = [{"variant": "one row per program", "us": base_us}]
        for warps in WARPS:
            for per_sm in PER_SM:
                torch.manual_seed(0)
                _, q, s, us = run(m, k, per_sm, warps)
                same = torch.equal(q.view(torch.uint8), q0.view(torch.uint8)) and torch.equal(s, s0)
                rows.append({"variant": f"{per_sm}/SM {warps}w", "us": us, "same": same})
        for r in rows:
            r["pct_copy"] = 100 * (work / r["us"]) / (copy_bytes / copy_us)
        rows.sort(key=lambda r: r["us"])
        print(f"\nM={m} K={k}: copy {copy_us:.2f} us ({copy_bytes / copy_us / 1e3:,.0f} GB/s)")
        for r in rows[:8] + [r for r in rows[8:] if r["variant"] == "one row per program"]:
            flag = "" if r.get("same", True) else "  DIFFERS"
            print(f"  {r['variant']:<22} {r['us']:8.2f} us  {r['pct_copy']:5.1f}% of copy{flag}")
        results.append({"M": m, "K": k, "copy_us": copy_us, "rows": rows})
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rep": REP,
            "default_warps_per_sm": aq.ROW_WARPS_PER_SM}  # fmt: skip
    with open(os.path.join(out, "act-quant-ab.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
