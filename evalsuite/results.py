"""results.json: the versioned record of a run, and how recovery is computed from the stored samples.

    results = load("evalsuite-runs/demo")          # a run directory or a results.json path
    results.to_frame()                             # one row per (suite, task, metric, variant), with recovery
    results.recovery_frame()                       # recovery rows only, suite rows included

Recovery (higher is better) = variant / baseline; (lower is better, e.g. perplexity) = baseline / variant.
A suite's recovery is the recovery of its average primary score over its higher-is-better tasks (the
published method); per-task recoveries stand beside it. Intervals: paired bootstrap over documents.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evalsuite import stats
from evalsuite.errors import UserError
from evalsuite.hashing import text_digest

SCHEMA_VERSION = 2  # 2: suites' comparisons under `suites`, answer flips under `flips`
RESULTS_FILE = "results.json"


class ComparabilityError(UserError, RuntimeError):
    """Baseline and variant were not given the same prompts, so comparing them would be meaningless."""


def _seed(seed: int, *parts: str) -> int:
    return int(text_digest("|".join([str(seed), *parts]))[:8], 16)


SHOWN_CHARS = 40  # of each prompt around the first difference, in a comparability error
SHOWN_DOCS = 5


def _first_difference(a: str, b: str) -> tuple[int, str, str]:
    """Where two texts first differ, and each one's text around that point."""
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = max(0, at - SHOWN_CHARS // 2)
    return at, a[start : at + SHOWN_CHARS], b[start : at + SHOWN_CHARS]


def _prompt_difference(base: dict, variant: dict) -> str:
    """What differs between two records' requests, in words, with the first differing text of each."""
    for field, text in (("prompt", str), ("choices", lambda c: json.dumps(c, ensure_ascii=False, default=str))):
        a, b = base.get(field), variant.get(field)
        if a == b:
            continue
        if a is None or b is None:
            return f"only the {'variant' if a is None else 'baseline'} records its {field}"
        at, shown_a, shown_b = _first_difference(text(a), text(b))
        verb = "differ" if field == "choices" else "differs"
        return f"the {field} first {verb} at character {at}: baseline {shown_a!r} vs variant {shown_b!r}"
    if "prompt" not in base:
        return "the records carry no prompt text to show"
    return "the prompt text and choices are equal, so another argument of the request differs (generation settings)"


def _aligned(base: list[dict], variant: list[dict], where: str) -> tuple[list[dict], list[dict]]:
    """Baseline and variant records in the same document order; ComparabilityError unless both were scored on
    the same documents with the same prompts."""
    key = lambda r: (r["filter"], r["doc_id"])  # noqa: E731
    b, v = sorted(base, key=key), sorted(variant, key=key)
    if [key(r) for r in b] != [key(r) for r in v]:
        kb, kv = {key(r) for r in b}, {key(r) for r in v}
        only = lambda keys: ", ".join(str(d) for _, d in sorted(keys)[:SHOWN_DOCS]) or "none"  # noqa: E731
        raise ComparabilityError(
            f"{where}: baseline and variant were scored on different documents ({len(b)} vs {len(v)} records; "
            f"baseline only: {only(kb - kv)}; variant only: {only(kv - kb)}); evaluate both with the same task "
            "data and limit"
        )
    for rb, rv in zip(b, v, strict=True):
        if rb["prompt_hash"] != rv["prompt_hash"]:
            raise ComparabilityError(
                f"{where}: document {rb['doc_id']} was given different prompts to the baseline and the variant "
                f"({_prompt_difference(rb, rv)}; prompt hash {rb['prompt_hash']} vs {rv['prompt_hash']}); refusing "
                "to compare: evaluate both with the same task files, few-shot and generation settings"
            )
    return b, v


def _values(records: list[dict], metric: str, filter_name: str | None) -> stats.Values | None:
    raw = [r[metric] for r in records if metric in r and (filter_name is None or r["filter"] == filter_name)]
    return stats.values_of(metric.split(" (")[0], raw)


def _filter_of(metric: str, records: list[dict]) -> str | None:
    filters = {r["filter"] for r in records if metric in r}
    return next(iter(filters)) if len(filters) == 1 else None


MAX_FLIPPED_SAMPLES = 100  # per variant and task, for the report's explorer


def _shown(record: dict, prediction) -> str:
    """A prediction as text: a multiple-choice index becomes its choice."""
    choices = record.get("choices")
    if isinstance(prediction, int) and choices and 0 <= prediction < len(choices):
        return str(choices[prediction]).strip()
    return str(prediction)


def flipped_samples(base: list[dict], variant: list[dict], metric: str, filter_name: str | None) -> list[dict]:
    """The documents whose primary metric changed between baseline and variant, both answers side by side."""
    out = []
    for b, v in zip(base, variant, strict=True):
        if filter_name is not None and b["filter"] != filter_name or metric not in b or b[metric] == v[metric]:
            continue
        out.append(
            {
                "doc_id": b["doc_id"],
                "direction": "correct → wrong" if b[metric] > v[metric] else "wrong → correct",
                "prompt": str(b.get("prompt", ""))[-1500:],
                "target": _shown(b, b.get("target")),
                "baseline": _shown(b, b.get("prediction")),
                "variant": _shown(v, v.get("prediction")),
            }
        )
        if len(out) == MAX_FLIPPED_SAMPLES:
            break
    return out


def task_recovery(suite: str, task, base_task, variant: str, iters: int, seed: int) -> tuple[list[dict], dict | None]:
    """Recovery rows of every metric of one task, and the flip statistics of its primary metric."""
    base_recs, var_recs = _aligned(base_task.samples, task.samples, f"{suite}/{task.task} ({variant})")
    rows, flips = [], None
    for name, metric in task.metrics.items():
        base_metric = base_task.metrics[name]
        rec = stats.recovery(base_metric.value, metric.value, metric.higher_is_better)
        interval = None
        filt = _filter_of(name, base_recs)
        bv, vv = _values(base_recs, name, filt), _values(var_recs, name, filt)
        if metric.resamplable and base_metric.resamplable and bv is not None and vv is not None and rec is not None:
            interval = stats.paired_bootstrap_recovery(
                bv, vv, metric.higher_is_better, iters, _seed(seed, variant, task.task, name)
            )
        rows.append(
            {
                "scope": "task",
                "suite": suite,
                "task": task.task,
                "metric": name,
                "variant": variant,
                "primary": name == task.primary,
                "higher_is_better": metric.higher_is_better,
                "baseline": base_metric.value,
                "value": metric.value,
                "recovery": rec,
                "ci_low": interval[0] if interval else None,
                "ci_high": interval[1] if interval else None,
                "n": metric.n,
            }
        )
        binary = bv is not None and bv.kind == "mean" and np.isin(bv.num, (0.0, 1.0)).all()
        if name == task.primary and binary and vv is not None:
            flips = {"suite": suite, "task": task.task, "metric": name, **stats.mcnemar(bv.num, vv.num)}
            flips["samples"] = flipped_samples(base_recs, var_recs, name, filt)
    return rows, flips


def suite_recovery(suite: str, variant: str, tasks: dict, base_tasks: dict, iters: int, seed: int) -> dict | None:
    """Recovery of the average primary score over the suite's higher-is-better tasks."""
    names = [t for t, r in tasks.items() if r.metrics[r.primary].higher_is_better]
    if not names:
        return None
    base_avg = float(np.mean([base_tasks[t].metrics[base_tasks[t].primary].value for t in names]))
    var_avg = float(np.mean([tasks[t].metrics[tasks[t].primary].value for t in names]))
    pairs = []
    for t in names:
        primary = tasks[t].primary
        b, v = _aligned(base_tasks[t].samples, tasks[t].samples, f"{suite}/{t}")
        filt = _filter_of(primary, b)
        pairs.append((_values(b, primary, filt), _values(v, primary, filt)))
    resamplable = all(
        tasks[t].metrics[tasks[t].primary].resamplable and base_tasks[t].metrics[tasks[t].primary].resamplable
        for t in names
    )
    interval = None
    if resamplable and all(b is not None and v is not None for b, v in pairs):
        interval = stats.suite_bootstrap_recovery(pairs, iters, _seed(seed, variant, suite))
    excluded = [t for t in tasks if t not in names]
    return {
        "scope": "suite",
        "suite": suite,
        "task": None,
        "metric": "average of primary metrics",
        "variant": variant,
        "primary": True,
        "higher_is_better": True,
        "baseline": base_avg,
        "value": var_avg,
        "recovery": stats.recovery(base_avg, var_avg, True),
        "ci_low": interval[0] if interval else None,
        "ci_high": interval[1] if interval else None,
        "n": len(names),
        "tasks": names,
        "excluded_lower_is_better": excluded,
    }


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
        for suite, tasks in suites.items():
            for name, task in tasks.items():
                rows, flip = task_recovery(suite, task, base[suite][name], variant, bootstrap_iters, seed)
                recovery.extend(rows)
                if flip:
                    flips.setdefault(variant, []).append(flip)
            suite_row = suite_recovery(suite, variant, tasks, base[suite], bootstrap_iters, seed)
            if suite_row:
                recovery.append(suite_row)
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
