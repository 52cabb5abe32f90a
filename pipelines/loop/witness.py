"""The witness: what a sandbox's ledger must be, kept where the sandbox's agent does not write.

The ledger's hash chain only proves itself: an agent that can write its
sandbox can erase the ledger (and start its iteration budget over), rewind it,
swap in another sandbox's ledger or rehash every entry. So each finished
entry also updates one JSON file per sandbox in a folder the researcher owns,
``$CBDSL_WITNESS_DIR`` (set by whoever runs the benchmark; never read from
cbdsl.toml, which the agent edits), default ``$CBDSL_HOME/witness``. It is
named by a hash of the sandbox's resolved path and records the chain's head,
the number of finished entries, the ledger format, and from the first submit
on the benchmark settings of cbdsl.toml with their digest. Beside it lies a
copy of the ledger as of its last finished entry (sqlite3's backup API),
which is how a damaged or tampered ledger is restored.

Crash safety: a finished entry's head is written as ``pending`` before the
SQLite commit and promoted after it (copy first, then head), so the ledger is
always at the witness's head or at its pending head; ``verify`` accepts both
(and completes the promotion) and nothing else. Every write is a temporary
file, fsync and ``os.replace``, under a lock file.

A sandbox made before witnesses existed gets one on its next submit from its
ledger as it is then (trust on first use), with a one-line notice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cbdsl.home import home
from cbdsl.pipelines.loop.ledger import LedgerBroken, LedgerError, Point, restore_hint

ENV = "CBDSL_WITNESS_DIR"


def witness_dir() -> Path:
    """``$CBDSL_WITNESS_DIR``, else ``$CBDSL_HOME/witness``."""
    value = os.environ.get(ENV)
    if value:
        return Path(value)

    return home() / "witness"


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Witness:
    """The witness file of the sandbox at ``sandbox`` and the copy of its ledger; ``settings`` are the
    sandbox's benchmark settings now (:func:`benchmark_settings`), checked against those of the first
    submit."""

    def __init__(self, sandbox: str | os.PathLike, settings: dict[str, Any] | None = None,
                 folder: str | os.PathLike | None = None):
        self.sandbox = Path(sandbox).resolve()
        self.settings = None if settings is None else json.loads(json.dumps(settings, default=str))
        self.folder = Path(folder) if folder else witness_dir()
        key = hashlib.sha256(str(self.sandbox).encode()).hexdigest()[:32]
        self.path = self.folder / f"{key}.json"
        self.backup_path = self.folder / f"{key}.ledger.sqlite"
        self.test_path = self.folder / f"{key}.test.jsonl"  # the test scores (:mod:`..test_scores`)
        self._lock_path = self.folder / f"{key}.lock"

    def test_scratch(self, n: int) -> Path:
        """Where a backend's program writes iteration ``n``'s test part before it is recorded (then removed)."""
        return self.folder / f"{self.path.stem}.test-{n:04d}.json"

    @classmethod
    def of(cls, cfg) -> Witness:
        """The witness of a sandbox config (``sandbox.Config``); refused inside the sandbox, where the agent
        writes."""
        witness = cls(cfg.root, benchmark_settings(cfg))
        if witness.folder.resolve().is_relative_to(witness.sandbox):
            raise LedgerError(f"the ledger's witness folder {witness.folder} is inside the sandbox {witness.sandbox}, "
                              f"where it proves nothing: set {ENV} (or CBDSL_HOME) to a folder outside it")
        return witness

    # -- the file ----------------------------------------------------------------------------
    def read(self) -> dict[str, Any] | None:
        """The witness's record, None when the sandbox has none yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise LedgerError(f"cannot read the ledger's witness {self.path} ({err.strerror})") from None
        try:
            data = json.loads(text)
            valid = (isinstance(data, dict) and isinstance(data.get("head"), str)
                     and isinstance(data.get("entries"), int) and isinstance(data.get("format"), int))
        except json.JSONDecodeError:
            valid = False
        if not valid:
            raise LedgerBroken(f"the ledger's witness {self.path} is not a witness file cbdsl wrote: restore it "
                               "from a backup, or delete it (the next submit then trusts the ledger as it is)")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        """Atomically: a temporary file in the same folder, fsync, ``os.replace``."""
        data = {**data, "sandbox": str(self.sandbox), "backup": str(self.backup_path), "updated_at": time.time()}
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=self.path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=2, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_dir(self.folder)
        except OSError as err:
            raise self._unwritable(err) from None

    def _unwritable(self, err: OSError) -> LedgerError:
        return LedgerError(f"cannot write the ledger's witness in {self.folder} ({err.strerror}): set {ENV} to a "
                           "folder you can write, outside the sandbox")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive read-modify-write of the witness (a submit and a `verify` may both promote)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = open(self._lock_path, "a+")
        except OSError as err:
            raise self._unwritable(err) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            handle.close()

    def retire(self) -> list[Path]:
        """Move the witness, its ledger copy and the test scores aside (``<key>.retired-<UTC time>.*``), kept, not deleted:
        starting a benchmarked sandbox's folder over on purpose leaves a trace of the run it replaces."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = []
        with self.locked():
            for path in (self.path, self.backup_path, self.test_path):
                if path.is_file():
                    stem, _, suffix = path.name.partition(".")
                    target = path.with_name(f"{stem}.retired-{stamp}.{suffix}")
                    try:
                        os.replace(path, target)
                    except OSError as err:
                        raise self._unwritable(err) from None
                    moved.append(target)
        return moved

    def backup(self, db: sqlite3.Connection) -> None:
        """Copy the ledger as committed now beside the witness (self-contained: rollback journal, not WAL)."""
        tmp = self.backup_path.with_name(f"{self.backup_path.name}.{os.getpid()}.tmp")
        try:
            tmp.unlink(missing_ok=True)
            copy = sqlite3.connect(tmp)
            try:
                db.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")
            finally:
                copy.close()
            os.replace(tmp, self.backup_path)
        except (OSError, sqlite3.Error) as err:
            raise LedgerError(f"cannot copy the ledger to {self.backup_path} ({err}); free space or permissions "
                              f"there, or set {ENV} to another folder") from None

    # -- the crash-safe protocol around a commit ---------------------------------------------
    def expect(self, point: Point) -> None:
        """Record ``point`` as pending: the ledger is about to commit it."""
        with self.locked():
            data = self.read()
            if data is None:
                raise LedgerError(f"the sandbox has no witness {self.path}: it was deleted during the submission")
            self._write({**data, "pending": {"head": point.head, "entries": point.entries}})

    def promote(self, point: Point, db: sqlite3.Connection) -> None:
        """The ledger committed ``point``: copy it, then make it the head (if it is still the pending one)."""
        with self.locked():
            data = self.read()
            if data is None or _point(data.get("pending")) != point:
                return  # promoted already (by a `verify` in between), or never ours
            self.backup(db)
            self._write({**data, "head": point.head, "entries": point.entries, "pending": None})

    def adopt(self, point: Point, fmt: int, db: sqlite3.Connection, log: Callable[[str], None]) -> None:
        """At a submit: a witness for a sandbox that has none (trust on first use: its ledger as it is now),
        and the benchmark settings, recorded from the first submit on."""
        with self.locked():
            data = self.read()
            if data is None:
                if point.entries:
                    log(f"notice: this sandbox's ledger had no witness yet; trusting it as it is now "
                        f"({point.entries} finished entries) and recording it in {self.path}")
                self.backup(db)
                data = {"format": fmt, "head": point.head, "entries": point.entries, "pending": None}
            elif data.get("settings_digest") or self.settings is None:
                return
            self._write({**data, "settings": self.settings, "settings_digest": settings_digest(self.settings)})

    def accept_settings(self) -> bool:
        """Record the sandbox's settings as they are now (the researcher changed them on purpose); False when
        there is nothing to accept (no witness yet, or no settings recorded: the next submit records them)."""
        if self.settings is None:
            return False
        with self.locked():
            data = self.read()
            if data is None or not data.get("settings_digest"):
                return False
            self._write({**data, "settings": self.settings, "settings_digest": settings_digest(self.settings)})
        return True

    # -- checks ------------------------------------------------------------------------------
    def require_no_history(self, ledger: Path) -> None:
        """A missing ledger is new only if the witness records no finished entry."""
        data = self.read()
        if data is not None and data["entries"] > 0:
            raise LedgerBroken(f"the ledger {ledger} is missing, but its witness {self.path} records "
                               f"{data['entries']} finished entries: it was deleted or moved.\n"
                               f"{restore_hint(ledger, self)}")

    def check(self, point: Point, fmt: int, db: sqlite3.Connection, *, promote: bool) -> tuple[list[str], list[str]]:
        """(what is wrong with the ledger at ``point``, what is wrong with the settings) against the witness.
        A ledger at the pending head is right: a submit crashed after its commit; it is promoted here."""
        data = self.read()
        if data is None:
            return [], []
        problems = []
        if data["format"] != fmt:
            problems.append(f"the ledger says it is format {fmt}, its witness {self.path} recorded format "
                            f"{data['format']}: meta.format was edited (format 1 leaves columns out of the hash)")
        recorded = _point(data)
        if point != recorded:
            if point != _point(data.get("pending")):
                problems.append(_moved(point, recorded, self.path))
            elif promote and not problems:
                self.promote(point, db)
        return problems, self._settings_problems(data)

    def _settings_problems(self, data: dict[str, Any]) -> list[str]:
        if self.settings is None or not data.get("settings_digest"):
            return []
        if settings_digest(self.settings) == data["settings_digest"]:
            return []
        recorded = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        changes = [f"{k} = {_show(recorded, k)} at the first submit, now {_show(self.settings, k)}"
                   for k in sorted(set(recorded) | set(self.settings)) if _show(recorded, k) != _show(self.settings, k)]
        return [f"{self.sandbox / 'cbdsl.toml'}: the benchmark settings changed since the first submit"
                + (f" ({'; '.join(changes)})" if changes else "")
                + ": set them back; if you run the benchmark and changed them on purpose, run "
                  "`cbdsl verify --accept-settings` where the agent cannot (results before and after the "
                  "change are not comparable)"]


def _point(data: Any) -> Point | None:
    if not isinstance(data, dict) or not isinstance(data.get("head"), str) or not isinstance(data.get("entries"), int):
        return None
    return Point(data["head"], data["entries"])


def _moved(point: Point, recorded: Point, path: Path) -> str:
    """What a ledger that is neither at the witness's head nor at its pending head has gone through."""
    if point.entries < recorded.entries:
        what = "entries were deleted, or the file was erased, truncated, rewound or replaced"
    elif point.entries == recorded.entries:
        what = "an entry was edited and rehashed, or the file was replaced by another ledger"
    else:
        what = "entries were added outside `cbdsl submit`, or the file was replaced by another ledger"
    return (f"the ledger has {point.entries} finished entries ending at {point.head[:12]}, its witness {path} "
            f"records {recorded.entries} ending at {recorded.head[:12]}: {what}")


def _show(settings: dict[str, Any], key: str) -> str:
    return json.dumps(settings[key]) if key in settings else "(not set)"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def benchmark_settings(cfg) -> dict[str, Any]:
    """What decides the benchmark, by cbdsl.toml key (``cfg``: a ``sandbox.Config``): pool, budget, backend and its settings, scaffold,
    iterations, audit. The witness records them at the first submit; a later change fails `cbdsl verify`."""
    out: dict[str, Any] = {f"sandbox.{k}": getattr(cfg, k) for k in ("pool", "budget", "backend", "scaffold",
                                                                       "iterations")}
    out |= {f"backend.{cfg.backend}.{k}": v for k, v in cfg.backend_settings.items()}
    out |= {f"audit.{k}": v for k, v in cfg.audit.items()}
    return out
