#!/usr/bin/env bash
# The demo's cached rerun against its first run, side by side on this machine (issue 16, item 4):
# `evalsuite run` (the demo suite on embedded:tiny) into an empty directory, then the same command RERUNS times
# (default 3) on that directory, whose answers are all in its store. Prints a table and writes JSON.
#   bash benchmarks/cached_rerun.sh [OUT_JSON] [RUN_DIR]      # PYTHON=... picks the interpreter, RERUNS=... the count
set -euo pipefail
out=${1:-benchmarks/cached-rerun-cpu.json}
run_dir=${2:-$(mktemp -d)/demo}
"${PYTHON:-python}" - "$out" "$run_dir" "${RERUNS:-3}" <<'EOF'
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

out, run_dir, reruns = sys.argv[1], sys.argv[2], int(sys.argv[3])
if os.path.exists(run_dir) and os.listdir(run_dir):
    sys.exit(f"cached_rerun.sh: {run_dir} is not empty; the first run needs an empty directory")
command = [sys.executable, "-m", "evalsuite", "run", "--out", run_dir]


def timed(label):
    """Wall and CPU seconds (user + system of the child) of one `evalsuite run`, and its load average before."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"cached_rerun.sh: {label} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(os.path.join(run_dir, "results.json")) as f:
        calls = sum(v.get("model_calls") or 0 for v in json.load(f)["variants"].values())
    row = {"run": label, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "model_calls": calls, "load_1min": load}
    print(f"{label:9s} wall {wall:8.2f} s  cpu {cpu:8.2f} s  model calls {calls:6d}  load {load:.1f}", flush=True)
    return row


rows = [timed("first")] + [timed(f"rerun {i + 1}") for i in range(reruns)]
first, again = rows[0], rows[1:]
median_wall = statistics.median(r["wall_s"] for r in again)
median_cpu = statistics.median(r["cpu_s"] for r in again)
summary = {
    "first_wall_s": first["wall_s"],
    "first_cpu_s": first["cpu_s"],
    "rerun_median_wall_s": median_wall,
    "rerun_median_cpu_s": median_cpu,
    "rerun_wall_share": round(median_wall / first["wall_s"], 4),
    "rerun_cpu_share": round(median_cpu / first["cpu_s"], 4),
    "target_share": 0.10,
}
print()
print("| run | wall (s) | CPU (s) | model calls |")
print("|---|---|---|---|")
for r in rows:
    print(f"| {r['run']} | {r['wall_s']} | {r['cpu_s']} | {r['model_calls']} |")
print(f"| rerun median | {median_wall} ({summary['rerun_wall_share']:.1%} of the first) "
      f"| {median_cpu} ({summary['rerun_cpu_share']:.1%}) | |")
meta = {
    "command": "evalsuite run --out DIR (the demo suite), DIR empty the first time",
    "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
    "python": platform.python_version(),
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
}
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    json.dump({"meta": meta, "summary": summary, "runs": rows}, f, indent=1)
print(f"wrote {out}")
EOF
