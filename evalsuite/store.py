"""The run's store: one SQLite file per run directory (WAL mode), content-addressed and resumable.

Tables:
- responses: one model response per request key (hash of the model key, the request kind and its exact
  arguments). A cached response is only ever served to the same key.
- samples: lm-eval's per-document records per (model key, task key): what the reports, flips and
  bootstrap intervals are computed from.
- models: what each model key stands for (identity, scheme, algorithm, backend, dtype, ...).

Every write is one transaction committed at once, so a killed run loses at most the batch in flight and a
rerun resumes from what is there.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from evalsuite.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, model_key TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    model_key TEXT NOT NULL, task_key TEXT NOT NULL, records TEXT NOT NULL,
    PRIMARY KEY (model_key, task_key)
);
CREATE TABLE IF NOT EXISTS models (model_key TEXT PRIMARY KEY, description TEXT NOT NULL);
"""


OPEN_ATTEMPTS = 10


class StoreError(UserError, RuntimeError):
    pass


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        for attempt in range(OPEN_ATTEMPTS):  # several processes (torchrun ranks) may open it at once
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, timeout=60)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
                self.conn.commit()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == OPEN_ATTEMPTS - 1:
                    raise StoreError(f"cannot open the run store {self.path}: {err}") from None
                time.sleep(0.05 * 2**attempt)
            except (OSError, sqlite3.Error) as err:
                raise StoreError(f"cannot open the run store {self.path}: {err}") from None

    def close(self) -> None:
        self.conn.close()

    def get_responses(self, keys: list[str]) -> dict[str, object]:
        found: dict[str, object] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self.conn.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def put_responses(self, model_key: str, rows: list[tuple[str, str, object]]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO responses (key, model_key, kind, value) VALUES (?, ?, ?, ?)",
                [(key, model_key, kind, json.dumps(value)) for key, kind, value in rows],
            )

    def count_responses(self, model_key: str | None = None) -> int:
        if model_key is None:
            return self.conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM responses WHERE model_key = ?", (model_key,)).fetchone()[0]

    def put_samples(self, model_key: str, task_key: str, records: list[dict]) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO samples (model_key, task_key, records) VALUES (?, ?, ?)",
                (model_key, task_key, json.dumps(records, default=str)),
            )

    def get_samples(self, model_key: str, task_key: str) -> list[dict] | None:
        row = self.conn.execute(
            "SELECT records FROM samples WHERE model_key = ? AND task_key = ?", (model_key, task_key)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def put_model(self, model_key: str, description: dict) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO models (model_key, description) VALUES (?, ?)",
                (model_key, json.dumps(description, sort_keys=True)),
            )
