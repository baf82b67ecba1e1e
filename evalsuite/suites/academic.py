"""The academic suite: lm-eval tasks (built-in ones over local JSONL, or any lm-eval task name) run through
lm-eval's `evaluate` with our `EvalLM`, offline, logging every sample.

    tasks = resolve_tasks(config.suites.academic)           # checked before any model loads
    result = run_task(lm, tasks[0], seed=1234)              # TaskResult: metrics and per-sample records
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from evalsuite import stats
from evalsuite.config import AcademicSuite
from evalsuite.hashing import text_digest
from evalsuite.suites.base import ModelContext, Suite, SuiteRun
from evalsuite.suites.local_data import check_hub_access, local_configs
from evalsuite.suites.task_checks import (
    UnknownTaskError,
    check_jsonl,
    check_task_file,
    check_task_names,
    check_task_packages,
)
from evalsuite.suites.templates import compiled_templates
from evalsuite.task_names import task_manager
from evalsuite.tasks import builtin_tasks, task_config

# The metric that stands for an lm-eval task in suite averages, as the leaderboards report it (OpenLLM v1 and
# v2, and the papers that follow them). Other tasks: the suite's `metric:`, the task file's `primary_metric`,
# else the first metric its YAML lists (first filter).
PRIMARY_METRICS = {
    "arc_challenge": "acc_norm",
    "arc_easy": "acc_norm",
    "hellaswag": "acc_norm",
    "truthfulqa_mc2": "acc",
    "winogrande": "acc",
    "mmlu": "acc",
    "piqa": "acc_norm",
    "openbookqa": "acc_norm",
    "boolq": "acc",
    "lambada_openai": "acc",
    "gsm8k": "exact_match (strict-match)",
    "gsm8k_cot": "exact_match (strict-match)",
    "leaderboard_bbh": "acc_norm",
    "leaderboard_gpqa": "acc_norm",
    "leaderboard_musr": "acc_norm",
    "leaderboard_mmlu_pro": "acc",
    "leaderboard_math_hard": "exact_match",
    "leaderboard_ifeval": "prompt_level_strict_acc",
    "tiny_mc": "acc_norm",
    "tiny_arith": "exact_match",
    "tiny_ppl": "word_perplexity",
}


@dataclass(frozen=True)
class ResolvedTask:
    name: str
    config: dict | list[dict] | None  # local tasks: config dicts (one per leaf task); lm-eval names: None
    num_fewshot: int | None
    limit: int | None
    metric: str | None
    key: str  # hashes name, version, settings and the task's content
    declared: str | None = None  # the task file's own primary_metric


@dataclass
class MetricResult:
    name: str
    value: float
    stderr: float | None
    higher_is_better: bool
    n: int
    resamplable: bool  # per-sample values whose aggregate reproduces lm-eval's value (intervals allowed)


@dataclass
class TaskResult:
    task: str
    key: str
    version: str
    metrics: dict[str, MetricResult]
    primary: str
    samples: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # suite-specific counts, e.g. code-execution timeouts
    primary_reason: str = ""  # why this metric stands for the task (shown in the report)


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else path


def _stable(obj) -> str:
    """JSON fallback that does not depend on memory addresses (task configs hold resolved functions)."""
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _content(config: dict) -> dict:
    content = dict(config)
    files = content.get("dataset_kwargs", {}).get("data_files")
    if isinstance(files, dict):
        digests = {split: _file_digest(f) for split, f in files.items()}
        content["dataset_kwargs"] = {**content["dataset_kwargs"], "data_files": digests}
    content["metadata"] = {k: v for k, v in content.get("metadata", {}).items() if k != "data_dir"}
    return content


def _task_key(name: str, config: dict | list[dict] | None, num_fewshot, limit) -> str:
    """Hashes the task's name, settings and content (data files by their bytes, not their paths)."""
    configs = config if isinstance(config, list) else [config or {"task": name}]
    payload = json.dumps([name, [_content(c) for c in configs], num_fewshot, limit], sort_keys=True, default=_stable)
    return f"{name}:{text_digest(payload)}"


