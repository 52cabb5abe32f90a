"""The ledger: every submission of a sandbox, in SQLite, as a hash chain.

One row per iteration (0 is the random baseline). A row is written when a
submission starts (``running``) and finished in one transaction as
``scored``, ``failed`` or ``refused``; nothing is ever half written. Each
finished row carries the hash of the previous finished row and its own hash
over every other column (ledger format 2), so an edited or deleted entry
breaks the chain (:meth:`Ledger.verify`).

A chain only proves itself: whoever can write the sandbox can erase the file,
rewind it or rehash every entry. So a ledger opened with a
:class:`~cbdsl.pipelines.loop.witness.Witness` also checks its head, its number of
finished entries, its format and the benchmark settings against that file,
kept outside the sandbox, and keeps it current around each commit.

A submission holds an exclusive lock file for its whole run, so a second
``cbdsl submit`` waits or refuses; a row left ``running`` by a killed
process (its lock is free again) is marked ``failed`` on the next start.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A :class:`cbdsl.pipelines.loop.witness.Witness`, which this module does not import: the witness is
#: built on the ledger's points and errors.
Witness = Any

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

#: Every column, in table order; rows are read by name, so a column added by hand is never read.
COLUMNS = ("n", "status", "message", "policy_text", "policy_ast", "policy_hash", "pool_hash", "selection_hash",
           "manifest", "selected", "audit", "backend", "suite", "metrics", "aggregate", "error", "pid",
           "started_at", "finished_at", "timings", "prev_hash", "entry_hash")
JSON_COLUMNS = ("audit", "metrics", "timings")

#: The ledger format written by this version (``meta.format``). Format 1 (no ``format`` in meta) hashed a
#: subset of the columns; its ledgers keep verifying with that subset.
FORMAT = 2
HASHED = {
    1: ("n", "status", "message", "policy_text", "policy_hash", "pool_hash", "selection_hash", "selected",
        "audit", "backend", "suite", "metrics", "aggregate", "error", "started_at", "finished_at", "prev_hash"),
    2: tuple(c for c in COLUMNS if c != "entry_hash"),
}
UNHASHED_IN_1 = tuple(c for c in HASHED[2] if c not in HASHED[1])

_NONE = type(None)
_TYPES: dict[str, tuple[type, ...]] = {
    "n": (int,), "status": (str,), "message": (str,), "policy_text": (str,), "policy_ast": (str,),
    "policy_hash": (str,), "pool_hash": (str,), "selection_hash": (str, _NONE), "manifest": (str, _NONE),
    "selected": (int, _NONE), "audit": (str, _NONE), "backend": (str,), "suite": (str,), "metrics": (str, _NONE),
    "aggregate": (float, int, _NONE), "error": (str, _NONE), "pid": (int, _NONE), "started_at": (float, int),
    "finished_at": (float, int, _NONE), "timings": (str, _NONE), "prev_hash": (str, _NONE),
    "entry_hash": (str, _NONE),
}
STATUSES = ("running", "scored", "failed", "refused")


class LedgerError(Exception):
    """The ledger cannot do what was asked (busy, unknown iteration, or :class:`LedgerBroken`)."""


class LedgerBroken(LedgerError):
    """The ledger file is damaged, or does not verify against its chain or its witness; the message says how
    to restore it. Every loop command exits 1 for it."""


@dataclass(frozen=True)
class Point:
    """A place in a ledger's history: the hash of its newest finished entry and how many finished entries it has."""

    head: str
    entries: int


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
    def from_row(cls, row: sqlite3.Row | dict) -> Entry:
        """The entry of a row; ValueError when a value has a type the schema does not allow (an edit by hand)."""
        data = {c: row[c] for c in COLUMNS}
        for column, kinds in _TYPES.items():
            if not isinstance(data[column], kinds):
                raise ValueError(f"iteration {data['n']}: column {column} holds {data[column]!r}, "
                                 "a value cbdsl never writes there")
        if data["status"] not in STATUSES:
            raise ValueError(f"iteration {data['n']}: status {data['status']!r} is none of {', '.join(STATUSES)}")
        for key in JSON_COLUMNS:
            data[key] = _json_object(data, key)
        return cls(**data)

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


