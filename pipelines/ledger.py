"""The ledger: every submission of a sandbox, in SQLite, as a hash chain.

One row per iteration (0 is the random baseline). A row is written when a
submission starts (``running``) and finished in one transaction as
``scored``, ``failed`` or ``refused``; nothing is ever half written. Each
finished row carries the hash of the previous finished row and its own hash
over its content, so an edited or deleted entry breaks the chain
(:meth:`Ledger.verify`).

A submission holds an exclusive lock file for its whole run, so a second
``cbdsl submit`` waits or refuses; a row left ``running`` by a killed
process (its lock is free again) is marked ``failed`` on the next start.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS iterations (
    n              INTEGER PRIMARY KEY,
    status         TEXT NOT NULL CHECK (status IN ('running', 'scored', 'failed', 'refused')),
    message        TEXT NOT NULL DEFAULT '',
    policy_text    TEXT NOT NULL,
    policy_ast     TEXT NOT NULL,
    policy_hash    TEXT NOT NULL,
    pool_hash      TEXT NOT NULL DEFAULT '',
    selection_hash TEXT,
    manifest       TEXT,
    selected       INTEGER,
    audit          TEXT,
    backend        TEXT NOT NULL,
    suite          TEXT NOT NULL DEFAULT '',
    metrics        TEXT,
    aggregate      REAL,
    error          TEXT,
    pid            INTEGER,
    started_at     REAL NOT NULL,
    finished_at    REAL,
    timings        TEXT,
    prev_hash      TEXT,
    entry_hash     TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

GENESIS = "0" * 64

#: The message of a baseline entry: the random selection a suite's scores are compared with. It is
#: iteration 0 of a sandbox, or the next number when that run failed or the suite changed since.
BASELINE_MESSAGE = "baseline: random selection"
_HASHED = ("n", "status", "message", "policy_text", "policy_hash", "pool_hash", "selection_hash", "selected",
           "audit", "backend", "suite", "metrics", "aggregate", "error", "started_at", "finished_at", "prev_hash")


class LedgerError(Exception):
    """The ledger cannot do what was asked (busy, corrupt, unknown iteration)."""


@dataclass(frozen=True)
class Entry:
    n: int
    status: str
    message: str
    policy_text: str
    policy_ast: str
    policy_hash: str
    pool_hash: str
    selection_hash: str | None
    manifest: str | None
    selected: int | None
    audit: dict | None
    backend: str
    suite: str
    metrics: dict | None
    aggregate: float | None
    error: str | None
    pid: int | None
    started_at: float
    finished_at: float | None
    timings: dict | None
    prev_hash: str | None
    entry_hash: str | None

    @property
    def is_baseline(self) -> bool:
        return self.message == BASELINE_MESSAGE

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Entry:
        data = dict(row)
        for key in ("audit", "metrics", "timings"):
            data[key] = json.loads(data[key]) if data[key] else None
        return cls(**data)


def entry_hash(row: dict[str, Any]) -> str:
    """sha256 over the hashed fields of a finished entry, in a canonical JSON form."""
    payload = {k: row.get(k) for k in _HASHED}
    for key in ("audit", "metrics"):
        if isinstance(payload[key], str):
            payload[key] = json.loads(payload[key])
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Ledger:
    """The ledger of one sandbox (``.cbdsl/ledger.sqlite``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.path.with_suffix(".lock")
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- transactions and the submit lock -------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def submit_lock(self, wait: bool = False) -> Iterator[None]:
        """Exclusive for one submission; refuses (or waits) while another holds it."""
        handle = open(self.lock_path, "a+")
        try:
            flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
            try:
                fcntl.flock(handle, flags)
            except BlockingIOError:
                running = self.running()
                what = f"iteration {running.n}" if running else "another submission"
                raise LedgerError(f"{what} is being submitted right now; wait for it to finish "
                                  "(or run `cbdsl submit --wait`)") from None
            self.recover()
            yield
        finally:
            handle.close()  # releases the lock, also when the process is killed

    def recover(self) -> list[int]:
        """Mark ``failed`` every entry left ``running`` by a process that died (called under the lock)."""
        stale = [e.n for e in self.entries() if e.status == "running"]
        for n in stale:
            self.finish(n, "failed", error="the submission was interrupted (its process ended before it finished)")
        return stale

    # -- writing --------------------------------------------------------------------------
    def next_number(self) -> int:
        row = self.db.execute("SELECT COALESCE(MAX(n), -1) + 1 FROM iterations").fetchone()
        return int(row[0])

    def start(self, *, policy_text: str, policy_ast: str, policy_hash: str, pool_hash: str, backend: str,
              suite: str, message: str = "", n: int | None = None) -> int:
        """Insert a ``running`` entry; returns its iteration number."""
        with self.transaction() as db:
            number = self.next_number() if n is None else n
            db.execute(
                "INSERT INTO iterations (n, status, message, policy_text, policy_ast, policy_hash, pool_hash, "
                "backend, suite, pid, started_at) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (number, message, policy_text, policy_ast, policy_hash, pool_hash, backend, suite, os.getpid(),
                 time.time()),
            )
        return number

    def finish(self, n: int, status: str, **fields: Any) -> Entry:
        """Finish entry ``n`` in one transaction: its fields, its place in the hash chain."""
        if status not in ("scored", "failed", "refused"):
            raise ValueError(status)
        with self.transaction() as db:
            row = db.execute("SELECT * FROM iterations WHERE n = ?", (n,)).fetchone()
            if row is None:
                raise LedgerError(f"no iteration {n}")
            data = dict(row)
            for key, value in fields.items():
                data[key] = json.dumps(value, sort_keys=True) if key in ("audit", "metrics", "timings") and value is not None else value
            data["status"] = status
            data["finished_at"] = time.time()
            previous = db.execute(
                "SELECT entry_hash FROM iterations WHERE entry_hash IS NOT NULL ORDER BY finished_at DESC, n DESC LIMIT 1"
            ).fetchone()
            data["prev_hash"] = previous[0] if previous else GENESIS
            data["entry_hash"] = entry_hash(data)
            columns = [k for k in data if k != "n"]
            db.execute(f"UPDATE iterations SET {', '.join(f'{c} = ?' for c in columns)} WHERE n = ?",
                       [data[c] for c in columns] + [n])
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)", (data["entry_hash"],))
        return self.get(n)

    # -- reading --------------------------------------------------------------------------
    def get(self, n: int) -> Entry:
        row = self.db.execute("SELECT * FROM iterations WHERE n = ?", (n,)).fetchone()
        if row is None:
            known = [e.n for e in self.entries()]
            raise LedgerError(f"no iteration {n} in the ledger" + (f" (it has {known[0]}..{known[-1]})" if known else " (it is empty)"))
        return Entry.from_row(row)

    def entries(self) -> list[Entry]:
        return [Entry.from_row(r) for r in self.db.execute("SELECT * FROM iterations ORDER BY n")]

    def running(self) -> Entry | None:
        row = self.db.execute("SELECT * FROM iterations WHERE status = 'running' ORDER BY n LIMIT 1").fetchone()
        return Entry.from_row(row) if row else None

    def scored(self, suite: str | None = None) -> list[Entry]:
        return [e for e in self.entries() if e.status == "scored" and (suite is None or e.suite == suite)]

    def verify(self) -> list[str]:
        """Problems with the hash chain (empty when the history is intact)."""
        problems: list[str] = []
        finished = [e for e in self.entries() if e.entry_hash is not None]
        finished.sort(key=lambda e: (e.finished_at, e.n))
        previous = GENESIS
        for e in finished:
            row = {k: getattr(e, k) for k in _HASHED}
            if e.prev_hash != previous:
                problems.append(f"iteration {e.n}: its link to the previous entry is broken (an entry before it was "
                                "deleted or edited)")
            if entry_hash(row) != e.entry_hash:
                problems.append(f"iteration {e.n}: its content does not match its hash (it was edited)")
            previous = e.entry_hash
        head = self.db.execute("SELECT value FROM meta WHERE key = 'head'").fetchone()
        if finished and (head is None or head[0] != previous):
            problems.append("the newest entries were deleted (the chain ends before the recorded head)")
        numbers = [e.n for e in self.entries()]
        if numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
            problems.append(f"iteration numbers have gaps: {numbers}")
        return problems