def resolve_tasks(suite: AcademicSuite) -> list[ResolvedTask]:
    include = tuple(suite.include)
    check_task_names([t.name for t in suite.tasks], include)
    check_task_packages([t.name for t in suite.tasks])
    builtin = builtin_tasks(include)
    resolved = []
    for spec in suite.tasks:
        if spec.data_dir is not None:
            config = local_configs(spec.name, spec.data_dir)
        elif spec.name in builtin:
            check_task_file(builtin[spec.name])
            config = task_config(spec.name, include)
        else:
            check_hub_access(spec.name)
            config = None
        for one in config if isinstance(config, list) else [config or {}]:
            files = one.get("dataset_kwargs", {}).get("data_files") or {}
            for path in files.values() if isinstance(files, dict) else []:
                if str(path).endswith(".jsonl"):
                    check_jsonl(path, one)
        fewshot = spec.num_fewshot if spec.num_fewshot is not None else suite.num_fewshot
        limit = spec.limit if spec.limit is not None else suite.limit
        key = _task_key(spec.name, config, fewshot, limit)
        config, declared = _without_primary_metric(config)
        resolved.append(ResolvedTask(spec.name, config, fewshot, limit, spec.metric, key, declared))
    return resolved


def _without_primary_metric(config):
    """The task configs without our `primary_metric` key (lm-eval does not know it), and its value."""
    if config is None:
        return None, None
    configs = config if isinstance(config, list) else [config]
    declared = next((c["primary_metric"] for c in configs if c.get("primary_metric")), None)
    stripped = [{k: v for k, v in c.items() if k != "primary_metric"} for c in configs]
    return (stripped if isinstance(config, list) else stripped[0]), declared


def _metric_label(metric: str, filter_name: str, filters_of_metric: set[str]) -> str:
    return metric if filter_name == "none" or len(filters_of_metric) == 1 else f"{metric} ({filter_name})"


def _prediction(sample: dict):
    resps = sample["filtered_resps"]
    if len(resps) > 1 and all(isinstance(r, (list, tuple)) and len(r) == 2 for r in resps):
        scores = [r[0] for r in resps]
        return max(range(len(scores)), key=scores.__getitem__)  # multiple choice: the chosen index
    first = resps[0]
    return first[0] if isinstance(first, (list, tuple)) and len(first) == 1 else first


def _record(sample: dict, label_of: dict[str, str]) -> dict:
    args = [list(a) if isinstance(a, tuple) else a for a in sample["arguments"]]
    record = {
        "doc_id": sample["doc_id"],
        "filter": sample["filter"],
        "prompt": str(args[0][0]) if args and args[0] else "",
        "choices": [str(a[1]) for a in args] if len(args) > 1 else None,
        "target": sample["target"],
        "prediction": _prediction(sample),
        "prompt_hash": text_digest(json.dumps(args, sort_keys=True, default=str)),
    }
    for metric in sample["metrics"]:
        record[label_of.get((metric, sample["filter"]), metric)] = sample[metric]
    return record


@contextmanager
def no_request_bars():
    """lm-eval draws a progress bar per task while it builds requests; our own bar replaces it. tqdm reads
    TQDM_DISABLE for the bars that do not set `disable` themselves (ours set it)."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = before


def evaluate_tasks(
    lm, tasks: list, num_fewshot: int | None, limit: int | None, seed: int, manager, compile_once: bool = True
) -> dict:
    """Tasks (names or config dicts) through lm-eval's public `TaskManager.load` and `evaluate`, set up as
    `simple_evaluate` sets them up (seeds, few-shot count and seed) without what it adds around them: a
    `git describe` in the current directory, and results on LOCAL_RANK 0 only (our ranks share the work in
    EvalLM and each needs them). With compile_once, each prompt template is compiled once
    (`templates.compiled_templates`) instead of once per document. lm-eval's results dict, samples logged."""
    import random

    import numpy as np
    import torch
    from lm_eval.evaluator import evaluate

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loaded = manager.load(tasks)
    for task_obj in loaded["tasks"].values():
        default = task_obj.get_config("num_fewshot")
        if num_fewshot is not None and default != 0:  # a task file's explicit 0 is kept, as lm-eval does
            task_obj.set_config(key="num_fewshot", value=num_fewshot)
        elif num_fewshot is None and default is None:
            task_obj.set_config(key="num_fewshot", value=0)
        task_obj.set_fewshot_seed(seed=seed)
    with no_request_bars(), compiled_templates() if compile_once else nullcontext():
        return evaluate(lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=0, log_samples=True)


def run_task(lm, task: ResolvedTask, seed: int, bootstrap_iters: int) -> TaskResult:
    lm.task_name = task.name
    tasks = task.config if isinstance(task.config, list) else [task.config or task.name]
    out = evaluate_tasks(lm, tasks, task.num_fewshot, task.limit, seed, task_manager(task.config is None))
    return _task_result(out, task, seed, bootstrap_iters)


