"""The scaling sweep of issue 19 on one GPU, inside a wall-clock budget; then `evalsuite scaling-fit` on it.

    python benchmarks/scaling_gpu.py --out "$OUT"                       # H100: about 5.5 minutes in all
    python benchmarks/scaling_gpu.py --device cpu --sizes tiny --budget-s 60 --out /tmp/sweep   # pipeline check

Steps, each written to OUT/sweep.json as soon as it is known (a cut run keeps everything before it):
1. training rows from the embedded model's generator, in parallel processes (before CUDA starts);
2. forward + backward throughput of one linear layer per precision (bf16, fp8, mxfp4-quartet) at two shapes;
3. a short calibration run per (size, precision): its tokens/s, and the kernels compiled;
4. D_max chosen so that all runs fit the time left; then every (size, D, precision), cheapest first, each
   stopped at the deadline (a cut run is listed under "cut", not as a point);
5. the fit (multipliers, bootstrap intervals, plot, Markdown) with the measured tokens/s ratios as speedups:
   scaling-fit.json, scaling-fit.png, scaling-fit.txt, scaling-fit.md and fit-output.log in OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path


def _args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "evalsuite-runs/scaling-gpu"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="h100", help="a preset of (hidden, layers): h100 or tiny")
    ap.add_argument("--precisions", default="bf16,mxfp4-quartet", help="comma-separated; the first is the base")
    ap.add_argument("--budget-s", type=float, default=320.0, help="wall seconds from start to the fit's end")
    ap.add_argument("--fit-reserve-s", type=float, default=45.0, help="seconds kept for the fit and bootstrap")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-tokens", type=float, default=16e6, help="training rows generated (the D_max cap)")
    ap.add_argument("--workers", type=int, default=min(14, os.cpu_count() or 1), help="data generator processes")
    ap.add_argument("--bootstrap-iters", type=int, default=100)
    return ap.parse_args()


def main() -> int:
    start = time.time()
    args = _args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from evalsuite.training import sweep

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = start + args.budget_s
    precisions = args.precisions.split(",")
    sizes = [tuple(s) for s in sweep.SIZES[args.sizes]]
    cfg = sweep.SweepConfig(device=args.device, batch=args.batch, seq_len=args.seq_len, lr=args.lr)
    record = {"config": {**asdict(cfg), **vars(args), "sizes": sizes}, "torch": torch.__version__,
              "points": [], "runs": [], "cut": [], "phases": {}}  # fmt: skip

    def write():
        (out / "sweep.json").write_text(json.dumps(record, indent=1) + "\n")

    def phase(name, began):
        record["phases"][name] = round(time.time() - began, 2)
        print(f"[{time.time() - start:6.1f} s] {name} done in {record['phases'][name]:.1f} s", flush=True)
        write()

    t = time.time()
    pool = sweep.token_pool(int(args.max_tokens) // args.seq_len, args.seq_len, cfg.seed, args.workers)
    held_out = sweep.held_out_rows(64, args.seq_len, cfg.seed)
    record["pool_tokens"] = pool.numel()
    phase("data", t)

    if args.device != "cpu":
        torch.set_float32_matmul_precision("high")  # TF32 for the fp32 parts (attention, LM head): all precisions
        record["device_name"] = torch.cuda.get_device_name()
        import triton

        record["triton"] = triton.__version__
    record["float32_matmul_precision"] = torch.get_float32_matmul_precision()

    t = time.time()
    h_max = max(h for h, _ in sizes)
    shapes = [(cfg.tokens_per_step, h_max, 3 * h_max)] + ([(8192, 4096, 4096)] if args.device != "cpu" else [])
    record["gemm"], record["kernels_vs_emulation"], record["errors"] = [], [], []
    for p in ("bf16", "fp8", "mxfp4-quartet"):
        try:  # a failing kernel is recorded and printed; the sweep goes on without it
            check = (256, 256, 384) if args.device != "cpu" else (64, 64, 96)  # the CPU: under TRITON_INTERPRET=1
            record["kernels_vs_emulation"].append(sweep.kernels_vs_emulation(p, *check, args.device))
            record["gemm"] += [sweep.gemm_throughput(p, *shape, args.device) for shape in shapes]
        except Exception as err:  # noqa: BLE001 -- recorded in sweep.json and printed
            record["errors"].append({"phase": "gemm", "precision": p, "error": f"{type(err).__name__}: {err}"})
            print(f"FAILED gemm {p}: {type(err).__name__}: {err}", flush=True)
    phase("gemm throughput", t)

    t = time.time()
    measured = {}
    for p in list(precisions):
        try:
            measured |= {(size, p): sweep.calibrate(size, p, pool, held_out, cfg) for size in sizes}
        except Exception as err:  # noqa: BLE001 -- recorded, printed, and the precision leaves the sweep
            record["errors"].append({"phase": "calibration", "precision": p, "error": f"{type(err).__name__}: {err}"})
            print(f"FAILED calibration {p}: {type(err).__name__}: {err}; the sweep goes on without it", flush=True)
            precisions.remove(p)
            measured = {key: v for key, v in measured.items() if key[1] != p}
    rates = {key: rate for key, (rate, _) in measured.items()}
    overheads = {key: overhead for key, (_, overhead) in measured.items()}
    record["calibration"] = [{"hidden": s[0], "layers": s[1], "precision": p, "tokens_per_second": r,
                              "seconds_besides_steps": o} for (s, p), (r, o) in measured.items()]  # fmt: skip
    phase("calibration", t)

    seconds = deadline - time.time() - args.fit_reserve_s
    steps_max = min(sweep.plan_steps(rates, overheads, cfg, seconds), len(pool) // cfg.batch)
    record["steps_max"], record["tokens_max"] = steps_max, steps_max * cfg.tokens_per_step
    print(f"training budget {seconds:.0f} s: D_max {steps_max * cfg.tokens_per_step:,} tokens ({steps_max} steps)")
    plan = sweep.order_plan(sizes, precisions, steps_max, cfg, rates)

    def on_point(point, timing):
        record["points"].append(asdict(point))
        record["runs"].append(timing)
        print(f"[{time.time() - start:6.1f} s] {point.precision:14s} N={point.params:>10,} D={point.tokens:>11,} "
              f"loss {point.loss:.4f}  {timing['tokens_per_second']:,.0f} tok/s", flush=True)  # fmt: skip
        write()

    t = time.time()
    record["cut"] = sweep.run_points(plan, pool, held_out, cfg, deadline - args.fit_reserve_s, on_point)
    phase("sweep", t)

    record["speedups"] = _speedups(record, precisions)
    write()
    _table(record)
    return _fit(args, out, precisions[0], record["speedups"], deadline)


def _speedups(record: dict, precisions: list[str]) -> dict:
    """Tokens/s of each precision over the base's, at the largest size both trained (the longest runs)."""
    base, speed = precisions[0], {}
    for p in precisions[1:]:
        both = [r for r in record["runs"] if r["precision"] == p
                and any(q["precision"] == base and q["hidden"] == r["hidden"] for q in record["runs"])]  # fmt: skip
        if not both:
            continue
        top = max(both, key=lambda r: (r["params"], r["steps"]))
        ref = max((q for q in record["runs"] if q["precision"] == base and q["hidden"] == top["hidden"]),
                  key=lambda q: q["steps"])  # fmt: skip
        speed[p] = top["tokens_per_second"] / ref["tokens_per_second"]
    return speed


