"""Reading the YAML files a user writes (suite, gate, task files): a repeated key is an error naming both
lines, never "the last one wins"; every key path maps to its line, so that validation errors read
file:line: field.path: message.

    data, lines = load_yaml(path, ConfigError)       # lines[("run", "batch_size")] == 12
    data, lines = load_yaml(path, ConfigError, TagTolerantLoader)   # lm-eval task files (!function tags)
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

MERGE_KEY = "<<"


class TagTolerantLoader(yaml.SafeLoader):
    """Reads lm-eval task YAML, whose `!function` tags plain safe_load rejects (they load as None)."""


TagTolerantLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


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


def load_yaml(path: str | Path, error: type[Exception], loader: type = yaml.SafeLoader) -> tuple[object, dict]:
    """The document in `path` and its line map; invalid YAML and repeated keys raise `error` naming
    path:line."""
    text = Path(path).read_text()
    try:
        node = yaml.compose(text, Loader=loader)
        data = yaml.load(text, Loader=loader)  # noqa: S506 - loader is SafeLoader or a subclass of it
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise error(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
    repeated = duplicate_keys(node)
    if repeated:
        raise error(
            "\n  ".join(
                [f"{path}: a key is given twice (YAML would silently keep the last):"]
                + [f"{path}:{again}: {dotted(key)} repeats line {first}; keep one" for key, first, again in repeated]
            )
        )
    return data, line_map(node) if node is not None else {}


def _field_path(loc: tuple, lines: dict[tuple, int]) -> tuple[tuple, str]:
    """Drop pydantic's union/type markers from an error location and render it like variants[1].scheme."""
    path: tuple = ()
    for part in loc:
        if path + (part,) in lines or isinstance(part, int):
            path += (part,)
        elif isinstance(part, str) and not part[:1].isupper() and part not in ("str", "dict[str,any]", "int"):
            path += (part,)
    return path, dotted(path)


def format_errors(err: ValidationError, source: str, lines: dict[tuple, int], what: str = "suite file") -> str:
    """Pydantic's errors as one line each: file:line: field.path: message."""
    problems, seen = [], set()
    for e in err.errors():
        path, text = _field_path(tuple(e["loc"]), lines)
        line = next((lines[path[:i]] for i in range(len(path), -1, -1) if path[:i] in lines), None)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown field {path[-1]!r}; remove it or check its spelling"
        where = f"{source}:{line}" if line else source
        problem = f"{where}: {text}: {msg}"
        if problem not in seen:
            seen.add(problem)
            problems.append(problem)
    return f"invalid {what}:\n  " + "\n  ".join(problems)
