"""Gate rules on the suites that have no recovery rows: the judge's win-rate, the fidelity suite's token-level
KL divergence, and similarity scores of the variant's answers against the baseline's.

    - {suite: judge, min_win_rate: 45}                 # percent; lower_bound: the interval's lower end
    - {suite: fidelity, max_kld: 0.01}                 # mean KL(baseline || variant) per token
    - {suite: similarity, metric: rougeL, min: 0.8}    # mean score; lower_bound: bootstrap lower end

Each yields measured rows shaped as recovery rows (suite, task = the prompt or text set, metric, variant) and
an observed value; `evalsuite.gating` decides and reports them beside the recovery checks.
"""

from __future__ import annotations

import math

import numpy as np

SUITE_THRESHOLDS = {"judge": "min_win_rate", "fidelity": "max_kld", "similarity": "min"}
BOOTSTRAP_ITERS = 2000


def measured_rows(suite: str, data: dict) -> list[tuple[dict, dict]]:
    """(row, measurement) for every variant and set of `suite` in results.json. A measurement holds the point
    value and, where there is one, the pessimistic end of its 95% interval."""
    out = []
    if suite == "judge":
        for variant, sets in data.get("judge", {}).items():
            for name, summary in sets.items():
                measured = {"point": summary.get("win_rate"), "bound": summary.get("ci_low")}
                out.append((_row(suite, name, "win_rate", variant), measured))
    elif suite == "fidelity":
        for variant, f in data.get("fidelity", {}).items():
            for name, t in (f.get("tokens") or {}).items():
                out.append((_row(suite, name, "kld_mean", variant), {"point": t.get("kld_mean"), "bound": None}))
    elif suite == "similarity":
        for variant, sets in data.get("similarity", {}).items():
            for name, metrics in sets.items():
                for metric, summary in metrics.items():
                    if isinstance(summary, dict) and "mean" in summary:
                        bound = _bootstrap_low(summary.get("values") or [])
                        out.append((_row(suite, name, metric, variant), {"point": summary["mean"], "bound": bound}))
    return out


def _row(suite: str, name: str, metric: str, variant: str) -> dict:
    return {"scope": "task", "suite": suite, "task": name, "metric": metric, "variant": variant, "primary": True}


def _bootstrap_low(values: list[float]) -> float | None:
    """The 2.5th percentile of the bootstrap distribution of the mean (fixed seed: the gate is reproducible)."""
    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(0)
    means = data[rng.integers(0, len(data), size=(BOOTSTRAP_ITERS, len(data)))].mean(axis=1)
    return float(np.percentile(means, 2.5))


def judge_value(observed: float, threshold: float) -> tuple[bool, str, str]:
    return 100 * observed >= threshold, f"{100 * observed:.2f}%", f">= {threshold:g}%"


def kld_value(observed: float, threshold: float) -> tuple[bool, str, str]:
    return observed <= threshold, f"{observed:.3g}", f"<= {threshold:g}"


def similarity_value(observed: float, threshold: float) -> tuple[bool, str, str]:
    return observed >= threshold, f"{observed:.4f}", f">= {threshold:g}"


DECIDE = {"judge": judge_value, "fidelity": kld_value, "similarity": similarity_value}


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
