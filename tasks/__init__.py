"""What is measured: the built-in lm-eval tasks over local JSONL, code tasks, prompt sets and preset suites.

builtin_tasks()            # {"tiny_mc": Path(".../academic/tiny_mc.yaml"), ...}
task_config("tiny_mc")     # the task's lm-eval config dict, with its data files made absolute
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from evalsuite.errors import UserError
from evalsuite.yaml_files import TagTolerantLoader, load_task_yaml, load_yaml

HERE = Path(__file__).resolve().parent
ACADEMIC_DIR = HERE / "academic"


def builtin_tasks(include: tuple[str, ...] = ()) -> dict[str, Path]:
    """Task name -> YAML file, for the built-in tasks and those in the `include` folders or files."""
    files = sorted(ACADEMIC_DIR.glob("*.yaml"))
    for item in include:
        path = Path(item)
        files += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    tasks = {}
    for path in files:
        name = _task_name(path, path.read_text())
        if name is not None:
            tasks[name] = path
    return tasks


@lru_cache(maxsize=256)
def _task_name(path: Path, text: str) -> str | None:
    """The task a YAML file defines, None if none: parsed once per content (a run asks for the list often)."""
    data, _ = load_yaml(path, TaskFileError, TagTolerantLoader, text=text)
    name = data.get("task") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


class TaskFileError(UserError, ValueError):
    pass


def _absolute_data_files(config: dict, base: Path) -> dict:
    files = config.get("dataset_kwargs", {}).get("data_files")
    if isinstance(files, dict):
        files = {split: str((base / f).resolve()) for split, f in files.items()}
        config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": files}
    return config


def task_config(name: str, include: tuple[str, ...] = ()) -> dict:
    """A local task's config, as lm-eval's loader reads it (includes resolved), with absolute data paths."""
    path = builtin_tasks(include)[name]
    return _absolute_data_files(load_task_yaml(path, TaskFileError), path.parent)
