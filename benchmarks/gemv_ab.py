"""The weight-only decode GEMV (M = 1) as dispatched against variants of it, timed side by side in one process
(issue 17): on the same weights and x, each variant is a CUDA-graph replay with L2 flushed (`bench.time_gpu`),
and its output is compared bit for bit with the dispatched one's. Prints a table and writes gemv-ab.json to
the directory given (default $OUT):

    python3 benchmarks/gemv_ab.py [OUT_DIR]

Variants: "one tile ahead" loads W one tile ahead in registers (the dispatch before 2026-12-07); "staged S"
turns that off and has Triton's pipeliner stage every load of a step S steps deep through shared memory
(asynchronous copies); the last also changes the dispatched tile. A variant that sums in another order may
differ from the dispatched output in the last bits ("DIFFERS"). Runs on an H100 (benchmarks/gemv-ab-h100/)
also timed prefetching W two tiles ahead (no faster anywhere, up to 1.3x slower for NVFP4; taken out again),
512 columns a step and twice the K splits, x read one value at a time (`_weight_only_gemv.x_in_quads` off),
tiles of 32 to 128 rows with 1 to 8 warps, and staging with twice the K splits or 512 columns a step
(gemv-ab-run4-staged.json)."""

import dataclasses
import json
import os
import sys

import torch
import triton

from evalsuite.kernels import _weight_only
from evalsuite.kernels.bench import copy_bandwidth, time_gpu, weight_bytes
from evalsuite.kernels.bench_weight_only import weights

SHAPES = {"8b-qkv": (6144, 4096), "8b-o": (4096, 4096), "8b-gate_up": (28672, 4096), "8b-down": (4096, 14336),
          "70b-o": (8192, 8192)}  # fmt: skip
FORMATS = ("int4", "nvfp4")
VARIANTS = {
    "dispatched": lambda c: {},
    "one tile ahead": lambda c: {"prefetch": True, "num_stages": 2},
    "staged 2": lambda c: {"prefetch": False, "num_stages": 2},
    "staged 3": lambda c: {"prefetch": False, "num_stages": 3},
    "staged 4": lambda c: {"prefetch": False, "num_stages": 4},
    "staged 3, 64 rows, 4 warps": lambda c: {"prefetch": False, "num_stages": 3, "block_n": 64, "num_warps": 4},
}
REP = 60


def runner(x: torch.Tensor, wt: dict, change):
    """A call of the GEMV on x with weight `wt`, its dispatched config changed by change(config) (a dict of
    fields)."""
    (m, k), n = x.shape, wt["w"].shape[0]
    cfg = _weight_only.pick_config(m, n, k, wt["group"], wt["fmt"], gemv=True)
    cfg = dataclasses.replace(cfg, **change(cfg))
    return lambda: _weight_only.launch(x, wt["w"], wt["scale"], None, wt["global_scale"], None, wt["group"],
                                       wt["fmt"], cfg)  # fmt: skip


def main(out_dir: str) -> None:
    copy_gbps = copy_bandwidth(REP)
    rows = []
    names = list(VARIANTS)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}  "
          f"copy {copy_gbps:.0f} GB/s; each cell: us, % of copy bandwidth, same bits as dispatched")  # fmt: skip
    print("| format | shape | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for fmt in FORMATS:
        for shape, (n, k) in SHAPES.items():
            wt = weights(fmt, n, k, "cuda")
            x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
            kb = weight_bytes("w4a16" if fmt == "int4" else fmt, n, k) * 1e-3  # kB over us: GB/s
            row, cells, first = {"format": fmt, "shape": shape, "N": n, "K": k}, [], None
            for name, change in VARIANTS.items():
                run = runner(x, wt, change)
                y, us = run().clone(), time_gpu(run, REP)
                first = y if first is None else first
                same = bool(torch.equal(y, first))
                row[name] = {"us": round(us, 2), "pct_copy": round(100 * kb / us / copy_gbps, 1), "same_bits": same}
                cells.append(f"{us:.1f}, {row[name]['pct_copy']}%{'' if same else ', DIFFERS'}")
            rows.append(row)
            print(f"| {fmt} | {shape} | " + " | ".join(cells) + " |", flush=True)
            del wt
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "copy_gbps": round(copy_gbps, 1), "rep": REP}  # fmt: skip
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gemv-ab.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "."))
