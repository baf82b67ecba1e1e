"""Standard lm-eval tasks (arc_challenge, mmlu, gsm8k, ...) over a local copy of their data, for machines
without hub access.

    configs = local_configs("mmlu", "/data/mmlu")      # one lm-eval config dict per leaf task

Layout of `data_dir`: one file per split the task uses, named after the split (test.jsonl, validation.csv,
train.parquet, ...), in the original dataset's schema; when the task names a dataset config
(`dataset_name`, e.g. ARC-Challenge or an MMLU subject), the files go in a folder of that name. A group
(mmlu, leaderboard_bbh, ...) expands to its tasks, each found the same way.
"""

from __future__ import annotations

from pathlib import Path

from evalsuite.errors import UserError
from evalsuite.yaml_files import load_task_yaml

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SPLITS = ("test_split", "validation_split", "fewshot_split", "training_split")


class LocalDataError(UserError, ValueError):
    pass


def leaf_tasks(name: str, manager) -> list[str]:
    """The tasks a name stands for in an lm-eval `TaskManager`: itself, a group's members (recursively) or a
    tag's tasks."""
    index = manager.task_index
    entry = index.get(name)
    if entry is None or name in manager.all_tags:
        tagged = sorted(n for n in manager.all_subtasks if name in index[n].tags)
        if tagged or entry is not None:
            return tagged
        raise LocalDataError(f"{name!r} is not an lm-eval task, group or tag")
    if name not in manager.all_groups:
        return [name]
    leaves = []
    for member in entry.cfg.get("task", []):  # the group file as the index read it (includes merged)
        member_name = member if isinstance(member, str) else member.get("task") or member.get("group")
        leaves += leaf_tasks(member_name, manager)
    return leaves


def _split_file(folder: Path, split: str) -> Path | None:
    found = [folder / f"{split}{ext}" for ext in FORMATS if (folder / f"{split}{ext}").is_file()]
    return found[0] if found else None


def local_config(name: str, data_dir: Path, index: dict) -> dict:
    config = load_task_yaml(index[name].yaml_path, LocalDataError, repeated_keys=True)  # lm-eval's own file
    dataset_name = config.get("dataset_name")
    folder = data_dir / dataset_name if dataset_name and (data_dir / dataset_name).is_dir() else data_dir
    files, missing = {}, []
    for key in SPLITS:
        split = config.get(key)
        if not split:
            continue
        path = _split_file(folder, split)
        if path is None:
            missing.append(f"{split} ({key})")
        else:
            files[split] = str(path)
    eval_split = config.get("test_split") or config.get("validation_split")
    if eval_split not in files:
        raise LocalDataError(
            f"task {name}: no {eval_split}.jsonl/.csv/.parquet in {folder}; the task reads splits "
            f"{', '.join(config.get(k) for k in SPLITS if config.get(k))}"
        )
    formats = {FORMATS[Path(p).suffix] for p in files.values()}
    if len(formats) > 1:
        raise LocalDataError(f"task {name}: mixed file formats in {folder}; use one of jsonl, csv, parquet")
    for key in SPLITS:  # a split without a file is dropped; few-shot then needs one of the others
        if config.get(key) and config[key] not in files:
            config[key] = None
    config.pop("dataset_name", None)
    config["dataset_path"] = formats.pop()
    config["dataset_kwargs"] = {**config.get("dataset_kwargs", {}), "data_files": files}
    config.setdefault("metadata", {})["data_dir"] = str(folder)
    return config


def local_configs(name: str, data_dir: str | Path) -> list[dict]:
    from evalsuite.suites.academic import task_manager

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise LocalDataError(f"data_dir {data_dir} for task {name} is not a directory")
    manager = task_manager(True)
    return [local_config(leaf, data_dir, manager.task_index) for leaf in leaf_tasks(name, manager)]


HUB_PROBE = ("huggingface.co", 443)


def hub_datasets(name: str) -> list[str]:
    """The Hugging Face hub datasets an lm-eval task (or group) reads when no data_dir is given."""
    from evalsuite.suites.academic import task_manager

    manager = task_manager(True)
    found = []
    for leaf in leaf_tasks(name, manager):
        path = manager.task_index[leaf].cfg.get("dataset_path")  # the task file as the index read it
        if isinstance(path, str) and not Path(path).exists() and path not in found and path not in FORMATS.values():
            found.append(path)
    return found


def cached(dataset: str) -> bool:
    """Whether the hub dataset is in the local Hugging Face cache (the hub's or the datasets library's)."""
    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{dataset.replace('/', '--')}"
    datasets_cache = Path(constants.HF_HOME) / "datasets" / dataset.replace("/", "___")
    return hub.is_dir() or datasets_cache.is_dir()


def hub_reachable(timeout_s: float = 3.0) -> bool:
    import os
    import socket

    if any(os.environ.get(v) in ("1", "true", "True") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    try:
        socket.create_connection(HUB_PROBE, timeout=timeout_s).close()
    except OSError:
        return False
    return True


def check_hub_access(name: str) -> None:
    """Refuse, before any model loads, an lm-eval task whose data is neither cached nor downloadable."""
    missing = [d for d in hub_datasets(name) if not cached(d)]
    if missing and not hub_reachable():
        raise LocalDataError(
            f"task {name!r} reads {', '.join(missing)} from the Hugging Face hub, which is not reachable from here "
            "(or HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set), and they are not in the local cache: give the task a "
            "data_dir with local files (README, 'Leaderboard suites, with and without hub access')"
        )
