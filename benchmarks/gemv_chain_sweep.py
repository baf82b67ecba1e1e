"""The weight-only decode GEMV's tiles timed as a decode step runs them (issue 17): back to back, each call on its
own copy of the weights (together over twice the L2, so every call reads DRAM), in one CUDA graph, the replay's
time divided by the number of calls. Earlier sweeps (`kernels/tune.py`, `benchmarks/gemv_ab.py`) timed one call
per replay, where the graph's launch and the kernel's ramp weigh on the small shapes: 8B o took 14.1 us alone
and 9.0 back to back (`benchmarks/gemv-ab-h100/timing-probe.json`). Prints a table per shape, best first, and
writes gemv-chain-sweep.json to the directory given (default $OUT):

    python3 benchmarks/gemv_chain_sweep.py [OUT_DIR]      # SWEEP_S: stop starting new shapes after this (300)

Shapes: Llama-3.1-8B's q/k/v, o and down at M = 1, and gate/up with the SiLU-gate in the epilogue, for int4
(group 128) and NVFP4. Each variant's output is compared with the dispatched one's ("DIFFERS": summed in
another order, so the last bits may differ)."""

import dataclasses
import json
import os
import sys
import time

import torch
import triton

from evalsuite.kernels import _weight_only
from evalsuite.kernels.bench import copy_bandwidth, time_gpu, weight_bytes
from evalsuite.kernels.bench_weight_only import weights

SHAPES = {"8b-qkv": (6144, 4096, False), "8b-o": (4096, 4096, False), "8b-down": (4096, 14336, False),
          "8b-gate_up": (28672, 4096, True)}  # fmt: skip
FORMATS = ("int4", "nvfp4")
REP = 40
TILES = ((16, 1), (32, 1), (32, 2), (64, 2), (64, 4), (128, 4), (128, 8))  # (rows, warps)
PER_SM = (1, 2, 4, 8, 16)  # 1: no split where N alone fills an SM once
TALL_TILES = ((16, 1), (32, 1), (32, 2), (64, 2), (64, 4))
TALL_PER_SM = (1, 2, 4)


def variants(n: int, k: int, fmt: int, tall: bool) -> dict:
    """name -> change of the dispatched config: tiles x programs per SM (K splits), staged three deep; a few
    load schemes and 512-wide steps at the dispatched tile."""
    out = {"dispatched": {}}
    for rows, warps in TALL_TILES if tall else TILES:
        for per_sm in TALL_PER_SM if tall else PER_SM:
            split = _weight_only.gemv_split_k(n, k, rows, 256, per_sm)
            out[f"{rows}r {warps}w {per_sm}/SM"] = {"block_n": rows, "num_warps": warps, "split_k": split,
                                                    "block_k": 256, "num_stages": 3, "prefetch": False}  # fmt: skip
    base = _weight_only.pick_config(1, n, k, 128, fmt, gemv=True)
    for name, change in {"staged 2": {"num_stages": 2, "prefetch": False}, "staged 4": {"num_stages": 4,
                         "prefetch": False}, "one tile ahead": {"num_stages": 2, "prefetch": True},
                         "512 wide": {"block_k": 512, "split_k": max(1, base.split_k // 2)}}.items():  # fmt: skip
        out[name] = change
    return out


def chain_for(per_copy: int) -> int:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return max(4, min(32, -(-2 * l2 // per_copy)))


def sweep(fmt_name: str, shape: str, n: int, k: int, gated: bool, copy_gbps: float) -> dict:
    wt = weights(fmt_name, n, k, "cuda")
    fmt = wt["fmt"]
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    per_copy = weight_bytes("w4a16" if fmt_name == "int4" else fmt_name, n, k)
    chain = chain_for(per_copy)
    sets = [wt] + [{**wt, "w": wt["w"].clone(), "scale": wt["scale"].clone()} for _ in range(chain - 1)]
    dispatched = _weight_only.pick_config(1, n, k, wt["group"], fmt, gemv=True)
    rows, first = [], None
    for name, change in variants(n, k, fmt, gated).items():
        cfg = dataclasses.replace(dispatched, **change)

        def call(s, cfg=cfg):
            return _weight_only.launch(x, s["w"], s["scale"], None, s["global_scale"], None, s["group"], fmt, cfg,
                                       gated=gated)  # fmt: skip

        try:
            y = call(wt).clone()
            us = time_gpu(lambda: [call(s) for s in sets], REP) / chain
        except Exception as e:  # a tile that does not compile or fit is a row of the table, not the end of it
            rows.append({"variant": name, "config": dataclasses.asdict(cfg), "error": f"{type(e).__name__}: {e}"})
            continue
        first = y if first is None else first
        rows.append({"variant": name, "config": dataclasses.asdict(cfg), "us": round(us, 2),
                     "pct_copy": round(100 * per_copy * 1e-3 / us / copy_gbps, 1),
                     "same_bits": bool(torch.equal(y, first))})  # fmt: skip
    return {"format": fmt_name, "shape": shape, "N": n, "K": k, "gated": gated, "chain": chain, "rows": rows}


def main(out_dir: str) -> None:
    budget = float(os.environ.get("SWEEP_S", "300"))
    start = time.time()
    copy_gbps = copy_bandwidth(REP)
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "copy_gbps": round(copy_gbps, 1), "rep": REP}  # fmt: skip
    print("  ".join(f"{k} {v}" for k, v in meta.items()), flush=True)
    results = []
    for fmt_name in FORMATS:
        for shape, (n, k, gated) in SHAPES.items():
            if time.time() - start > budget:
                print(f"SWEEP_S={budget:.0f} s spent: {fmt_name} {shape} and later not swept", flush=True)
                break
            r = sweep(fmt_name, shape, n, k, gated, copy_gbps)
            results.append(r)
            timed = sorted((row for row in r["rows"] if "us" in row), key=lambda row: row["us"])
            base = next((row["us"] for row in r["rows"] if row["variant"] == "dispatched" and "us" in row), None)
            print(f"\n{fmt_name} {shape} (N={n} K={k}{', gated' if gated else ''}; {r['chain']} copies back to back)")
            print("| variant | us | % of copy | vs dispatched | bits |\n|---|---|---|---|---|")
            for row in timed[:8]:
                ratio = f"{base / row['us']:.2f}x" if base else "-"
                same = "same" if row["same_bits"] else "DIFFERS"
                print(f"| {row['variant']} | {row['us']} | {row['pct_copy']}% | {ratio} | {same} |")
            for row in r["rows"]:
                if "error" in row:
                    print(f"  {row['variant']}: {row['error'][:160]}")
            sys.stdout.flush()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gemv-chain-sweep.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "."))
