"""The tables and chart data a report shows, built once from results.json for every output format."""

from __future__ import annotations

from dataclasses import dataclass, field

from evalsuite.recovery import explain
from evalsuite.suites.base import Section

from . import format as fmt
from . import kernel_paths

WORST_LAYERS = 5  # per variant, in the per-layer sensitivity table, beside every layer flagged below the floor


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    footnotes: list[str] = field(default_factory=list)  # shown under the table


class Footnotes:
    """One marker (†1, †2, ...) per distinct reason a shown recovery lacks its interval or its value; the
    reasons are listed under the recovery table."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, row: dict) -> str:
        text = explain(row)
        if text is None:
            return ""
        if text not in self.texts:
            self.texts.append(text)
        return f" †{self.texts.index(text) + 1}"

    def lines(self) -> list[str]:
        return [f"†{i} {text}" for i, text in enumerate(self.texts, 1)]


def _unshown(rows: list[dict]) -> list[str]:
    """Rows of results.json the recovery table does not show (other metrics, skipped ones) that lack an
    interval or a recovery: one line per reason, naming them."""
    named: dict[str, list[str]] = {}
    for r in rows:
        if r["scope"] == "task" and not r["primary"] and (text := explain(r)) is not None:
            named.setdefault(text, []).append(f"{r['variant']} {r['task']} · {r['metric']}")
    return [f"Not in the table, {text}: {', '.join(labels)}" for text, labels in named.items()]


@dataclass
class ReportView:
    title: str
    summary: list[str]
    recovery: Table
    scores: Table
    variants: Table
    flips: Table
    provenance: Table
    chart_rows: list[dict] = field(default_factory=list)  # primary-metric recovery rows with intervals
    notes: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)  # each suite's own table, from its `report`
    sensitivity: Table = field(default_factory=lambda: Table([], []))
    diagnosis: Table = field(default_factory=lambda: Table([], []))  # explain / fix results, shown first
    cards: list[dict] = field(default_factory=list)  # one verdict per variant
    flipped: list[dict] = field(default_factory=list)  # flipped answers, both sides, for the explorer
    compression_points: list[dict] = field(default_factory=list)
    speed_points: list[dict] = field(default_factory=list)


def _cell(row: dict | None, marks: Footnotes | None = None) -> str:
    if row is None:
        return "n/a"
    text = fmt.pct(row["recovery"])
    ci = fmt.interval(row.get("ci_low"), row.get("ci_high"))
    return f"{text} {ci}".strip() + (marks.mark(row) if marks else "")


def _primary(metric_row: dict) -> str:
    """'yes (why)' on the metric that stands for its task; results.json version 1 has no reason."""
    if not metric_row.get("primary"):
        return ""
    reason = metric_row.get("primary_reason")
    return f"yes ({reason})" if reason else "yes"


def build_view(data: dict) -> ReportView:
    variants = [v for v in data["variants"] if v != "baseline"]
    rec = data["recovery"]
    suite_rows = {(r["suite"], r["variant"]): r for r in rec if r["scope"] == "suite"}
    task_rows = [r for r in rec if r["scope"] == "task" and r["primary"]]
    tasks = list(dict.fromkeys((r["suite"], r["task"], r["metric"]) for r in task_rows))
    suites = list(dict.fromkeys(s for s, _, _ in tasks))

    header = ["variant"] + [f"{s} (average)" for s in suites] + [f"{t} · {m}" for _, t, m in tasks]
    rows, marks = [], Footnotes()
    for v in variants:
        row = [v] + [_cell(suite_rows.get((s, v)), marks) for s in suites]
        lookup = {(r["suite"], r["task"]): r for r in task_rows if r["variant"] == v}
        row += [_cell(lookup.get((s, t)), marks) for s, t, _ in tasks]
        rows.append(row)
    recovery = Table(header, rows)

    metrics = data["metrics"]
    score_keys = list(dict.fromkeys((m["suite"], m["task"], m["metric"]) for m in metrics))
    by_key = {(m["suite"], m["task"], m["metric"], m["variant"]): m for m in metrics}
    score_rows = []
    for s, t, m in score_keys:
        first = by_key.get((s, t, m, "baseline")) or next(
            x for x in metrics if (x["suite"], x["task"], x["metric"]) == (s, t, m)
        )
        arrow = "↑" if first["higher_is_better"] else "↓"
        cells = [t, f"{m} {arrow}", str(first["n"]), _primary(first)]
        for v in ["baseline"] + variants:
            x = by_key.get((s, t, m, v))
            cells.append(fmt.value(x["value"], x["stderr"]) if x else "n/a")
        score_rows.append(cells)
    scores = Table(["task", "metric", "n", "primary metric (why)", "baseline"] + variants, score_rows)

    var_rows = []
    for name, info in data["variants"].items():
        var_rows.append(
            [
                name,
                info.get("description", ""),
                info.get("algorithm") or "",
                info.get("backend", "")
                + (f" (fp8 accumulation: {info['fp8_accumulation']})" if info.get("fp8_accumulation") else ""),
                ", ".join(info.get("kernels", [])) or "none",
                fmt.nbytes(info.get("weight_bytes"))
                + (f" ({fmt.nbytes(info['file_bytes'])} on disk)" if info.get("file_bytes") else ""),
                f"{info['compression_ratio']:.2f}×" if info.get("compression_ratio") else "n/a",
                info.get("calibration") or ("none" if info.get("scheme") else "-"),
                kernel_paths.cell(info),
            ]
        )
    dtype = data["variants"].get("baseline", {}).get("weights_dtype")
    weights = f"weights in memory ({dtype} float parts)" if dtype else "weights"
    header = ["variant", "scheme", "algorithm", "backend", "kernels", weights, "compression", "calibration"]
    header.append("GEMM paths (share of rows)")
    speeds = {name: info.get("speed") for name, info in data["variants"].items()}
    base_speed = speeds.get("baseline") or {}
    if any(speeds.values()):
        header += ["prefill tok/s", "decode tok/s"]
        for row, name in zip(var_rows, data["variants"], strict=True):
            sp = speeds[name] or {}
            for key in ("prefill_tok_s", "decode_tok_s"):
                ratio = f" ({sp[key] / base_speed[key]:.2f}x)" if key in sp and base_speed.get(key) else ""
                row.append(f"{sp[key]:,.0f}{ratio}" if key in sp else "n/a")
    variants_table = Table(header, var_rows)

    floor = data.get("noise_floor", {}).get("baseline") or {}
    floor_rate = {(f["suite"], f["task"]): f["flip_rate"] for f in floor.get("flips", [])}
    flip_rows = []
    for v, variant_flips in data.get("flips", {}).items():
        for f in variant_flips:
            share = {
                k: f" ({fmt.pct(f[k] / f['n'])})" if f.get("n") else ""
                for k in ("correct_to_wrong", "wrong_to_correct")
            }
            row = [v, f["task"], *(f"{f[k]}{share[k]}" for k in share), fmt.pct(f["flip_rate"])]
            if floor:
                row.append(fmt.pct(floor_rate.get((f["suite"], f["task"]))))
            flip_rows.append(row + [fmt.pvalue(f["p_value"])])
    flip_header = ["variant", "task", "correct → wrong", "wrong → correct", "flip rate"]
    if floor:
        flip_header.append(f"noise floor (baseline at batch {floor['other_batch_size']})")
    flips = Table(flip_header + ["McNemar p"], flip_rows)

    prov = data["provenance"]
    versions = ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items() if v)
    prov_rows = [
        ["model", f"{data['model']['path']} (identity {data['model']['identity'][:12]})"],
        *(
            [
                [
                    "GGUF",
                    f"{g['file']}: {', '.join(f'{n} x{c}' for n, c in g['tensor_types'].items())}; {g['dequantized']}",
                ]
            ]
            if (g := data["model"].get("gguf"))
            else []
        ),
        ["device", f"{prov.get('device')}, {prov.get('dtype')}"],
        ["kernel backend", str(prov.get("backend"))],
        ["batch size / seed", f"{prov.get('batch_size')} / {prov.get('seed')}"],
        ["bootstrap resamples", str(prov.get("bootstrap_iters"))],
        ["chat template", str(prov.get("chat_template_hash"))],
        ["git", str(prov.get("git_sha"))],
        ["versions", versions],
        ["command", " ".join(prov.get("command", []))],
        ["created", str(prov.get("created"))],
    ]

    summary = []
    for v in variants:
        parts = [f"{s}: {_cell(suite_rows.get((s, v)), marks)}" for s in suites]
        mine = [r for r in task_rows if r["variant"] == v and r["recovery"] is not None]
        worst = min(mine, key=lambda r: r["recovery"], default=None)
        if worst:
            parts.append(f"lowest task: {worst['task']} {fmt.pct(worst['recovery'])}")
        summary.append(f"{v} — " + "; ".join(parts))

    notes = [
        "Recovery = variant ÷ baseline for higher-is-better metrics, baseline ÷ variant for lower-is-better ones "
        "(perplexity). A suite's average is the recovery of the mean primary score over its higher-is-better "
        "tasks. Brackets: 95% paired-bootstrap interval over documents, one bootstrap per variant: every task's "
        "and every average's interval comes from the same resampled documents. † marks a recovery without an "
        "interval or without a value; the reason is listed under the recovery table.",
    ]
    if any(info.get("backend") == "torch-ref" for info in data["variants"].values()):
        notes.append(
            "Backend torch-ref: quantized layers ran the pure-torch reference of each kernel's arithmetic "
            "(no GPU), not the Triton kernels."
        )
    notes += kernel_paths.notes(data["variants"])
    if any(info.get("fp8_accumulation") in ("fast", "precise") for info in data["variants"].values()):
        notes.append(
            "fp8 accumulation: on Hopper GPUs, 'fast' sums fp8 products in the tensor core's own accumulator, as "
            "deployed FP8 models do (torch._scaled_mm with use_fast_accum, vLLM); 'precise' promotes the sums "
            "to fp32 every 128 columns, as cuBLAS does by default. Other GPUs accumulate in fp32 in both."
        )
    for v, info in data["variants"].items():
        if info.get("saturated_weights") and info.get("quantized_weights"):
            share = info["saturated_weights"] / info["quantized_weights"]
            note = f": {info['saturation_note']}" if info.get("saturation_note") else ""
            notes.append(
                f"{v}: {info['saturated_weights']:,} saturated weights ({share:.2%} of {info['quantized_weights']:,}; "
                f"weights beyond the largest code of their group, clipped){note}."
            )
    recomputed = {k: v for k, v in (prov.get("store_rows_recomputed") or {}).items() if v}
    if recomputed:
        notes.append(
            "Run store: cached answers that failed their check were recomputed, not served ("
            + ", ".join(f"{v} {k}" for k, v in recomputed.items())
            + ")."
        )
    view_extra = _suite_tables(data)
    recovery.footnotes = marks.lines() + _unshown(rec)
    view_extra.update(_cards_and_points(data, variants, suites, suite_rows, task_rows, marks))
    view_extra["flipped"] = _flipped(data)
    for v, per_suite in data.get("details", {}).items():
        for fallback in {d.get("fallback") for tasks in per_suite.values() for d in tasks.values()} - {None}:
            notes.append(f"{v}: {fallback}")
    title = f"evalsuite report: {prov.get('suite', '')}"
    return ReportView(
        title,
        summary,
        recovery,
        scores,
        variants_table,
        flips,
        Table(["", ""], prov_rows),
        task_rows,
        notes,
        **view_extra,
    )


def _suite_tables(data: dict) -> dict:
    from evalsuite.suites.base import REGISTRY, suite_class

    sections = [section for name in REGISTRY if (section := suite_class(name).report(data)) is not None]
    layer_rows = []
    for v, info in data.get("variants", {}).items():
        measured = sorted(
            (x for x in info.get("layers", []) if x.get("sqnr_db") is not None), key=lambda x: x["sqnr_db"]
        )
        flagged = set(info.get("flagged_layers", []))
        for rank, layer in enumerate(measured):
            if rank >= WORST_LAYERS and layer["name"] not in flagged:  # the worst few, and every flagged one
                continue
            flag = "below floor" if layer["name"] in flagged else ""
            layer_rows.append(
                [v, layer["name"], f"{layer['sqnr_db']:.1f}", str(layer["saturated"]), str(layer["zero_scales"]), flag]
            )
    sensitivity = Table(["variant", "layer", "output SQNR (dB)", "saturated weights", "zero scales", ""], layer_rows)
    return {"sections": sections, "sensitivity": sensitivity}


VERDICTS = (  # thresholds of the published study: >= 99% (OpenLLM v1), >= 96% (v2)
    (0.99, "recovers", "ok"),
    (0.96, "small loss", "warn"),
    (0.0, "loses accuracy", "bad"),
)


def _cards_and_points(
    data: dict, variants: list[str], suites: list[str], suite_rows: dict, task_rows: list, marks: Footnotes
) -> dict:
    info = data["variants"]
    base_speed = (info.get("baseline", {}).get("speed") or {}).get("decode_tok_s")
    cards, compression, speed = [], [], []
    for v in variants:
        rows = [suite_rows[(s, v)] for s in suites if (s, v) in suite_rows]
        recs = [r["recovery"] for r in rows]
        if not recs or any(r is None for r in recs):
            label, css = "undetermined", "warn"
        else:
            label, css = next((text, c) for floor, text, c in VERDICTS if min(recs) >= floor)
        lines = [f"{r['suite']}: {_cell(r, marks)}" for r in rows]
        mine = [r for r in task_rows if r["variant"] == v and r["recovery"] is not None]
        worst = min(mine, key=lambda r: r["recovery"], default=None)
        if worst:
            lines.append(f"lowest task: {worst['task']} {fmt.pct(worst['recovery'])}")
        ratio = info[v].get("compression_ratio")
        if ratio:
            lines.append(f"{ratio:.2f}x smaller weights ({fmt.nbytes(info[v].get('weight_bytes'))})")
        v_speed = (info[v].get("speed") or {}).get("decode_tok_s")
        if v_speed and base_speed:
            lines.append(f"decode {v_speed / base_speed:.2f}x the baseline's speed")
        cards.append({"variant": v, "label": label, "css": css, "lines": lines, "scheme": info[v].get("description")})
        if rows:
            first = rows[0]
            point = {"label": v, "y": first["recovery"], "y_low": first["ci_low"], "y_high": first["ci_high"]}
            compression.append({**point, "x": ratio})
            if v_speed and base_speed:
                speed.append({**point, "x": v_speed / base_speed})
    return {"cards": cards, "compression_points": compression, "speed_points": speed}


def _word_diff(a: str, b: str) -> tuple[str, str]:
    """HTML of both texts with the words that differ marked (<del> in the first, <ins> in the second)."""
    import difflib
    from html import escape

    wa, wb = a.split(), b.split()
    out_a, out_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        left, right = escape(" ".join(wa[i1:i2])), escape(" ".join(wb[j1:j2]))
        if op == "equal":
            out_a.append(left)
            out_b.append(right)
        else:
            if left:
                out_a.append(f"<del>{left}</del>")
            if right:
                out_b.append(f"<ins>{right}</ins>")
    return " ".join(out_a), " ".join(out_b)


def _flipped(data: dict) -> list[dict]:
    rows = []
    for v, variant_flips in data.get("flips", {}).items():
        for f in variant_flips:
            for sample in f.get("samples", []):
                base_html, var_html = _word_diff(sample["baseline"], sample["variant"])
                rows.append(
                    {
                        "variant": v,
                        "task": f["task"],
                        "direction": sample["direction"],
                        "prompt": sample["prompt"],
                        "target": sample["target"],
                        "baseline_html": base_html,
                        "variant_html": var_html,
                    }
                )
    return rows
