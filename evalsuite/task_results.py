"""A task's result kept in the run's store beside its per-document records, so that a rerun serves it without
building the task again (lm-eval's task setup, the sandbox's executions).

    result = cached(store, model_key, task.key, seed, iters) or stored(store, model_key, run(...), seed, iters)

The stored result is keyed by the model, the task's own key, the settings that shape its numbers (seed,
bootstrap resamples, sandbox limits) and SCORING_VERSION with lm-eval's version: change either and the task
is scored again from the cached model responses. Records go through JSON in both paths, so a first run and a
rerun hand the same types to the statistics.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache

from evalsuite.hashing import digest
from evalsuite.store import Store
from evalsuite.suites.academic import MetricResult, TaskResult

SCORING_VERSION = 2  # bump when a change to scoring would make a stored task result wrong (2: skipped metrics,
# primary-metric reasons)


@lru_cache(maxsize=1)
def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm-eval")  # read once: a metadata lookup costs milliseconds, and a rerun asks per task


def _result_key(task_key: str, settings: tuple) -> str:
    return f"result:{task_key}:{digest(SCORING_VERSION, _lm_eval_version(), task_key, *settings)}"


def cached(store: Store, model_key: str, task_key: str, *settings) -> TaskResult | None:
    found = store.get_samples(model_key, _result_key(task_key, settings))
    samples = store.get_samples(model_key, task_key) if found else None
    if not found or samples is None:
        return None
    record = found[0]
    metrics = {name: MetricResult(**m) for name, m in record["metrics"].items()}
    details = record["details"]
    primary, reason = record["primary"], record["primary_reason"]
    return TaskResult(record["task"], task_key, record["version"], metrics, primary, samples, details, reason)


def stored(store: Store, model_key: str, result: TaskResult, *settings) -> TaskResult:
    """Store the result (records first, then the result that points at them) and return it with its records as
    a rerun will read them."""
    store.put_samples(model_key, result.key, result.samples)
    record = {
        "task": result.task,
        "version": result.version,
        "metrics": {name: dataclasses.asdict(m) for name, m in result.metrics.items()},
        "primary": result.primary,
        "primary_reason": result.primary_reason,
        "details": result.details,
    }
    store.put_samples(model_key, _result_key(result.key, settings), [record])
    samples = json.loads(json.dumps(result.samples, default=str))
    details = json.loads(json.dumps(result.details, default=str))
    return dataclasses.replace(result, samples=samples, details=details)
