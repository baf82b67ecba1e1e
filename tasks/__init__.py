"""What is measured: the built-in lm-eval tasks over local JSONL, code tasks, prompt sets and preset suites.

builtin_tasks()            # {"tiny_mc": Path(".../academic/tiny_mc.yaml"), ...}
task_config("tiny_mc")     # the task's lm-eval config dict, with its data files made absolute
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ACADEMIC_DIR = HERE / "academic"


def builtin_tasks() -> dict[str, Path]:
    tasks = {}
    for path in sorted(ACADEMIC_DIR.glob("*.yaml")):
        name = (yaml.safe_load(path.read_text()) or {}).get("task")
        if name:
            tasks[name] = path
    return tasks


def _absolute_data_files(config: dict, base: Path) -> dict:
    files = config.get("dataset_kwargs", {}).get("data_files")
    if isinstance(files, dict):
        files = {split: str((base / f).resolve()) for split, f in files.items()}
        config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": files}
    return config


def task_config(name: str) -> dict:
    """A built-in task's config, as lm-eval's loader reads it (includes resolved), with absolute data paths."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = builtin_tasks()[name]
    return _absolute_data_files(load_yaml(path), path.parent)
