"""The one reader of the JSONL files a user gives (task data, prompt sets, code problems, text and calibration
sets): each row is a JSON object; a bad line is an error naming file:line.

    for number, row in read_jsonl(path, PromptSetError):
        ...
"""

from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: str | Path, error: type[Exception]) -> list[tuple[int, dict]]:
    """(line number, row) for every non-blank line; `error` names path:line for a line that is not a JSON
    object."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise error(f"{path}:{number}: each line must be a JSON object, not {type(row).__name__}")
        rows.append((number, row))
    return rows
