"""Reading the YAML files a user writes (suite, gate, task files): a repeated key is an error naming both
lines, never "the last one wins"; every key path maps to its line, so that validation errors read
file:line: field.path: message.

    data, lines = load_yaml(path, ConfigError)       # lines[("run", "batch_size")] == 12
    data, lines = load_yaml(path, ConfigError, TagTolerantLoader)   # lm-eval task files (!function tags)
    config = load_task_yaml(path, TaskFileError)     # an lm-eval task file as lm-eval reads it
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

MERGE_KEY = "<<"


class TagTolerantLoader(yaml.SafeLoader):
    """Reads lm-eval task YAML, whose `!function` tags plain safe_load rejects (they load as None)."""


TagTolerantLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


class FunctionTagError(yaml.MarkedYAMLError):
    """A `!function module.fn` tag whose function cannot be found."""


def task_loader(base_dir: Path) -> type[yaml.SafeLoader]:
    """A loader for lm-eval task YAML in `base_dir` that resolves `!function module.fn` as lm-eval does: `fn` of
    `base_dir/module.py` (dots in `module` are folders) where that file exists, else of the importable `module`."""

    class TaskLoader(yaml.SafeLoader):
        pass

    def function(loader: yaml.SafeLoader, node: yaml.Node):
        spec = loader.construct_scalar(node)
        try:
            return _task_function(spec, base_dir)
        except (ImportError, AttributeError, ValueError) as err:
            raise FunctionTagError(problem=f"!function {spec}: {err}", problem_mark=node.start_mark) from None

    TaskLoader.add_constructor("!function", function)
    return TaskLoader


def _task_function(spec: str, base_dir: Path):
    module_name, _, name = spec.rpartition(".")
    if not module_name:
        raise ValueError("name the function with its module: !function module.function")
    path = (base_dir / f"{module_name.replace('.', '/')}.py").resolve()
    module = _module_from_file(path) if path.exists() else importlib.import_module(module_name)
    if not hasattr(module, name):
        raise AttributeError(f"{getattr(module, '__file__', None) or module_name} defines no {name}")
    return getattr(module, name)


def _module_from_file(path: Path):
    """The module in `path`, loaded again only when the file changed, under the name lm-eval gives it (so a
    task's functions are the same objects whichever of the two loaded them first)."""
    text, tasks_dir = str(path), "/lm_eval/tasks/"
    if tasks_dir in text:
        name = "lm_eval.tasks." + text.split(tasks_dir, 1)[1].removesuffix(".py").replace("/", ".")
    else:
        name = str(path.with_suffix(""))
    mtime = path.stat().st_mtime_ns
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__mtime__", None) == mtime:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__mtime__ = mtime
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path in a composed YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[path + (key.value,)] = key.start_mark.line + 1
            line_map(value, path + (key.value,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            line_map(item, path + (i,), out)
    return out


def duplicate_keys(node: yaml.Node | None, path: tuple = ()) -> list[tuple[tuple, int, int]]:
    """(key path, first line, repeated line) for every key that a mapping holds twice, at any depth."""
    found: list[tuple[tuple, int, int]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name != MERGE_KEY:
                if name in first:
                    found.append((path + (name,), first[name], key.start_mark.line + 1))
                else:
                    first[name] = key.start_mark.line + 1
            found += duplicate_keys(value, path + (name,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += duplicate_keys(item, path + (i,))
    return found


def dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (("." if text else "") + str(part))
    return text or "(top level)"


def load_yaml(
    path: str | Path,
    error: type[Exception],
    loader: type = yaml.SafeLoader,
    repeated_keys: bool = False,
    text: str | None = None,
) -> tuple[object, dict]:
    """The document in `path` (or `text`, already read from it) and its line map; invalid YAML and (unless
    `repeated_keys`, where the last one wins) repeated keys raise `error` naming path:line."""
    text = Path(path).read_text() if text is None else text
    try:
        node = yaml.compose(text, Loader=loader)
        data = yaml.load(text, Loader=loader)  # noqa: S506 - loader is SafeLoader or a subclass of it
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        what = "" if isinstance(err, FunctionTagError) else "not valid YAML: "
        raise error(f"{where}: {what}{getattr(err, 'problem', None) or err}") from None
    repeated = [] if repeated_keys else duplicate_keys(node)
    if repeated:
        raise error(
            "\n  ".join(
                [f"{path}: a key is given twice (YAML would silently keep the last):"]
                + [f"{path}:{again}: {dotted(key)} repeats line {first}; keep one" for key, first, again in repeated]
            )
        )
    return data, line_map(node) if node is not None else {}


def load_task_yaml(
    path: str | Path, error: type[Exception], repeated_keys: bool = False, _including: tuple[Path, ...] = ()
) -> dict:
    """An lm-eval task (or group) file as lm-eval's loader reads it: the files named by `include:` merged
    first, in order, then this file's own keys over them (an included file's `task_list` is not inherited);
    `!function` tags resolved (see `task_loader`). Invalid YAML, a missing function or include, an include
    cycle and (unless `repeated_keys`, for lm-eval's own files, some of which repeat a key and mean the last)
    repeated keys raise `error` naming the file (and line)."""
    path = Path(path).expanduser().resolve()
    if path in _including:
        raise error(f"{path}: includes itself through {' -> '.join(str(p) for p in _including)}")
    if not path.is_file():
        raise error(f"{_including[-1]}: include: no file {path}" if _including else f"{path}: no such file")
    data, _ = load_yaml(path, error, task_loader(path.parent), repeated_keys)
    if not isinstance(data, dict):
        raise error(f"{path}: an lm-eval task file is a mapping of keys, not {type(data).__name__}")
    if "include" not in data:
        return data
    includes = data.pop("include")
    merged: dict = {}
    for include in includes if isinstance(includes, list) else [includes]:
        included = load_task_yaml(path.parent / include, error, repeated_keys, (*_including, path))
        included.pop("task_list", None)
        merged.update(included)
    merged.update(data)
    return merged


def _field_path(loc: tuple, lines: dict[tuple, int]) -> tuple:
    """Drop pydantic's union/type markers from an error location (rendered as variants[1].scheme by `dotted`)."""
    path: tuple = ()
    for part in loc:
        if path + (part,) in lines or isinstance(part, int):
            path += (part,)
        elif isinstance(part, str) and not part[:1].isupper() and part not in ("str", "dict[str,any]", "int"):
            path += (part,)
    return path


def format_problems(problems: list[tuple[tuple, str]], source: str, lines: dict[tuple, int], what: str) -> str:
    """(field path, message) pairs as one line each, under a heading: file:line: field.path: message (the line
    of the field, else of the nearest enclosing one)."""
    out = []
    for path, msg in problems:
        line = next((lines[path[:i]] for i in range(len(path), -1, -1) if path[:i] in lines), None)
        problem = f"{f'{source}:{line}' if line else source}: {dotted(path)}: {msg}"
        if problem not in out:
            out.append(problem)
    return f"invalid {what}:\n  " + "\n  ".join(out)


def format_errors(err: ValidationError, source: str, lines: dict[tuple, int], what: str = "suite file") -> str:
    """Pydantic's errors as one line each: file:line: field.path: message."""
    problems = []
    for e in err.errors():
        path = _field_path(tuple(e["loc"]), lines)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown field {path[-1]!r}; remove it or check its spelling"
        problems.append((path, msg))
    return format_problems(problems, source, lines, what)
