"""Which task names exist, decided without building lm-eval's task index (which parses every one of its ~14,000
task files, includes merged, and takes seconds to minutes): a line-by-line read of the top-level `task:`,
`group:`, `tag:`, `class:` and `include:` keys of lm-eval's task YAML, registered as lm-eval's index registers
them, and cached on disk per lm-eval version and folder modification times.

    names = lm_eval_names()                      # TaskNames: every lm-eval task, group and tag name
    task_problems(["arc_easyy"], include=())     # [(("tasks", 0), "unknown task 'arc_easyy'. Did you mean ...")]

A file the line reader cannot decide on (a name written as an anchor, a tag, a multi-line scalar, ...) is
listed in `TaskNames.unsure`; a name found nowhere is then checked against lm-eval's full index, with a log
line saying so.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from evalsuite.hashing import digest
from evalsuite.tasks import builtin_tasks

log = logging.getLogger("evalsuite")

READER_VERSION = 1  # bump when the reader's rules change: it invalidates every cached index
IGNORED_DIRS = {"__pycache__", ".ipynb_checkpoints"}  # as lm-eval's TaskIndex skips them
TOP_KEY = re.compile(r"""^(["']?)(task|group|tag|class|include)\1[ \t]*:(?:[ \t](.*))?$""")
NOT_PLAIN = re.compile(
    r"""^(?:[-?:,\[\]{}#&*!|>'"%@`].*|.*(?::\s|\s#|:$).*|null|Null|NULL|~|true|True|TRUE|false|False|FALSE"""
    r"""|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|[-+]?(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][-+]?\d+)?|\.inf|\.nan"""
    r"""|\d{4}-\d\d?-\d\d?.*|[-+]?\d[\d_]*(?::[0-5]?\d)+(?:\.\d*)?)$"""
)
UNSURE = object()  # a value the line reader cannot read with certainty


@dataclass(frozen=True)
class TaskNames:
    names: frozenset[str]  # tasks, groups and tags, as lm-eval's TaskIndex registers them
    unsure: tuple[str, ...] = ()  # files whose names the line reader could not decide on


def _scalar(text: str):
    """A one-line YAML scalar as a string, or UNSURE where YAML would read something else (a number, null, an
    anchor, an escape sequence, ...)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        inner = text[1:-1]
        return UNSURE if "\\" in inner or '"' in inner else inner
    if len(text) >= 2 and text[0] == text[-1] == "'":
        inner = text[1:-1]
        return UNSURE if "'" in inner.replace("''", "") else inner.replace("''", "'")
    return UNSURE if not text or NOT_PLAIN.match(text) else text


def _without_comment(text: str) -> str:
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _value(rest: str, following: list[str]):
    """A top-level key's value: a string, a list of strings (a flow or block list) or UNSURE; list items that
    are not one-line scalars (a group's task entries written as mappings) are UNSURE."""
    rest = _without_comment(rest).strip()
    if rest.startswith("["):
        if not rest.endswith("]") or "[" in rest[1:-1] or "{" in rest:
            return UNSURE
        return [_scalar(item) for item in rest[1:-1].split(",") if item.strip()]
    if rest:
        return _scalar(rest)
    items = []
    for line in following:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] not in " \t-":
            break
        if stripped.startswith("- ") or stripped == "-":
            items.append(_scalar(_without_comment(stripped[2:])))
        elif items:
            items[-1] = UNSURE  # the item goes on: a mapping or a multi-line scalar
    return items


def read_keys(path: Path) -> dict:
    """The top-level task, group, tag, class and include keys of a YAML file, read line by line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    keys = {}
    for number, line in enumerate(lines):
        if line[:1] in ("", " ", "\t", "#", "-"):
            continue
        match = TOP_KEY.match(line)
        if match:
            keys[match.group(2)] = _value(match.group(3) or "", lines[number + 1 :])
    return keys


class _Skipped(Exception):
    """lm-eval would skip the file: an include that does not exist or includes itself."""


def _merged(path: str, read: dict, including: tuple[str, ...] = ()) -> dict:
    """A file's keys over those of the files it includes, in order, as lm-eval's loader merges them."""
    if path not in read:
        if path in including or not os.path.isfile(path):
            raise _Skipped
        read[path] = read_keys(Path(path))
    elif path in including:
        raise _Skipped
    own = read[path]
    includes = own.get("include")
    merged: dict = {}
    for include in includes if isinstance(includes, list) else [] if includes is None else [includes]:
        if include is UNSURE:
            return {"include": UNSURE}
        target = os.path.normpath(os.path.join(os.path.dirname(path), include))
        merged.update(_merged(target, read, (*including, path)))
    merged.update({k: v for k, v in own.items() if k != "include"})
    return merged


def _registered(keys: dict) -> list | None:
    """The names lm-eval's TaskIndex registers for a file with these keys (a task and its tags, or a group),
    or None where a value it reads is UNSURE."""
    if keys.get("include") is UNSURE:
        return None
    if "class" in keys or ("group" not in keys and "task" in keys):
        task, tags = keys.get("task"), keys.get("tag")
        tags = [] if tags is None else tags if isinstance(tags, list) else [tags]
        if task is UNSURE or (isinstance(task, str) and UNSURE in tags):
            return None
        return [task, *tags] if isinstance(task, str) else []  # a task list without a group: not registered
    group = keys.get("group")
    return None if group is UNSURE else [group] if isinstance(group, str) else []


def yaml_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("**/*.yaml") if not IGNORED_DIRS.intersection(p.parts))


def read_names(root: Path) -> TaskNames:
    """Every task, group and tag name the task YAML under `root` defines, read line by line."""
    names: set[str] = set()
    unsure, read = [], {}
    for path in yaml_files(root):
        try:
            registered = _registered(_merged(os.path.normpath(path), read))
        except (_Skipped, OSError):
            continue
        if registered is None:
            unsure.append(str(path))
        else:
            names.update(registered)
    return TaskNames(frozenset(names), tuple(unsure))


def _folder_times(root: Path) -> dict[str, int]:
    """The modification time of every folder under `root`: it changes when a file is added, removed or renamed."""
    times, stack = {}, [str(root)]
    while stack:
        folder = stack.pop()
        times[folder] = os.stat(folder).st_mtime_ns
        with os.scandir(folder) as entries:
            stack += [e.path for e in entries if e.is_dir(follow_symlinks=False) and e.name not in IGNORED_DIRS]
    return times


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evalsuite"


def cached_names(root: Path, version: str) -> TaskNames:
    """`read_names(root)`, kept on disk under a key of the reader's version, `version`, the folder and the
    modification times of its folders (one file per folder: a changed folder's older index is removed)."""
    prefix = f"task-names-{digest(str(root))}-"
    path = cache_dir() / f"{prefix}{digest(READER_VERSION, version, _folder_times(root))}.json"
    try:
        data = json.loads(path.read_text())
        return TaskNames(frozenset(data["names"]), tuple(data["unsure"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log.debug("reading the task names of %s line by line (cached in %s)", root, path)
    names = read_names(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"names": sorted(names.names), "unsure": list(names.unsure)}))
        os.replace(partial, path)  # atomic: the ranks of one run may write it at once
        for older in path.parent.glob(f"{prefix}*.json"):
            if older != path:
                older.unlink(missing_ok=True)
    except OSError as err:
        log.debug("task names not cached in %s: %s", path, err)
    return names


def lm_eval_tasks_dir() -> Path:
    spec = importlib.util.find_spec("lm_eval")  # finds the package without importing it (torch, datasets, ...)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("lm-eval is not installed: pip install lm-eval")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


@lru_cache(maxsize=1)
def lm_eval_names() -> TaskNames:
    """Every lm-eval task, group and tag name (cached on disk; see `cached_names`)."""
    return cached_names(lm_eval_tasks_dir(), importlib.metadata.version("lm_eval"))


@lru_cache(maxsize=2)
def task_manager(include_defaults: bool):
    """lm-eval's TaskManager: its index of every task file, built once per process (slow)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=include_defaults)


def _unknown_message(name: str, known, builtin: dict) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    if close:
        return f"unknown task {name!r}. Did you mean {close[0]!r}?"
    return (
        f"unknown task {name!r}: neither built in ({', '.join(builtin)}) nor an lm-eval task, group or tag; "
        "`evalsuite list tasks --all` lists them all"
    )


def task_problems(names: list[str], include: list[str] | tuple[str, ...] = ()) -> list[tuple[tuple, str]]:
    """(field path, message) for each include folder that does not exist and each task name that is neither
    built in (nor in an include folder) nor an lm-eval task, group or tag. Raises TaskFileError for an include
    folder's task file that does not read."""
    problems = [(("include", i), f"{p} does not exist") for i, p in enumerate(include) if not Path(p).exists()]
    if problems:
        return problems
    builtin = builtin_tasks(tuple(include))
    unknown = [(i, n) for i, n in enumerate(names) if n not in builtin]
    if not unknown:
        return []
    lm_eval = lm_eval_names()
    unknown = [(i, n) for i, n in unknown if n not in lm_eval.names]
    known = lm_eval.names
    if unknown and lm_eval.unsure:
        log.info(
            "task names: %d lm-eval task files do not read line by line (%s, ...); building lm-eval's full task "
            "index to decide on %s",
            len(lm_eval.unsure),
            lm_eval.unsure[0],
            ", ".join(repr(n) for _, n in unknown),
        )
        known = set(task_manager(True).all_tasks)
        unknown = [(i, n) for i, n in unknown if n not in known]
    return [(("tasks", i), _unknown_message(n, known | set(builtin), builtin)) for i, n in unknown]
