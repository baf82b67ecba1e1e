"""The graph decoder's `LayerOps` (weight-only layers doing their own RMSNorms and residual adds, issue 17) side
by side in one process: batch-1 graph decode at Llama-3.1-8B shapes (`evalsuite bench e2e`) of bf16, then of
each variant with LayerOps off, forced on, and as the default leaves them (each format's `decode_layer_ops`),
each decode graph captured afresh, profiles kept. Prints a table and writes layer-ops-ab.json to the directory
given (default $OUT):

    python3 benchmarks/layer_ops_ab.py [OUT_DIR] [VARIANTS, e.g. W4A16,NVFP4]
"""

import json
import os
import sys
from pathlib import Path

from evalsuite import bench_e2e

DECODERS = ("graph-no-layer-ops", "graph-layer-ops", "graph")


def run(out: Path, variants: str, decoders: str) -> dict:
    bench_e2e.main(["--variants", variants, "--batches", "1", "--decoders", decoders, "--no-prefill", "--context",
                    "128", "--steps", "32", "--repeats", "5", "--profile", "8", "--out", str(out)])  # fmt: skip
    rows = json.loads((out / "bench-e2e.json").read_text())["rows"]
    return {r["variant"]: {d: round(r[f"decode_tok_s_b1_{d}"], 1) for d in decoders.split(",")} for r in rows}


def main(out_dir: str, variants: str) -> None:
    out = Path(out_dir)
    base = run(out / "bf16", "bf16", "graph")["bf16"]["graph"]
    runs = run(out / "variants", variants, ",".join(DECODERS))
    print(f"\nbf16 {base} tok/s\n| variant | no layer ops | layer ops | default |\n|---|---|---|---|")
    for v, tok_s in runs.items():
        print(f"| {v} | " + " | ".join(f"{tok_s[d]} ({tok_s[d] / base:.2f}x)" for d in DECODERS) + " |")
    (out / "layer-ops-ab.json").write_text(json.dumps({"bf16_tok_s": base, "runs": runs}, indent=1))


if __name__ == "__main__":
    argv = sys.argv[1:]
    main(argv[0] if argv else os.environ.get("OUT", "."), (argv[1:2] or ["W4A16,NVFP4"])[0])