def _json_object(data: dict[str, Any], key: str) -> dict | None:
    """A JSON column as cbdsl writes it: empty, or an object."""
    if not data[key]:
        return None
    try:
        value = json.loads(data[key])
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"iteration {data['n']}: column {key} is not the JSON object cbdsl writes")
    return value


def entry_hash(row: dict[str, Any], fmt: int = FORMAT) -> str:
    """sha256 over the hashed fields of a finished entry (those of ledger format ``fmt``), in a canonical JSON form."""
    payload = {k: row.get(k) for k in HASHED[fmt]}
    for key in JSON_COLUMNS:
        if isinstance(payload.get(key), str):
            payload[key] = json.loads(payload[key])
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """What :meth:`Ledger.verify` found. ``restore`` says how to restore the file when that is the fix."""

    path: Path
    rows: int
    point: Point
    problems: tuple[str, ...] = ()
    restore: str | None = None
    notes: tuple[str, ...] = ()
    witnessed: Path | None = None  # the witness file it was checked against (None: the sandbox has none yet)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        """The problems, one a line, then how to restore."""
        lines = [f"the ledger {self.path} does not verify:", *(f"  - {p}" for p in self.problems)]
        return "\n".join(lines + ([self.restore] if self.restore else []))


class Ledger:
    """The ledger of one sandbox (``.cbdsl/ledger.sqlite``), checked against ``witness`` when one is given."""

    def __init__(self, path: str | os.PathLike, witness: Witness | None = None):
        self.path = Path(path)
        self.witness = witness
        self.lock_path = self.path.with_suffix(".lock")
        self._started: dict[int, dict[str, Any]] = {}
        if witness is not None and not self.path.exists():
            witness.require_no_history(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self.broken(f"its folder cannot be made ({err.strerror})") from None
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as err:
            raise self.broken(f"it cannot be opened ({err})") from None
        try:
            with self._readable():
                self.db.row_factory = sqlite3.Row
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(SCHEMA)
                self._settle_format()
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    # -- errors: a damaged file is the user's to restore, never a traceback -------------------
    def broken(self, reason: str) -> LedgerBroken:
        return LedgerBroken(f"the ledger {self.path} is damaged: {reason}; the file was truncated, overwritten "
                            f"or edited outside cbdsl.\n{self.restore_hint()}")

    def restore_hint(self) -> str:
        return restore_hint(self.path, self.witness)

    @contextmanager
    def _readable(self) -> Iterator[None]:
        """SQLite's errors as ledger errors: busy is a wait, anything else a damaged file."""
        try:
            yield
        except sqlite3.OperationalError as err:
            if "locked" in str(err) or "busy" in str(err):
                raise LedgerError(f"the ledger {self.path} is locked by another process ({err}); try again") from None
            raise self.broken(f"SQLite cannot read it ({err})") from None
        except sqlite3.DatabaseError as err:
            raise self.broken(f"SQLite cannot read it ({err})") from None

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._readable():
            return self.db.execute(sql, params).fetchall()

    def _entry(self, row: sqlite3.Row) -> Entry:
        try:
            return Entry.from_row(row)
        except ValueError as err:
            raise self.broken(str(err)) from None

    # -- the format --------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def _settle_format(self) -> None:
        """A ledger with no finished entry yet is written in this version's format; one without ``format``
        whose entries are finished was written before format 2 (it stays format 1)."""
        if self._meta("format") is None and not self._query(
                "SELECT 1 FROM iterations WHERE entry_hash IS NOT NULL LIMIT 1"):
            self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?)", (str(FORMAT),))

    @property
    def format(self) -> int:
        value = self._meta("format")
        if value is None:
            return 1
        if value not in {str(f) for f in HASHED}:
            raise self.broken(f"its meta table says format {value!r}, which no cbdsl writes")
        return int(value)

    # -- transactions and the submit lock -------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._readable():
            self.db.execute("BEGIN IMMEDIATE")
        try:
            with self._readable():
                yield self.db
        except BaseException:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the error being raised says more than a failed rollback
            raise
        with self._readable():
            self.db.execute("COMMIT")

    @contextmanager
    def submit_lock(self, wait: bool = False, log: Callable[[str], None] = print) -> Iterator[None]:
        """Exclusive for one submission; refuses (or waits) while another holds it. Under the lock the
        ledger must verify before anything is written, so a submission never builds on a tampered one."""
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
            verdict = self.require_intact()
            if self.witness is not None:
                self.witness.adopt(verdict.point, self.format, self.db, log)
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
        return int(self._query("SELECT COALESCE(MAX(n), -1) + 1 FROM iterations")[0][0])

    def start(self, *, policy_text: str, policy_ast: str, policy_hash: str, pool_hash: str, backend: str,
              suite: str, message: str = "", n: int | None = None) -> int:
        """Insert a ``running`` entry; returns its iteration number. What it holds is also kept here, so
        :meth:`finish` records what was started even if the row is edited while the submission runs."""
        with self.transaction() as db:
            number = self.next_number() if n is None else n
            started = {"n": number, "status": "running", "message": message, "policy_text": policy_text,
                       "policy_ast": policy_ast, "policy_hash": policy_hash, "pool_hash": pool_hash,
                       "backend": backend, "suite": suite, "pid": os.getpid(), "started_at": time.time()}
            db.execute(f"INSERT INTO iterations ({', '.join(started)}) VALUES ({', '.join('?' * len(started))})",
                       tuple(started.values()))
        self._started[number] = started
        return number

    def finish(self, n: int, status: str, **fields: Any) -> Entry:
        """Finish entry ``n`` in one transaction: its fields, its place in the hash chain.

        The ledger must verify first (it may have been edited while the submission ran). The witness gets
        the new head as ``pending`` right before the commit and promotes it right after, so a crash at any
        point leaves the ledger at the witness's head or at its pending head.
        """
        if status not in STATUSES[1:]:
            raise ValueError(status)
        with self.transaction() as db:
            rows = self._query(f"SELECT {', '.join(COLUMNS)} FROM iterations WHERE n = ?", (n,))
            if not rows:
                raise LedgerError(f"no iteration {n}")
            if rows[0]["status"] != "running":
                raise LedgerError(f"iteration {n} is finished already ({rows[0]['status']})")
            verdict = self._verify(promote=False)
            if not verdict.ok:
                raise LedgerBroken(verdict.report())
            data = ({c: None for c in COLUMNS} | self._started[n]) if n in self._started else dict(rows[0])
            for key, value in fields.items():
                data[key] = json.dumps(value, sort_keys=True) if key in JSON_COLUMNS and value is not None else value
            data.update(status=status, finished_at=time.time(), prev_hash=verdict.point.head)
            fmt = self.format
            data["entry_hash"] = entry_hash(data, fmt)
            columns = [k for k in COLUMNS if k != "n"]
            db.execute(f"UPDATE iterations SET {', '.join(f'{c} = ?' for c in columns)} WHERE n = ?",
                       [data[c] for c in columns] + [n])
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)", (data["entry_hash"],))
            point = Point(data["entry_hash"], verdict.point.entries + 1)
            if self.witness is not None:
                self.witness.expect(point)  # the last step before the commit
        if self.witness is not None:
            self.witness.promote(point, self.db)
        self._started.pop(n, None)
        return self.get(n)

    # -- reading --------------------------------------------------------------------------
    def get(self, n: int) -> Entry:
        rows = self._query(f"SELECT {', '.join(COLUMNS)} FROM iterations WHERE n = ?", (n,))
        if not rows:
            known = [e.n for e in self.entries()]
            raise LedgerError(f"no iteration {n} in the ledger" + (f" (it has {known[0]}..{known[-1]})" if known else " (it is empty)"))
        return self._entry(rows[0])

    def entries(self) -> list[Entry]:
        return [self._entry(r) for r in self._query(f"SELECT {', '.join(COLUMNS)} FROM iterations ORDER BY n")]

    def running(self) -> Entry | None:
        return next((e for e in self.entries() if e.status == "running"), None)

    def scored(self, suite: str | None = None) -> list[Entry]:
        return [e for e in self.entries() if e.status == "scored" and (suite is None or e.suite == suite)]

    # -- verifying ------------------------------------------------------------------------
    def verify(self) -> Verdict:
        """The hash chain, then the witness: its head (or its pending head, which is then promoted), its
        number of finished entries, the format and the benchmark settings. A damaged file raises."""
        return self._verify(promote=True)

    def require_intact(self) -> Verdict:
        """:meth:`verify`, raising :class:`LedgerBroken` with the report when the ledger does not verify."""
        verdict = self.verify()
        if not verdict.ok:
            raise LedgerBroken(verdict.report())
        return verdict

    def _verify(self, promote: bool) -> Verdict:
        damage = [r[0] for r in self._query("PRAGMA quick_check")]
        if damage != ["ok"]:
            raise self.broken("SQLite finds it damaged (" + "; ".join(damage[:3]) + ")")
        fmt = self.format
        entries = self.entries()
        point, problems = _chain(entries, fmt, self._meta("head"))
        settings: list[str] = []
        notes = []
        if fmt == 1:
            notes.append(f"ledger format 1 (written before cbdsl hashed every column): {', '.join(UNHASHED_IN_1)} "
                         "are outside its hash, so edits to them are not detected; a new sandbox writes format 2")
        witnessed = None
        if self.witness is not None:
            moved, settings = self.witness.check(point, fmt, self.db, promote=promote and not problems)
            problems += moved
            witnessed = self.witness.path if self.witness.path.is_file() else None
            if witnessed is None:
                notes.append(f"no witness yet: the chain is checked against itself only (the next submit "
                             f"records one in {self.witness.path})")
        restore = self.restore_hint() if problems else None
        return Verdict(self.path, len(entries), point, tuple(problems + settings), restore, tuple(notes), witnessed)


