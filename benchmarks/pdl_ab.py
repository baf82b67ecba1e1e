"""Programmatic dependent launch of the weight-only decode GEMV (`_weight_only_gemv.PDL_MODE`, issue 17), side
by side in one process: batch-1 graph decode at Llama-3.1-8B shapes (`evalsuite bench e2e`) with the GEMV
launched plainly (mode 0), as a dependent launch (1), and as one that also prefetches its first W tiles into L2
before it waits (2), in the order given, each variant's decode graph captured afresh per mode. Prints a table and
writes pdl-ab.json to the directory given (default $OUT):

    python3 benchmarks/pdl_ab.py [OUT_DIR] [MODES, e.g. 0,1,2,0] [VARIANTS, e.g. W4A16,NVFP4]
"""

import json
import os
import sys
from pathlib import Path

from evalsuite import bench_e2e
from evalsuite.kernels import _weight_only_gemv


def run(out: Path, variants: str) -> dict:
    bench_e2e.main(["--variants", variants, "--batches", "1", "--decoders", "graph", "--no-prefill", "--context",
                    "128", "--steps", "32", "--repeats", "5", "--out", str(out)])  # fmt: skip
    rows = json.loads((out / "bench-e2e.json").read_text())["rows"]
    return {r["variant"]: round(r["decode_tok_s_b1_graph"], 1) for r in rows}


def main(out_dir: str, modes: list[int], variants: str) -> None:
    out = Path(out_dir)
    base = run(out / "bf16", "bf16")["bf16"]
    results = []
    for i, mode in enumerate(modes):
        _weight_only_gemv.PDL_MODE = mode
        tok_s = run(out / f"run{i}-mode{mode}", variants)
        results.append({"mode": mode, "tok_s": tok_s})
    print(f"\nbf16 {base} tok/s\n| run | PDL mode | " + " | ".join(f"{v} tok/s (vs bf16)" for v in results[0]["tok_s"])
          + " |\n|---|---|" + "---|" * len(results[0]["tok_s"]))  # fmt: skip
    for i, r in enumerate(results):
        cells = " | ".join(f"{t} ({t / base:.2f}x)" for t in r["tok_s"].values())
        print(f"| {i} | {r['mode']} | {cells} |")
    (out / "pdl-ab.json").write_text(json.dumps({"bf16_tok_s": base, "runs": results}, indent=1))


if __name__ == "__main__":
    argv = sys.argv[1:]
    main(argv[0] if argv else os.environ.get("OUT", "."), [int(m) for m in (argv[1:2] or ["0,1,2,0"])[0].split(",")],
         (argv[2:3] or ["W4A16,NVFP4"])[0])  # fmt: skip