def _task_result(out: dict | None, task: ResolvedTask, seed: int, bootstrap_iters: int) -> TaskResult:
    """Metrics and per-sample records of a task, or of a group of tasks pooled over all their samples (the
    size-weighted mean, as the leaderboards aggregate MMLU and the like)."""
    if out is None:
        raise RuntimeError(f"lm-eval returned no results for task {task.name!r}")
    leaves = sorted(out["samples"])
    group = leaves != [task.name]
    pairs = sorted(
        {tuple(k.split(",", 1)) for leaf in leaves for k in out["results"][leaf] if "," in k and "_stderr" not in k}
    )
    filters: dict[str, set[str]] = {}
    for metric, filt in pairs:
        filters.setdefault(metric, set()).add(filt)
    label_of = {(m, f): _metric_label(m, f, filters[m]) for m, f in pairs}
    samples = []
    for leaf in leaves:
        for sample in out["samples"][leaf]:
            record = _record(sample, label_of)
            if group:
                record["doc_id"], record["subtask"] = f"{leaf}/{record['doc_id']}", leaf
            samples.append(record)
    metrics, skipped = {}, {}
    for metric, filt in pairs:
        label = label_of[(metric, filt)]
        per_sample = [r[label] for r in samples if r["filter"] == filt and label in r]
        values = stats.values_of(metric, per_sample)
        higher = next(
            out["higher_is_better"][leaf][metric] for leaf in leaves if metric in out["higher_is_better"][leaf]
        )
        if group:
            if values is None:  # pooling needs per-sample values we can aggregate; lm-eval's own group number stands
                skipped[label] = "no per-document values to pool over the group's subtasks"
                continue
            value = float(values.aggregate())
        else:
            value = float(out["results"][task.name][f"{metric},{filt}"])
            if values is not None and abs(float(values.aggregate()) - value) > 1e-6 * max(1.0, abs(value)):
                values = None  # an aggregation other than the ones we can resample: no interval, not a wrong one
        err = stats.stderr(values, bootstrap_iters, seed) if values is not None else None
        metrics[label] = MetricResult(label, value, err, bool(higher), len(per_sample), values is not None)
    primary, reason = choose_primary(task, out.get("configs", {}), leaves, label_of, metrics)
    if primary not in metrics:
        raise UnknownTaskError(f"task {task.name!r} has no metric {primary!r}; it has: {', '.join(metrics)}")
    versions = out.get("versions", {})
    version = str(versions.get(task.name) or ",".join(sorted({str(versions.get(leaf, "")) for leaf in leaves})))
    details = {"subtasks": leaves} if group else {}
    if skipped:
        details["skipped_metrics"] = skipped  # {metric: why}: recovery rows say why they have no value
    return TaskResult(task.name, task.key, version, metrics, primary, samples, details, reason)


def choose_primary(task: ResolvedTask, configs: dict, leaves: list[str], label_of: dict, metrics: dict):
    """(metric, why): the suite's `metric:`, the task file's `primary_metric`, the leaderboard convention of an
    lm-eval task, or the first metric the task's YAML lists (with its first filter); never an alphabetical
    accident."""
    if task.metric:
        return task.metric, "named in the suite file (metric:)"
    if task.declared:
        return task.declared, "named in the task file (primary_metric)"
    if task.name in PRIMARY_METRICS:
        return PRIMARY_METRICS[task.name], "the leaderboards' metric for this lm-eval task"
    for leaf in leaves:
        config = configs.get(leaf) or {}
        listed = [m.get("metric") for m in config.get("metric_list") or [] if isinstance(m.get("metric"), str)]
        filters = [f.get("name") for f in config.get("filter_list") or [] if isinstance(f, dict)] or ["none"]
        for metric in listed:
            for filt in filters:
                if (metric, filt) in label_of and label_of[(metric, filt)] in metrics:
                    return label_of[(metric, filt)], "the first metric the task's YAML lists"
    first = next(iter(metrics))
    return first, "the task's YAML lists no metric: the first lm-eval reported"


class Academic(Suite):
    """lm-eval tasks, scored per task: recovery rows with paired-bootstrap intervals."""

    name, title = "academic", "Academic tasks"
    Spec = AcademicSuite

    def plan(self) -> None:
        self.tasks = resolve_tasks(self.spec)

    def evaluate(self, ctx: ModelContext) -> SuiteRun:
        from evalsuite import task_results

        out = SuiteRun()
        seed, iters = ctx.config.run.seed, ctx.config.run.bootstrap_iters
        for task in self.tasks:
            calls = ctx.lm.model_calls
            result = task_results.cached(ctx.store, ctx.key, task.key, seed, iters) or task_results.stored(
                ctx.store, ctx.key, run_task(ctx.lm, task, seed, iters), seed, iters
            )
            out.model_calls[task.name] = ctx.lm.model_calls - calls
            out.tasks[task.name] = result
        return out
