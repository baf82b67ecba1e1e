"""The weight-only decode GEMV (M = 1) with and without one launch-time choice, timed side by side in one
process (issue 17): each case runs the kernel as dispatched, then with the choice turned off, on the same
weights and x, each a CUDA-graph replay with L2 flushed (`bench.time_gpu`). Prints a table and writes
gemv-ab.json to $OUT (or the directory given):

    python3 benchmarks/gemv_ab.py [OUT_DIR]

Today's choice: `x_in_quads`, whether x is read 4 bf16 values at a time (int64 loads) or one at a time."""

import json
import os
import sys

import torch
import triton

from evalsuite.kernels import _weight_only_gemv
from evalsuite.kernels.bench import copy_bandwidth, time_gpu, weight_bytes
from evalsuite.kernels.bench_weight_only import paths, weights

SHAPES = {"8b-qkv": (6144, 4096), "8b-o": (4096, 4096), "8b-gate_up": (28672, 4096), "8b-down": (4096, 14336),
          "70b-o": (8192, 8192)}  # fmt: skip
FORMATS = ("int4", "nvfp4")
REP = 60


def main(out_dir: str) -> None:
    copy_gbps = copy_bandwidth(REP)
    on = _weight_only_gemv.x_in_quads
    rows = []
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}  "
          f"copy {copy_gbps:.0f} GB/s")  # fmt: skip
    print("| format | shape | quads (us) | one by one (us) | one / quads | quads % copy | one % copy | same bits |")
    print("|---|---|---|---|---|---|---|---|")
    for fmt in FORMATS:
        for name, (n, k) in SHAPES.items():
            wt = weights(fmt, n, k, "cuda")
            x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
            fused, _, _ = paths(x, wt)
            _weight_only_gemv.x_in_quads = on
            y_on, t_on = fused().clone(), time_gpu(fused, REP)
            _weight_only_gemv.x_in_quads = lambda x: False
            y_off, t_off = fused().clone(), time_gpu(fused, REP)
            _weight_only_gemv.x_in_quads = on
            gb = weight_bytes("w4a16" if fmt == "int4" else fmt, n, k) * 1e-3
            row = {"format": fmt, "shape": name, "N": n, "K": k, "quads_us": round(t_on, 2),
                   "one_by_one_us": round(t_off, 2), "speedup": round(t_off / t_on, 3),
                   "quads_pct_copy": round(100 * gb / t_on / copy_gbps, 1),
                   "one_pct_copy": round(100 * gb / t_off / copy_gbps, 1),
                   "same_bits": bool(torch.equal(y_on, y_off))}  # fmt: skip
            rows.append(row)
            print(f"| {fmt} | {name} | {t_on:.1f} | {t_off:.1f} | {row['speedup']:.3f} | {row['quads_pct_copy']} "
                  f"| {row['one_pct_copy']} | {row['same_bits']} |", flush=True)  # fmt: skip
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "copy_gbps": round(copy_gbps, 1), "rep": REP}  # fmt: skip
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gemv-ab.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "."))
