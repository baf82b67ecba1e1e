"""What the reports say of the GEMM paths a variant's quantized layers took (results.json's `kernel_paths`,
counted by evalsuite.kernels.paths): a share of rows per path in the variants table, and a note for every
variant whose calls did not all run our quantized kernels (dequantize-then-cuBLAS, the torch reference)."""

from __future__ import annotations

from collections import Counter

from evalsuite.kernels.paths import QUANTIZED_PATHS

from . import format as fmt


def _rows_by_path(entries: list[dict]) -> Counter:
    rows: Counter = Counter()
    for e in entries:
        rows[e["path"]] += e["rows"]
    return rows


def cell(info: dict) -> str:
    """The variants table's cell: each path's share of the rows the quantized layers multiplied."""
    entries = info.get("kernel_paths")
    if not entries:
        if not info.get("quantized_layers") or entries is None:
            return "-"  # no quantized layer, or results.json from before paths were recorded
        return "none (answers from the store)" if not info.get("model_calls") else "none"
    rows = _rows_by_path(entries)
    total = sum(rows.values())
    return ", ".join(f"{path} {fmt.pct(n / total) if total else 'n/a'}" for path, n in rows.most_common())


def notes(variants: dict) -> list[str]:
    """One note per variant with calls on a path other than our quantized kernels, each path with its reason."""
    out = []
    for name, info in variants.items():
        entries = info.get("kernel_paths") or []
        other = [e for e in entries if e["path"] not in QUANTIZED_PATHS]
        if not other:
            continue
        calls = sum(e["calls"] for e in entries)
        rows = sum(e["rows"] for e in entries)
        parts = [
            f"{e['kernel']} → {e['path']}, {e['calls']:,} calls / {e['rows']:,} rows ({e['reason']})" for e in other
        ]
        other_calls = sum(e["calls"] for e in other)
        share = fmt.pct(sum(e["rows"] for e in other) / rows) if rows else "n/a"
        out.append(
            f"{name}: {other_calls:,} of {calls:,} quantized-layer calls ({share} of {rows:,} rows) did not run our "
            "quantized kernels: " + "; ".join(parts) + "."
        )
    return out
