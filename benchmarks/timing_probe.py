"""Two questions about how `evalsuite bench kernels` times decode kernels, answered side by side on one GPU
(issue 17). Prints a table and writes timing-probe.json to the directory given (default $OUT):

    python3 benchmarks/timing_probe.py [OUT_DIR]

1. Copy bandwidth, the denominator of every "% of copy" figure: `dst.copy_(src)` (1 GiB) as a CUDA-graph
   replay (what `bench.copy_bandwidth` timed until the first run of this probe), the same copy eagerly between
   CUDA events, and an elementwise kernel on the SMs (`torch.mul(src, 1, out=dst)`) in a graph, which
   `bench.copy_bandwidth` times now.
2. The share of a replay that is the graph's launch: `bench.time_gpu` replays one kernel per graph, so each
   reading holds one launch. Here the same call is captured CHAIN times into one graph, each on its own copy of
   the weights (together over twice the L2, so every call reads DRAM as in a model's decode step), and the
   replay's time is divided by CHAIN. Timed for the int4 GEMV as dispatched and the bf16 matmul it is compared
   with, at M = 1.
3. act_quant (per-token FP8, the bench's row) at the bench's shapes with 1 to 16 warps a program, against the
   same-size copy timed both ways (the bench divides by the graph copy).
"""

import json
import os
import sys

import torch
import triton

from evalsuite.kernels import _weight_only, act_quant
from evalsuite.kernels.bench import copy_bandwidth, time_gpu, weight_bytes
from evalsuite.kernels.bench_weight_only import weights

SHAPES = {"8b-o": (4096, 4096), "8b-gate_up": (28672, 4096), "70b-o": (8192, 8192)}
REP = 60
L2_BYTES_TIMES = 2


def time_chain(fns) -> float:
    """us per call when the calls `fns` run back to back in one graph (`bench.time_gpu` of them all: L2 flushed
    before each replay)."""
    return time_gpu(lambda: [fn() for fn in fns], REP) / len(fns)


def copies() -> dict:
    src = torch.randn(2**28, device="cuda")
    dst = torch.empty_like(src)
    gb = 2 * src.numel() * 4 * 1e-9
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(10):
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    eager = gb / sorted(times)[len(times) // 2]
    kernel = gb / (time_gpu(lambda: torch.mul(src, 1, out=dst), REP) * 1e-6)
    graph = gb / (time_gpu(lambda: dst.copy_(src), REP) * 1e-6)
    return {
        "graph_copy_gbps": round(graph, 1),
        "eager_copy_gbps": round(eager, 1),
        "graph_kernel_copy_gbps": round(kernel, 1),
        "bench_copy_bandwidth_gbps": round(copy_bandwidth(REP), 1),
    }


def launch_share(n: int, k: int) -> dict:
    wt = weights("int4", n, k, "cuda")
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    cfg = _weight_only.pick_config(1, n, k, wt["group"], wt["fmt"], gemv=True)
    per_copy = weight_bytes("w4a16", n, k)
    chain = max(4, min(64, -(-L2_BYTES_TIMES * torch.cuda.get_device_properties(0).L2_cache_size // per_copy)))
    sets = [wt] + [{**wt, "w": wt["w"].clone(), "scale": wt["scale"].clone()} for _ in range(chain - 1)]
    fulls = [wt["full"].to(torch.bfloat16)] + [wt["full"].to(torch.bfloat16) for _ in range(min(chain, 8) - 1)]

    def gemv(s):
        return lambda: _weight_only.launch(x, s["w"], s["scale"], None, None, None, s["group"], s["fmt"], cfg)

    def mm(f):
        return lambda: x @ f.t()

    row = {"N": n, "K": k, "chain_gemv": chain, "chain_bf16": len(fulls)}
    row["gemv_single_us"] = round(time_gpu(gemv(wt), REP), 2)
    row["gemv_chain_us"] = round(time_chain([gemv(s) for s in sets]), 2)
    row["bf16_single_us"] = round(time_gpu(mm(fulls[0]), REP), 2)
    row["bf16_chain_us"] = round(time_chain([mm(f) for f in fulls]), 2)
    row["ratio_single"] = round(row["bf16_single_us"] / row["gemv_single_us"], 2)
    row["ratio_chain"] = round(row["bf16_chain_us"] / row["gemv_chain_us"], 2)
    return row


ACT_SHAPES = ((1, 4096), (2048, 4096), (2048, 8192), (8192, 8192))
ACT_WARPS = (1, 2, 4, 8, 16)


def act_quant_warps(m: int, k: int) -> dict:
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    out = torch.empty_like(x)
    gb = (m * k * 2 + m * k + m * 4) * 1e-9  # what the bench counts: bf16 read, codes and scales written
    copy_gb = 2 * m * k * 2 * 1e-9
    row = {"M": m, "K": k, "dispatched_warps": act_quant.row_warps(triton.next_power_of_2(k))}
    row["copy_graph_gbps"] = round(copy_gb / (time_gpu(lambda: out.copy_(x), REP) * 1e-6), 1)
    row["copy_kernel_gbps"] = round(copy_gb / (time_gpu(lambda: torch.mul(x, 1, out=out), REP) * 1e-6), 1)
    dispatched = act_quant.row_warps
    try:
        for warps in ACT_WARPS:
            act_quant.row_warps = lambda block_k, w=warps: w
            us = time_gpu(lambda: act_quant.act_quant(x, "fp8", "token"), REP)
            row[f"warps{warps}_us"] = round(us, 2)
            row[f"warps{warps}_pct_graph_copy"] = round(100 * gb / (us * 1e-6) / row["copy_graph_gbps"], 1)
            row[f"warps{warps}_pct_kernel_copy"] = round(100 * gb / (us * 1e-6) / row["copy_kernel_gbps"], 1)
    finally:
        act_quant.row_warps = dispatched
    return row


def main(out_dir: str) -> None:
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
    print("  ".join(f"{k} {v}" for k, v in meta.items()))
    result = {"meta": meta, "copy": copies(), "launch": {}}
    print("copy bandwidth, GB/s (read + write):", result["copy"], flush=True)
    print("| shape | GEMV single | GEMV chained | bf16 single | bf16 chained | ratio single | ratio chained |")
    print("|---|---|---|---|---|---|---|")
    for name, (n, k) in SHAPES.items():
        r = result["launch"][name] = launch_share(n, k)
        print(
            f"| {name} | {r['gemv_single_us']} | {r['gemv_chain_us']} (x{r['chain_gemv']}) | {r['bf16_single_us']} "
            f"| {r['bf16_chain_us']} (x{r['chain_bf16']}) | {r['ratio_single']} | {r['ratio_chain']} |",
            flush=True,
        )
        torch.cuda.empty_cache()
    print("act_quant fp8 per token: us, % of the same-size graph copy / kernel copy, per warps a program")
    result["act_quant"] = []
    for m, k in ACT_SHAPES:
        r = act_quant_warps(m, k)
        result["act_quant"].append(r)
        cells = [f"{w}w {r[f'warps{w}_us']} us {r[f'warps{w}_pct_graph_copy']}% / {r[f'warps{w}_pct_kernel_copy']}%"
                 for w in ACT_WARPS]  # fmt: skip
        print(f"M={m} K={k} (dispatched {r['dispatched_warps']}w): " + "; ".join(cells), flush=True)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "timing-probe.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "."))
