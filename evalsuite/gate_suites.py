"""Gate rules on the suites that have no recovery rows, through the suite registry: each such suite names its
gate-file key (`GateKey` in `evalsuite.suites.base.REGISTRY`) and turns its results.json section into
measured rows (`Suite.measures`).

    - {suite: judge, min_win_rate: 45}                 # percent; lower_bound: the interval's lower end
    - {suite: fidelity, max_kld: 0.01}                 # mean KL(baseline || variant) per token
    - {suite: similarity, metric: rougeL, min: 0.8}    # mean score; lower_bound: bootstrap lower end

Each yields rows shaped as recovery rows (suite, task = the prompt or text set, metric, variant) and an
observed value; `evalsuite.gating` decides and reports them beside the recovery checks.
"""

from __future__ import annotations

import math

from evalsuite.suites.base import REGISTRY, suite_class


def thresholds() -> dict[str, str]:
    """{suite: its gate-file threshold key} for every registered suite that has one."""
    return {name: entry.gate.key for name, entry in REGISTRY.items() if entry.gate is not None}


def measured_rows(suite: str, data: dict) -> list[tuple[dict, dict]]:
    """(row, measurement) for every variant and set of `suite` in results.json. A measurement holds the point
    value and, where there is one, the pessimistic end of its 95% interval."""
    section = data.get("suites", {}).get(suite, {})
    rows = suite_class(suite).measures(section) if section else []
    return [(_row(m), {"point": m["point"], "bound": m["bound"]}) for m in rows]


def _row(m: dict) -> dict:
    return {"scope": "task", "primary": True, **{k: m[k] for k in ("suite", "task", "metric", "variant")}}


def decide(suite: str, observed: float, threshold: float) -> tuple[bool, str, str]:
    return REGISTRY[suite].gate.decide(observed, threshold)


def metric_of(suite: str) -> str | None:
    return REGISTRY[suite].gate.metric


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
