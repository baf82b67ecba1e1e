"""The academic suite: lm-eval tasks (built-in ones over local JSONL, or any lm-eval task name) run through
`lm_eval.simple_evaluate` with our `EvalLM`, offline, logging every sample.

    tasks = resolve_tasks(config.suites.academic)           # checked before any model loads
    result = run_task(lm, tasks[0], seed=1234)              # TaskResult: metrics and per-sample records
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from evalsuite import stats
from evalsuite.config import AcademicSuite
from evalsuite.errors import UserError
from evalsuite.jsonl import read_jsonl
from evalsuite.suites.local_data import check_hub_access, local_configs
from evalsuite.tasks import builtin_tasks, task_config
from evalsuite.yaml_files import TagTolerantLoader, load_yaml

# The metric that stands for a task in suite averages, where the task does not say (leaderboard practice).
PRIMARY_METRICS = {
    "arc_challenge": "acc_norm",
    "arc_easy": "acc_norm",
    "hellaswag": "acc_norm",
    "truthfulqa_mc2": "acc",
    "winogrande": "acc",
    "gsm8k": "exact_match (strict-match)",
    "tiny_mc": "acc_norm",
    "tiny_arith": "exact_match",
    "tiny_ppl": "word_perplexity",
}


class UnknownTaskError(UserError, ValueError):
    pass


class TaskDataError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class ResolvedTask:
    name: str
    config: dict | list[dict] | None  # local tasks: config dicts (one per leaf task); lm-eval names: None
    num_fewshot: int | None
    limit: int | None
    metric: str | None
    key: str  # hashes name, version, settings and the task's content


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


@lru_cache(maxsize=2)
def task_manager(include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=include_defaults)


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
    return f"{name}:{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


# lm-eval tasks whose code imports packages that lm-eval installs only with one of its extras.
TASK_PACKAGES = {
    "ifeval": ("langdetect", "immutabledict", "nltk", "pkg_resources"),
    "leaderboard_ifeval": ("langdetect", "immutabledict", "nltk", "pkg_resources"),
    "leaderboard_math_hard": ("sympy", "math_verify"),
    "minerva_math": ("sympy", "math_verify"),
}


def check_task_packages(names: list[str]) -> None:
    """Raise TaskDataError, before any model loads, for a task whose lm-eval code needs a package not installed."""
    import importlib.util

    for name in names:
        missing = [p for p in TASK_PACKAGES.get(name, ()) if importlib.util.find_spec(p) is None]
        if missing:
            raise TaskDataError(
                f"task {name!r} needs the Python packages {', '.join(missing)}, which are not installed: "
                "pip install 'evalsuite[leaderboard]' (lm-eval's ifeval and math extras, and setuptools)"
            )


def check_task_names(names: list[str], include: tuple[str, ...] = ()) -> None:
    """Raise UnknownTaskError, with a close match, for a name that is neither built in nor an lm-eval task."""
    missing = [p for p in include if not Path(p).exists()]
    if missing:
        raise UnknownTaskError(f"academic.include: {', '.join(missing)} does not exist")
    try:
        builtin = builtin_tasks(include)
    except ValueError as err:
        raise UnknownTaskError(str(err)) from None
    unknown = [n for n in names if n not in builtin]
    if not unknown:
        return
    known = set(task_manager(True).all_tasks) | set(builtin)
    for name in unknown:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownTaskError(
                f"unknown task {name!r}.{hint} Built-in tasks: {', '.join(builtin)}; "
                "`evalsuite list tasks` lists them all"
            )


@lru_cache(maxsize=1)
def task_fields() -> frozenset[str]:
    """The keys lm-eval reads from a task or group YAML file."""
    import dataclasses

    from lm_eval.api.group import GroupConfig
    from lm_eval.api.task import TaskConfig

    fields = {f.name for f in dataclasses.fields(TaskConfig)} | {f.name for f in dataclasses.fields(GroupConfig)}
    return frozenset(fields | {"include", "class"})


def check_task_file(path: Path, _seen: tuple[Path, ...] = ()) -> None:
    """A task YAML file (and the files it includes) has no repeated key and no key lm-eval does not read:
    lm-eval would drop a misspelt `doc_to_txt` and fail, or score wrongly, after the model loads."""
    data, lines = load_yaml(path, TaskDataError, TagTolerantLoader)
    if not isinstance(data, dict):
        raise TaskDataError(f"{path}: a task file is a mapping of lm-eval task fields (task, dataset_path, ...)")
    allowed = task_fields()
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TaskDataError(f"{path}:{lines.get((key,), '?')}: unknown task field {key!r}.{hint}")
    included = data.get("include")
    if isinstance(included, str):
        target = (path.parent / included).resolve()
        if target not in _seen and target.is_file():
            check_task_file(target, _seen + (path.resolve(),))


TEMPLATE_KEYS = ("doc_to_text", "doc_to_target", "doc_to_choice", "doc_to_decontamination_query")


def fields_read(config: dict) -> dict[str, str]:
    """The document fields a task's templates read: {field: the key that reads it}. A template is Jinja
    ({{question}}) or a bare field name (doc_to_target: gold); tasks that transform their documents first
    (process_docs) or use functions are not inspected."""
    import jinja2
    import jinja2.meta

    if config.get("process_docs"):
        return {}
    fields: dict[str, str] = {}
    env = jinja2.Environment()
    for key in TEMPLATE_KEYS:
        template = config.get(key)
        if not isinstance(template, str):
            continue
        if "{{" in template or "{%" in template:
            names = jinja2.meta.find_undeclared_variables(env.parse(template))
        else:
            names = {template} if template.isidentifier() else set()
        for name in names:
            fields.setdefault(name, key)
    return fields


def check_jsonl(path: str, config: dict | None = None) -> None:
    """Every line of a task's local JSONL parses, has the fields the task's templates read (a missing one
    would make lm-eval score that document 0 or fail after the model loaded), and there is at least one."""
    file = Path(path)
    if not file.is_file():
        raise TaskDataError(f"data file {file} does not exist")
    needed = fields_read(config or {})
    rows = 0
    for number, row in read_jsonl(file, TaskDataError):
        missing = sorted(name for name in needed if name not in row)
        if missing:
            raise TaskDataError(
                f"{file}:{number}: the document has no field {missing[0]!r}, which the task's "
                f"{needed[missing[0]]} reads" + (f" (nor {', '.join(missing[1:])})" if missing[1:] else "")
            )
        rows += 1
    if rows == 0:
        raise TaskDataError(f"{file}: the dataset is empty")


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
        resolved.append(ResolvedTask(spec.name, config, fewshot, limit, spec.metric, key))
    return resolved


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
        "prompt_hash": hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()[:16],
    }
    for metric in sample["metrics"]:
        record[label_of.get((metric, sample["filter"]), metric)] = sample[metric]
    return record


@contextmanager
def quiet_lm_eval():
    """lm-eval draws a progress bar per task while it builds requests and asks `git describe` in the current
    directory (printing 'fatal: not a git repository' outside one); our own bar and provenance replace both.
    Under torchrun it returns results on LOCAL_RANK 0 only, while our ranks share the work in EvalLM and
    each needs the results, so every rank is shown to lm-eval as a single process."""
    from functools import partial
    from unittest import mock

    from tqdm import tqdm

    from evalsuite.provenance import git_sha

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    with (
        mock.patch("lm_eval.api.task.tqdm", partial(tqdm, disable=True)),
        mock.patch("lm_eval.evaluator.get_git_commit_hash", git_sha),
        mock.patch.dict(os.environ, {"LOCAL_RANK": "0"}),  # under torchrun every rank needs the results back
    ):
        yield


def run_task(lm, task: ResolvedTask, seed: int, bootstrap_iters: int) -> TaskResult:
    from lm_eval import simple_evaluate

    lm.task_name = task.name
    with quiet_lm_eval():
        out = simple_evaluate(
            model=lm,
            tasks=task.config if isinstance(task.config, list) else [task.config or task.name],
            num_fewshot=task.num_fewshot,
            limit=task.limit,
            log_samples=True,
            bootstrap_iters=0,
            task_manager=task_manager(task.config is None),
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
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
    metrics = {}
    for metric, filt in pairs:
        label = label_of[(metric, filt)]
        per_sample = [r[label] for r in samples if r["filter"] == filt and label in r]
        values = stats.values_of(metric, per_sample)
        higher = next(
            out["higher_is_better"][leaf][metric] for leaf in leaves if metric in out["higher_is_better"][leaf]
        )
        if group:
            if values is None:
                continue  # pooling needs per-sample values we can aggregate; lm-eval's own group number stands
            value = float(values.aggregate())
        else:
            value = float(out["results"][task.name][f"{metric},{filt}"])
            if values is not None and abs(float(values.aggregate()) - value) > 1e-6 * max(1.0, abs(value)):
                values = None  # an aggregation other than the ones we can resample: no interval, not a wrong one
        err = stats.stderr(values, bootstrap_iters, seed) if values is not None else None
        metrics[label] = MetricResult(label, value, err, bool(higher), len(per_sample), values is not None)
    primary = task.metric or PRIMARY_METRICS.get(task.name) or next(iter(metrics))
    if primary not in metrics:
        raise UnknownTaskError(f"task {task.name!r} has no metric {primary!r}; it has: {', '.join(metrics)}")
    versions = out.get("versions", {})
    version = str(versions.get(task.name) or ",".join(sorted({str(versions.get(leaf, "")) for leaf in leaves})))
    details = {"subtasks": leaves} if group else {}
    return TaskResult(task.name, task.key, version, metrics, primary, samples, details)
