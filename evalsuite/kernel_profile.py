"""Where a GPU function's time goes, kernel by kernel, measured: `profile(fn, calls)` runs fn under
torch.profiler with CUDA activity (kernels replayed from a CUDA graph are recorded one by one) and groups the
kernels by name and launch grid; `by_kind` sums them by what they do (our weight-only GEMV, cuBLAS matmuls,
attention, Inductor's fused kernels, ...); `render` prints both tables. Against a wall time per call that the
caller measured (else the span from the first kernel to the last), the GPU's idle share (launch gaps, host
waits) is the difference.

    prof = profile(lambda: decoder.step(ids), calls=8, wall_s=step_seconds)
    print(render(prof, "W4A16 decode step"))
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

# first match wins: our kernels by their Triton names, then vendor and compiler kernels by their usual names
KINDS = (
    ("W8A8 decode GEMV, act_quant fused (ours)", r"_w8a8_gemv"),
    ("weight-only GEMV (ours)", r"_gemv_kernel"),
    ("weight-only GEMM / dequantize (ours)", r"_weight_only_kernel|_dequant_kernel|_split_k_reduce"),
    ("scaled GEMM (ours)", r"_scaled_gemm"),
    ("activation quantization (ours)", r"_act_quant|_absmax|_fp4_quantize|_hadamard"),
    ("attention", r"flash|fmha|attention|attn|sdpa"),
    ("cuBLAS / CUTLASS matmul", r"nvjet|gemm|gemv|xmma|cutlass|splitk"),
    ("Inductor fused kernels", r"^triton_"),
    ("copies and fills", r"copy|memcpy|memset|fill|cat"),
)


HOST_ROWS = 12


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def _kernel_events(trace: dict) -> list[dict]:
    return [e for e in trace.get("traceEvents", []) if e.get("cat") == "kernel" and "dur" in e]


def profile(fn, calls: int, wall_s: float | None = None, warmup: bool = True, host: bool = False) -> dict:
    """Run fn `calls` times under the profiler (after one unprofiled call with `warmup`) and return {"calls",
    "wall_us" (per call: from wall_s when given, else the span), "span_us" (first kernel start to last kernel
    end, per call), "busy_us" (sum of kernel durations per call), "rows": [{"name", "grid", "kind", "count"
    (per call), "us" (per call), "us_each"}], longest first, "result": fn's last return value}; with `host`,
    the host side is recorded too and "host" lists the operators with the most self time on the CPU (what the
    GPU may be waiting for)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    if warmup:
        fn()
    torch.cuda.synchronize()
    activities = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if host else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(calls):
            result = fn()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = _kernel_events(json.loads(path.read_text()))
    if not events:
        raise RuntimeError("the profiler recorded no CUDA kernels (CUPTI unavailable?)")
    grouped: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        grid = e.get("args", {}).get("grid")
        grouped[(e["name"], "x".join(map(str, grid)) if grid else "")].append(float(e["dur"]))
    rows = [
        {
            "name": name,
            "grid": grid,
            "kind": kind_of(name),
            "count": len(durs) / calls,
            "us": sum(durs) / calls,
            "us_each": sum(durs) / len(durs),
        }
        for (name, grid), durs in grouped.items()
    ]
    rows.sort(key=lambda r: -r["us"])
    start = min(float(e["ts"]) for e in events)
    end = max(float(e["ts"]) + float(e["dur"]) for e in events)
    busy = sum(r["us"] for r in rows)
    out = {
        "calls": calls,
        "wall_us": wall_s * 1e6 if wall_s is not None else (end - start) / calls,
        "span_us": (end - start) / calls,
        "busy_us": busy,
        "rows": rows,
        "result": result,
    }
    if host:
        ops = sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)[:HOST_ROWS]
        out["host"] = [{"name": a.key, "count": a.count / calls, "self_us": a.self_cpu_time_total / calls} for a in ops]
    return out


def by_kind(prof: dict) -> list[dict]:
    """Kernel time per call summed by kind, longest first, with the share of the wall time."""
    totals: dict[str, dict] = defaultdict(lambda: {"count": 0.0, "us": 0.0})
    for r in prof["rows"]:
        totals[r["kind"]]["count"] += r["count"]
        totals[r["kind"]]["us"] += r["us"]
    out = [{"kind": k, **v, "share": v["us"] / prof["wall_us"]} for k, v in totals.items()]
    out.sort(key=lambda r: -r["us"])
    return out


def render(prof: dict, title: str, top: int = 15) -> str:
    """Markdown: the totals (wall, GPU busy, idle), time by kind, then the `top` longest kernels."""
    wall, busy = prof["wall_us"], prof["busy_us"]
    lines = [
        f"**{title}**: {wall:,.1f} us per call; kernels busy {busy:,.1f} us ({busy / wall:.0%}); "
        f"idle {max(wall - busy, 0.0):,.1f} us; profiled over {prof['calls']} calls",
        "",
        "| kind | kernels per call | us per call | share of wall |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['kind']} | {r['count']:g} | {r['us']:,.1f} | {r['share']:.1%} |" for r in by_kind(prof)]
    lines += ["", "| kernel | grid | kind | per call | us each | us per call |", "|---|---|---|---|---|---|"]
    for r in prof["rows"][:top]:
        name = r["name"] if len(r["name"]) <= 60 else r["name"][:57] + "..."
        lines.append(f"| `{name}` | {r['grid']} | {r['kind']} | {r['count']:g} | {r['us_each']:.2f} | {r['us']:,.1f} |")
    if "host" in prof:
        lines += ["", "Host operators with the most self time on the CPU:", "", "| operator | per call | self us |"]
        lines.append("|---|---|---|")
        lines += [f"| `{h['name'][:60]}` | {h['count']:g} | {h['self_us']:,.1f} |" for h in prof["host"]]
    return "\n".join(lines) + "\n"
