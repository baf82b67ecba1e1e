"""The exported recipe read back: the fixed variant (quantized in memory) and its compressed-tensors checkpoint
(loaded from disk) scored in one run on the fix benchmark's store, with the gate decided on the checkpoint.

    python benchmarks/fix_readback.py WORK_DIR RESULTS_DIR VARIANT    # after benchmarks/fix_outlier.sh's export

Writes RESULTS_DIR/readback.json and readback.md and prints the table. Scores are compared exactly; where they
differ, the relative difference is shown (the perplexities, sums of log-likelihoods over long texts, may differ
in the last bits). Exit 0 when the gate passes on the checkpoint and every score is within 1e-6 relative."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from evalsuite.config import load_suite, parse_suite
from evalsuite.gating import evaluate_gate, format_outcome, load_gate_config
from evalsuite.runner import run_suite

GATE = Path(__file__).resolve().parent / "suites" / "fix-outlier-gate.yaml"


def _same(a: float, b: float) -> str:
    if a == b:
        return "yes"
    return f"NO (relative difference {abs(a - b) / max(abs(a), abs(b)):.1e})"


def main(work: Path, results: Path, variant: str) -> int:
    fixed_name = f"{variant}-fixed"
    config = load_suite(work / "run" / "fix" / variant / "suite.yaml")
    raw = json.loads(json.dumps(config.model_dump(exclude={"source"})))
    fixed = next(v for v in raw["variants"] if v["name"] == fixed_name)
    raw["variants"] = [fixed, {"name": "exported", "path": str(work / "checkpoint")}]
    start = time.time()
    data = run_suite(parse_suite(raw), work / "readback", store_path=work / "run" / "store.sqlite").data
    wall = time.time() - start
    scores = {(m["task"], m["metric"], m["variant"]): m["value"] for m in data["metrics"] if m["suite"] == "academic"}
    rows = sorted({(t, m) for t, m, _ in scores})
    recovery = {
        (r["task"], r["variant"]): r
        for r in data["recovery"]
        if r["scope"] == "task" and r["primary"] and r["suite"] == "academic"
    }
    lines = [f"| task | metric | baseline | {fixed_name} | exported checkpoint | equal | checkpoint recovery |"]
    lines.append("|---|---|---|---|---|---|---|")
    for task, metric in rows:
        b, f, e = (scores.get((task, metric, v)) for v in ("baseline", fixed_name, "exported"))
        r = recovery.get((task, "exported"))
        rec = f"{100 * r['recovery']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]" if r else ""
        lines.append(f"| {task} | {metric} | {b:.4f} | {f:.4f} | {e:.4f} | {_same(f, e)} | {rec} |")
    gate = load_gate_config(GATE)
    retarget = [r.model_copy(update={"variant": "exported"}) for r in gate.rules]
    outcome = evaluate_gate(data, gate.model_copy(update={"rules": retarget}))
    lines += ["", "Gate on the exported checkpoint:", "", "```", format_outcome(outcome, gate.use), "```"]
    lines.append(f"\nreadback run: {wall:.0f} s wall")
    text = "\n".join(lines)
    print(text)
    (results / "readback.md").write_text(text + "\n")
    pairs = [(scores[(t, m, fixed_name)], scores[(t, m, "exported")]) for t, m in rows]
    equal = all(f == e for f, e in pairs)
    largest = max((abs(f - e) / max(abs(f), abs(e)) for f, e in pairs if f != e), default=0.0)
    out = {"variant": fixed_name, "scores": [[t, m, v, s] for (t, m, v), s in sorted(scores.items())]}
    out |= {"equal": equal, "max_relative_difference": largest, "gate_exit": outcome.exit_code, "wall_s": wall}
    (results / "readback.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0 if largest <= 1e-6 and outcome.exit_code == 0 else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