def restore_hint(path: Path, witness: Witness | None) -> str:
    """How to put back the copy of the ledger at ``path`` that its witness keeps (or why there is none).
    The WAL files go too: SQLite would replay a stale one onto the copy."""
    backup = witness.backup_path if witness else None
    if backup is None or not backup.is_file():
        where = f" in {witness.folder}" if witness else ""
        return (f"no copy of it is kept{where} (the sandbox had no witness yet): restore {path} from a backup of "
                "your own, or start over in a new sandbox (`cbdsl init`)")
    p, b = shlex.quote(str(path)), shlex.quote(str(backup))
    return f"to restore the copy kept after its last finished entry, run:\n  rm -f {p}-wal {p}-shm && cp {b} {p}\nthen `cbdsl verify`"


def _chain(entries: list[Entry], fmt: int, head: str | None) -> tuple[Point, list[str]]:
    """Where the chain of finished entries ends, and what is wrong with it (empty when intact)."""
    problems: list[str] = []
    for e in entries:
        if (e.status == "running") != (e.entry_hash is None):
            problems.append(f"iteration {e.n} is {e.status} but {'has' if e.entry_hash else 'has no'} place in the "
                            "hash chain (it was inserted or edited outside cbdsl)")
    finished = sorted((e for e in entries if e.entry_hash is not None), key=lambda e: (e.finished_at or 0.0, e.n))
    previous = GENESIS
    for e in finished:
        if e.prev_hash != previous:
            problems.append(f"iteration {e.n}: its link to the previous entry is broken (an entry before it was "
                            "deleted or edited)")
        if entry_hash(e.row(), fmt) != e.entry_hash:
            problems.append(f"iteration {e.n}: its content does not match its hash (it was edited)")
        previous = e.entry_hash
    if (head or GENESIS) != previous:
        problems.append("the newest entries were deleted (the chain ends before the recorded head)")
    numbers = [e.n for e in entries]
    if numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        problems.append(f"iteration numbers have gaps: {numbers}")
    return Point(previous, len(finished)), problems
