"""Checks of an academic suite's tasks before any model loads: known names, installed packages, task YAML
fields, and local JSONL documents that have the fields the task's templates read."""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

from evalsuite.errors import UserError
from evalsuite.jsonl import read_jsonl
from evalsuite.task_names import task_problems
from evalsuite.yaml_files import TagTolerantLoader, dotted, load_yaml


class UnknownTaskError(UserError, ValueError):
    pass


class TaskDataError(UserError, ValueError):
    pass


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
    """Raise UnknownTaskError, with a close match, for a name that is neither built in nor an lm-eval task (a
    suite file's names are checked as it loads, with their lines: `config.parse_suite`)."""
    try:
        problems = task_problems(names, include)
    except ValueError as err:
        raise UnknownTaskError(str(err)) from None
    if problems:
        raise UnknownTaskError("\n  ".join(f"academic.{dotted(path)}: {message}" for path, message in problems))


@lru_cache(maxsize=1)
def task_fields() -> frozenset[str]:
    """The keys lm-eval reads from a task or group YAML file. TaskConfig comes from the module that defines it
    where this lm-eval has one (`lm_eval.config.task`, 0.4.10 on): `lm_eval.api.task` imports `datasets`, a
    second of a rerun that builds no task."""
    import dataclasses

    from lm_eval.api.group import GroupConfig

    try:
        from lm_eval.config.task import TaskConfig
    except ModuleNotFoundError:  # lm-eval 0.4.8 and 0.4.9 define it in lm_eval.api.task
        from lm_eval.api.task import TaskConfig

    fields = {f.name for f in dataclasses.fields(TaskConfig)} | {f.name for f in dataclasses.fields(GroupConfig)}
    return frozenset(fields | {"include", "class", "primary_metric"})  # primary_metric: ours (academic.py)


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