def _table(record: dict) -> None:
    print("\n| precision | shape (M, K, N) | fwd+bwd ms | TFLOP/s |\n|---|---|---|---|")
    for g in record["gemm"]:
        print(f"| {g['precision']} | {g['m']}, {g['k']}, {g['n']} | {g['seconds'] * 1e3:.2f} | {g['tflops']:.1f} |")
    for c in record["kernels_vs_emulation"]:
        errors = ", ".join(f"{k} {v:.2e}" for k, v in c["relative_error"].items())
        print(f"kernels vs emulation, {c['precision']} ({c['m']}, {c['k']}, {c['n']}): {errors}")
    print("\n| precision | hidden x layers | params | tokens | loss | tokens/s |\n|---|---|---|---|---|---|")
    for r, p in zip(record["runs"], record["points"], strict=True):
        print(f"| {p['precision']} | {r['hidden']} x {r['layers']} | {p['params']:,} | {p['tokens']:,} | "
              f"{p['loss']:.4f} | {r['tokens_per_second']:,.0f} |")  # fmt: skip
    print(f"\ncut by the deadline: {len(record['cut'])} runs; speedups (tokens/s vs base): {record['speedups']}")


def _fit(args, out: Path, base: str, speedups: dict, deadline: float) -> int:
    command = [sys.executable, "-m", "evalsuite", "scaling-fit", "--sweep", str(out / "sweep.json"), "--out", str(out),
               "--base", base, "--bootstrap-iters", str(args.bootstrap_iters)]  # fmt: skip
    for p, s in speedups.items():
        command += ["--speedup", f"{p}={s:.4f}"]
    (out / "fit-command.txt").write_text(" ".join(command) + "\n")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(30.0, deadline - time.time() + 20))
    except subprocess.TimeoutExpired:
        print(f"the fit ran out of time; the sweep is in {out / 'sweep.json'}; rerun: {' '.join(command)}")
        return 1
    (out / "fit-output.log").write_text(done.stdout + done.stderr)
    print(done.stdout + done.stderr)
    if done.returncode:
        print(f"the fit failed (exit {done.returncode}); the sweep is in {out / 'sweep.json'}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
