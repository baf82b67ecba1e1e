"""Print the algorithms benchmark as one Markdown table: per variant and model, the academic suite's
recovery, each task's primary-metric recovery and the token-level KL divergence against the baseline."""

import sys
from pathlib import Path

from evalsuite.results import load


def cells(data: dict, variant: str) -> list[str]:
    rec = {(r["task"], r["scope"]): r for r in data["recovery"] if r["variant"] == variant and r["primary"]}
    out = []
    for key in ((None, "suite"), ("tiny_mc", "task"), ("tiny_arith", "task"), ("tiny_ppl", "task")):
        r = rec.get(key)
        if r is None or r["recovery"] is None:
            out.append("n/a")
            continue
        ci = f" [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]" if r["ci_low"] is not None else ""
        out.append(f"{100 * r['recovery']:.1f}%{ci}")
    tokens = data["suites"].get("fidelity", {}).get(variant, {}).get("tiny_ppl")
    out.append(f"{tokens['kld_mean']:.2e}" if tokens else "n/a")
    return out


def main(paths: list[str]) -> None:
    runs = [(Path(p).name, load(p).data) for p in paths]
    header = ["variant"]
    for name, data in runs:
        base = {m["task"]: m["value"] for m in data["metrics"] if m["variant"] == "baseline" and m["primary"]}
        header += [
            f"{name}: academic avg",
            f"tiny_mc ({base['tiny_mc']:.3f})",
            f"tiny_arith ({base['tiny_arith']:.3f})",
            f"tiny_ppl ({base['tiny_ppl']:.3f})",
            "KLD mean",
        ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for variant in [v for v in runs[0][1]["variants"] if v != "baseline"]:
        row = [variant]
        for _, data in runs:
            row += cells(data, variant)
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
