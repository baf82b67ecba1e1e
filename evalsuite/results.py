"""results.json: the versioned record of a run, and how recovery is computed from the stored samples.

    results = load("evalsuite-runs/demo")          # a run directory or a results.json path
    results.to_frame()                             # one row per (suite, task, metric, variant), with recovery
    results.recovery_frame()                       # recovery rows only, suite rows included

Recovery rows (`recovery`) come from evalsuite.recovery: per task and metric and per suite average, with
the intervals of one paired bootstrap over documents per variant, and a `reason` on every row that lacks an
interval or a recovery. Baseline and variant records are paired by evalsuite.pairing.
"""

from __future__ import annotations

import json
from pathlib import Path

from evalsuite import recovery as recovery_rows
from evalsuite.errors import UserError
from evalsuite.pairing import ComparabilityError  # noqa: F401  (raised by build; importable from here as before)

# 2: suites' comparisons under `suites`, answer flips under `flips`; later additions (readers of 2 ignore them):
# recovery rows' `reason` and `reason_detail`, rows for skipped metrics
SCHEMA_VERSION = 2
RESULTS_FILE = "results.json"


def build(
    provenance: dict,
    model: dict,
    variants: dict,
    task_results: dict[str, dict[str, dict]],
    bootstrap_iters: int,
    seed: int,
    sections: dict | None = None,
    noise_floor: dict | None = None,
) -> dict:
    """results.json as a dict. task_results[variant][suite][task] -> TaskResult; 'baseline' is a variant.
    sections: {suite: {variant: {set: summary}}} from the suites that compare answers or logits."""
    metrics, recovery, flips, details = [], [], {}, {}
    for variant, suites in task_results.items():
        for suite, tasks in suites.items():
            for task in tasks.values():
                if task.details:
                    details.setdefault(variant, {}).setdefault(suite, {})[task.task] = task.details
                for m in task.metrics.values():
                    metrics.append(
                        {
                            "suite": suite,
                            "task": task.task,
                            "task_version": task.version,
                            "metric": m.name,
                            "primary": m.name == task.primary,
                            **({"primary_reason": task.primary_reason} if m.name == task.primary else {}),
                            "variant": variant,
                            "value": m.value,
                            "stderr": m.stderr,
                            "n": m.n,
                            "higher_is_better": m.higher_is_better,
                        }
                    )
    base = task_results.get("baseline", {})
    for variant, suites in task_results.items():
        if variant == "baseline":
            continue
        boot = recovery_rows.resamples(seed, variant, bootstrap_iters)
        rows, variant_flips = recovery_rows.variant_recovery(variant, suites, base, boot)
        recovery.extend(rows)
        if variant_flips:
            flips[variant] = variant_flips
    return {
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance,
        "model": model,
        "variants": variants,
        "metrics": metrics,
        "recovery": recovery,
        "flips": flips,
        "suites": sections or {},
        "noise_floor": noise_floor or {},
        "details": details,
        "prompts": prompt_hashes(task_results),
    }


def prompt_hashes(task_results: dict[str, dict[str, dict]]) -> dict:
    """Per task, the hash of every document's rendered request as the baseline got it, and per variant how many
    of its documents got another one (0 for every variant of a comparable run)."""
    out: dict = {}
    base = task_results.get("baseline", {})
    for suite, tasks in base.items():
        for name, task in tasks.items():
            hashes = [s.get("prompt_hash") for s in task.samples]
            differ = {}
            for variant, suites in task_results.items():
                if variant != "baseline" and name in suites.get(suite, {}):
                    theirs = [s.get("prompt_hash") for s in suites[suite][name].samples]
                    pairs = zip(hashes, theirs, strict=False)  # a different count is counted apart
                    differ[variant] = sum(a != b for a, b in pairs) + abs(len(hashes) - len(theirs))
            out[f"{suite}/{name}"] = {"baseline": hashes, "documents_that_differ": differ}
    return out


def write(data: dict, run_dir: Path) -> Path:
    path = Path(run_dir) / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path


class ResultsError(UserError, ValueError):
    pass


class Results:
    def __init__(self, data: dict, path: Path | None = None):
        self.data = data
        self.path = path

    @property
    def variants(self) -> list[str]:
        return [v for v in self.data["variants"] if v != "baseline"]

    def to_frame(self):
        """Metrics of every variant (baseline included), with recovery, CI and baseline value joined in."""
        import pandas as pd

        frame = pd.DataFrame(self.data["metrics"])
        rec = pd.DataFrame([r for r in self.data["recovery"] if r["scope"] == "task"])
        if rec.empty:
            return frame
        cols = ["suite", "task", "metric", "variant", "baseline", "recovery", "ci_low", "ci_high"]
        cols += [c for c in ("reason", "reason_detail") if c in rec.columns]
        return frame.merge(rec[cols], on=["suite", "task", "metric", "variant"], how="left")

    def recovery_frame(self):
        import pandas as pd

        return pd.DataFrame(self.data["recovery"])


def load(path: str | Path) -> Results:
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise ResultsError(f"no results at {file}: run `evalsuite run` first, or give the run directory")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ResultsError(f"{file}: not valid JSON ({err})") from None
    version = data.get("schema_version")
    if version == 1:
        data = from_version_1(data)
    elif version != SCHEMA_VERSION:
        raise ResultsError(f"{file}: schema_version {version!r}; this evalsuite reads versions 1 and {SCHEMA_VERSION}")
    return Results(data, file)


def from_version_1(data: dict) -> dict:
    """A version-1 results.json in version 2's shape: the judge's and similarity's sections and the fidelity
    panel's token statistics move under `suites`, answer flips (kept under `fidelity` then) under `flips`."""
    out = {k: v for k, v in data.items() if k not in ("fidelity", "similarity", "judge")}
    fidelity = data.get("fidelity", {})
    out["flips"] = {v: f["flips"] for v, f in fidelity.items() if f.get("flips")}
    sections = {
        "fidelity": {v: f["tokens"] for v, f in fidelity.items() if f.get("tokens")},
        "similarity": data.get("similarity", {}),
        "judge": data.get("judge", {}),
    }
    out["suites"] = {name: section for name, section in sections.items() if section}
    out["schema_version"] = SCHEMA_VERSION
    return out
