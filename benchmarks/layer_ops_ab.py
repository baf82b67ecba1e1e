"""The graph decoder's `LayerOps` (weight-only layers doing their own RMSNorms and residual adds, issue 17) side
by side in one process: batch-1 graph decode at Llama-3.1-8B shapes (`evalsuite bench e2e`) with the default
step and with LayerOps on, the GEMV normalizing x at every step (`_weight_only_gemv.NORM_ONCE` False) and once
per program (True), in that order, each variant's decode graph captured afresh per run, profiles kept. Prints a
table and writes layer-ops-ab.json to the directory given (default $OUT):

    python3 benchmarks/layer_ops_ab.py [OUT_DIR] [VARIANTS, e.g. W4A16,NVFP4]
"""

import json
import os
import sys
from pathlib import Path

from evalsuite import bench_e2e
from evalsuite.kernels import _weight_only_gemv


def run(out: Path, variants: str, decoders: str) -> dict:
    bench_e2e.main(["--variants", variants, "--batches", "1", "--decoders", decoders, "--no-prefill", "--context",
                    "128", "--steps", "32", "--repeats", "5", "--profile", "8", "--out", str(out)])  # fmt: skip
    rows = json.loads((out / "bench-e2e.json").read_text())["rows"]
    return {r["variant"]: {d: round(r[f"decode_tok_s_b1_{d}"], 1) for d in decoders.split(",")} for r in rows}


def main(out_dir: str, variants: str) -> None:
    out = Path(out_dir)
    base = run(out / "bf16", "bf16", "graph")["bf16"]["graph"]
    runs = {}
    for once in (False, True):
        _weight_only_gemv.NORM_ONCE = once
        runs["once" if once else "per-step"] = run(out / f"norm-{'once' if once else 'per-step'}", variants,
                                                   "graph-no-layer-ops,graph-layer-ops")  # fmt: skip
    print(f"\nbf16 {base} tok/s\n| variant | no layer ops | layer ops, x normalized per step | ... once |")
    print("|---|---|---|---|")
    for v in runs["per-step"]:
        plain = runs["per-step"][v]["graph-no-layer-ops"]
        cells = [f"{t} ({t / base:.2f}x)" for t in (plain, runs["per-step"][v]["graph-layer-ops"],
                                                      runs["once"][v]["graph-layer-ops"])]  # fmt: skip
        print(f"| {v} | " + " | ".join(cells) + " |")
    (out / "layer-ops-ab.json").write_text(json.dumps({"bf16_tok_s": base, "runs": runs}, indent=1))


if __name__ == "__main__":
    argv = sys.argv[1:]
    main(argv[0] if argv else os.environ.get("OUT", "."), (argv[1:2] or ["W4A16,NVFP4"])[0])
