"""The Python API; the CLI is a thin layer over these, with the same defaults.

import evalsuite
results = evalsuite.evaluate("suite.yaml")            # or a built-in name, a dict, or None for the demo
frame = results.to_frame()                             # pandas
outcome = evalsuite.gate(results, 99)                  # or a gate.yaml path, or a GateConfig-shaped dict
outcome.exit_code                                      # 0 pass, 1 fail, 2 undecidable
"""

from __future__ import annotations

from pathlib import Path

from evalsuite.config import SuiteConfig, load_suite, parse_suite
from evalsuite.gating import (
    GateConfig,
    GateOutcome,
    evaluate_gate,
    load_gate_config,
    min_recovery_config,
    parse_gate_config,
)
from evalsuite.results import Results, load


def evaluate(suite: str | Path | dict | SuiteConfig | None = None, out_dir: str | Path | None = None) -> Results:
    """Run a suite (file, built-in name, dict or SuiteConfig; None: the demo) and render its reports."""
    from evalsuite.reports import render_reports
    from evalsuite.runner import run_suite

    if isinstance(suite, SuiteConfig):
        config = suite
    elif isinstance(suite, dict):
        config = parse_suite(suite)
    else:
        config = load_suite(suite)
    outcome = run_suite(config, out_dir=out_dir)
    if outcome.data:  # in a distributed run, only rank 0 has results to render
        render_reports(outcome.results_path)
    return Results(outcome.data, outcome.results_path)


def gate(
    results: Results | dict | str | Path, thresholds: float | dict | str | Path | GateConfig, use: str | None = None
) -> GateOutcome:
    """Decide pass/fail/undecidable. thresholds: a percentage for every primary row, a gate.yaml path, a
    dict in gate.yaml's shape, or a GateConfig. use: "point" or "lower_bound" overrides what the thresholds
    say; None keeps it (a bare percentage: point), as `evalsuite gate --use` does."""
    if isinstance(results, (str, Path)):
        results = load(results)
    data = results.data if isinstance(results, Results) else results
    if isinstance(thresholds, GateConfig):
        config = thresholds
    elif isinstance(thresholds, (int, float)):
        config = min_recovery_config(float(thresholds), use or "point")
    elif isinstance(thresholds, dict):
        config = parse_gate_config(thresholds, "thresholds")
    else:
        config = load_gate_config(thresholds)
    if use is not None:
        config = parse_gate_config({**config.model_dump(), "use": use}, "use")
    return evaluate_gate(data, config)
