"""The run's store: one SQLite file per run directory (WAL mode), content-addressed and resumable.

Tables:
- responses: one model response per request key (hash of the model key, the request kind and its exact
  arguments). A cached response is only ever served to the same key.
- samples: lm-eval's per-document records per (model key, task key): what the reports, flips and
  bootstrap intervals are computed from.
- models: what each model key stands for (identity, scheme, algorithm, backend, dtype, ...).

Every write is one transaction committed at once, so a killed run loses at most the batch in flight and a
rerun resumes from what is there.

Every row (answers, task records and results, model records) carries a checksum of its contents. A row whose
checksum does not match (edited or damaged on disk) or that cannot be read is not served: it is recomputed,
logged, and counted in `Store.recomputed` (results.json reports the count). Rows from a store written before
checksums existed are recomputed the same way.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

from evalsuite.errors import UserError
from evalsuite.hashing import digest

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, model_key TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, checksum TEXT
);
CREATE TABLE IF NOT EXISTS samples (
    model_key TEXT NOT NULL, task_key TEXT NOT NULL, records TEXT NOT NULL, checksum TEXT,
    PRIMARY KEY (model_key, task_key)
);
CREATE TABLE IF NOT EXISTS models (model_key TEXT PRIMARY KEY, description TEXT NOT NULL, checksum TEXT);
"""


OPEN_ATTEMPTS = 10


class StoreError(UserError, RuntimeError):
    pass


def checksum(key: str, kind: str, value: str) -> str:
    return digest(key, kind, value)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.recomputed = {"checksum mismatch": 0, "unreadable": 0, "no checksum (older store)": 0}
        for attempt in range(OPEN_ATTEMPTS):  # several processes (torchrun ranks) may open it at once
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, timeout=60)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
                for table in ("responses", "samples", "models"):  # from before checksums: rows are recomputed
                    columns = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
                    if "checksum" not in columns:
                        self.conn.execute(f"ALTER TABLE {table} ADD COLUMN checksum TEXT")
                self.conn.commit()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == OPEN_ATTEMPTS - 1:
                    raise StoreError(f"cannot open the run store {self.path}: {err}") from None
                time.sleep(0.05 * 2**attempt)
            except (OSError, sqlite3.Error) as err:
                raise StoreError(
                    f"cannot open the run store {self.path}: {err}; move the file away (nothing is lost but "
                    "cached answers: the run recomputes them) or pick another run directory with --out"
                ) from None

    def close(self) -> None:
        self.conn.close()

    def get_responses(self, keys: list[str]) -> dict[str, object]:
        """The cached responses of `keys` whose checksums hold; the others are left to be recomputed."""
        found: dict[str, object] = {}
        bad = dict.fromkeys(self.recomputed, 0)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, kind, value, checksum FROM responses WHERE key IN ({marks})"
            try:
                rows = self.conn.execute(query, chunk).fetchall()
            except sqlite3.DatabaseError:
                rows = self._read_one_by_one(chunk, bad)
            for key, kind, value, stored in rows:
                if stored is None:
                    bad["no checksum (older store)"] += 1
                elif stored != checksum(key, kind, value):
                    bad["checksum mismatch"] += 1
                else:
                    found[key] = json.loads(value)
        if any(bad.values()):
            for reason, count in bad.items():
                self.recomputed[reason] += count
            log.warning(
                "run store %s: cached answers not served, recomputed: %s",
                self.path,
                ", ".join(f"{count} {reason}" for reason, count in bad.items() if count),
            )
        return found

    def _read_one_by_one(self, keys: list[str], bad: dict[str, int]) -> list[tuple]:
        rows = []
        for key in keys:
            try:
                row = self.conn.execute(
                    "SELECT key, kind, value, checksum FROM responses WHERE key = ?", (key,)
                ).fetchone()
            except sqlite3.DatabaseError:
                bad["unreadable"] += 1
                continue
            if row is not None:
                rows.append(row)
        return rows

    def put_responses(self, model_key: str, rows: list[tuple[str, str, object]]) -> None:
        encoded = [(key, kind, json.dumps(value)) for key, kind, value in rows]
        self._write(
            "INSERT OR REPLACE INTO responses (key, model_key, kind, value, checksum) VALUES (?, ?, ?, ?, ?)",
            [(key, model_key, kind, value, checksum(key, kind, value)) for key, kind, value in encoded],
        )

    def _write(self, sql: str, rows: list[tuple]) -> None:
        """One transaction; a damaged file is a StoreError that says what to do."""
        try:
            with self.conn:
                self.conn.executemany(sql, rows)
        except sqlite3.DatabaseError as err:
            raise StoreError(
                f"cannot write to the run store {self.path}: {err}; it is damaged: move it away and rerun (the "
                "answers it held are recomputed)"
            ) from None

    def count_responses(self, model_key: str | None = None, kinds: tuple[str, ...] | None = None) -> int:
        """Stored responses, of one model and of some request kinds when given."""
        where, params = [], []
        if model_key is not None:
            where.append("model_key = ?")
            params.append(model_key)
        if kinds is not None:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params.extend(kinds)
        sql = "SELECT COUNT(*) FROM responses" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self.conn.execute(sql, params).fetchone()[0]

    def put_samples(self, model_key: str, task_key: str, records: list[dict]) -> None:
        body = json.dumps(records, default=str)
        self._write(
            "INSERT OR REPLACE INTO samples (model_key, task_key, records, checksum) VALUES (?, ?, ?, ?)",
            [(model_key, task_key, body, checksum(model_key, task_key, body))],
        )

    def get_samples(self, model_key: str, task_key: str) -> list[dict] | None:
        """The stored records, or None when there are none or they fail their check (counted, recomputed)."""
        try:
            row = self.conn.execute(
                "SELECT records, checksum FROM samples WHERE model_key = ? AND task_key = ?", (model_key, task_key)
            ).fetchone()
        except sqlite3.DatabaseError:
            self.recomputed["unreadable"] += 1
            return None
        if row is None:
            return None
        if row[1] != checksum(model_key, task_key, row[0]):
            self.recomputed["checksum mismatch" if row[1] else "no checksum (older store)"] += 1
            log.warning("run store %s: stored records of %s failed their check; recomputed", self.path, task_key)
            return None
        return json.loads(row[0])

    def get_model(self, model_key: str) -> dict | None:
        """A model's stored record (None where there is none or it cannot be read: the model is built again)."""
        query = "SELECT description, checksum FROM models WHERE model_key = ?"
        try:
            row = self.conn.execute(query, (model_key,)).fetchone()
        except sqlite3.DatabaseError:
            self.recomputed["unreadable"] += 1
            return None
        if row is None:
            return None
        if row[1] != checksum(model_key, "model", row[0]):
            self.recomputed["checksum mismatch" if row[1] else "no checksum (older store)"] += 1
            return None
        return json.loads(row[0])

    def put_model(self, model_key: str, description: dict) -> None:
        body = json.dumps(description, sort_keys=True)
        self._write(
            "INSERT OR REPLACE INTO models (model_key, description, checksum) VALUES (?, ?, ?)",
            [(model_key, body, checksum(model_key, "model", body))],
        )
