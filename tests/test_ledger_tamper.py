"""Issue 13, part 2: a ledger that is tamper-evident against the sandbox's own user.

Each test plays an agent that wants to win and can write anything inside its
sandbox folder: it deletes, cuts, overwrites, swaps, rewinds or edits the
ledger (and rehashes the chain when that hides the edit), or edits
cbdsl.toml's benchmark settings. The witness outside the sandbox
(``$CBDSL_WITNESS_DIR``, a tmp folder per test) must catch each one:
`cbdsl verify` fails, `cbdsl submit` and `cbdsl search` refuse, and the
reading commands print what they can but warn on stderr and exit 1; a
damaged file is a clear message with the restore command, never an internal
error. Crashes around the witness's two writes (pending, promotion) are real
SIGKILLs of a real `cbdsl submit`. Real SQLite, real files, the real CLI and
the `command` backend with a tiny real train/eval script.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.data.demo import make_demo

TRAIN = """\
import json, sys, polars as pl
sel = pl.read_parquet(sys.argv[1])
share = sel.filter(pl.col("id").str.ends_with("7")).height / max(sel.height, 1)
json.dump({"benchmarks": {"rows": sel.height / 1000, "share7": share}}, open(sys.argv[2] + "/metrics.json", "w"))
"""

#: The columns format 1 hashed: what an older cbdsl wrote, and what an agent rehashes with to downgrade.
FORMAT1_FIELDS = ("n", "status", "message", "policy_text", "policy_hash", "pool_hash", "selection_hash", "selected",
                  "audit", "backend", "suite", "metrics", "aggregate", "error", "started_at", "finished_at",
                  "prev_hash")
ALL_FIELDS = ("n", "status", "message", "policy_text", "policy_ast", "policy_hash", "pool_hash", "selection_hash",
              "manifest", "selected", "audit", "backend", "suite", "metrics", "aggregate", "error", "pid",
              "started_at", "finished_at", "timings", "prev_hash")


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pools")
    make_demo(root / "demo", rows=1000, seed=0)
    return root


@pytest.fixture(autouse=True)
def private_homes(pools, tmp_path, monkeypatch):
    """A witness folder and a CBDSL_HOME of this test's own."""
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    monkeypatch.setenv("CBDSL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CBDSL_WITNESS_DIR", str(tmp_path / "witness"))


def make_sandbox(root: Path, seed: int = 1) -> Path:
    """A sandbox (command backend, budget 200, 3 iterations) with its first submit done: baseline + iteration 1."""
    result = CliRunner().invoke(cli, ["init", str(root), "--backend", "command", "--budget", "200",
                                      "--iterations", "3"])
    assert result.exit_code == 0, result.output
    (root / "train.py").write_text(TRAIN)
    head = (root / "cbdsl.toml").read_text().partition("[backend.command]")[0]
    cmd = f"{sys.executable} {root / 'train.py'} {{export}} {{workdir}}"  # edited before the first submit: allowed
    (root / "cbdsl.toml").write_text(head + f"[backend.command]\ncommand = {json.dumps(cmd)}\ntimeout = 60\n")
    submit(root, seed)
    return root


def submit(root: Path, seed: int, code: int = 0) -> str:
    cwd = Path.cwd()
    os.chdir(root)
    try:
        (root / "policy.cur").write_text(f'policy "p"\npool "demo"\nbudget 200\nselect random(seed={seed})\n')
        cbdsl("compile", "policy.cur")
        return cbdsl("submit", "-m", f"seed {seed}", code=code)
    finally:
        os.chdir(cwd)


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    root = make_sandbox(tmp_path / "sb")
    monkeypatch.chdir(root)
    return root


def cbdsl(*args: str, code: int = 0):
    """The CLI in process: the exit code, and never an exception escaping a command (an internal error)."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    return result


def ledger_path(root: Path) -> Path:
    return root / ".cbdsl" / "ledger.sqlite"


def sql(root: Path, *statements: tuple) -> None:
    db = sqlite3.connect(ledger_path(root))
    for statement in statements:
        db.execute(*statement)
    db.commit()
    db.close()


def rows(path: Path) -> list[dict]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    out = [dict(r) for r in db.execute("SELECT * FROM iterations ORDER BY n")]
    db.close()
    return out


def rehash(root: Path, fields: tuple[str, ...] | None = None) -> None:
    """What an agent does to hide an edit: recompute every entry hash and the head over ``fields`` (default:
    those of the ledger's format)."""
    db = sqlite3.connect(ledger_path(root))
    db.row_factory = sqlite3.Row
    if fields is None:
        fmt = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        fields = ALL_FIELDS if fmt and fmt[0] == "2" else FORMAT1_FIELDS
    previous = "0" * 64
    for row in db.execute("SELECT * FROM iterations ORDER BY finished_at, n").fetchall():
        payload = {k: row[k] for k in fields} | {"prev_hash": previous}
        for key in ("audit", "metrics", "timings"):
            if isinstance(payload.get(key), str):
                payload[key] = json.loads(payload[key])
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        db.execute("UPDATE iterations SET prev_hash = ?, entry_hash = ? WHERE n = ?", (previous, digest, row["n"]))
        previous = digest
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)", (previous,))
    db.commit()
    db.close()


def witness_files(tmp_path: Path) -> tuple[dict, Path]:
    (record,) = (tmp_path / "witness").glob("*.json")
    (backup,) = (tmp_path / "witness").glob("*.ledger.sqlite")
    return json.loads(record.read_text()), backup


def refused_everywhere(root: Path, *needles: str) -> None:
    """verify fails; submit and search refuse; log, leaderboard, show, trajectory warn on stderr; all exit 1."""
    out = cbdsl("verify", code=1).stderr
    for needle in (str(ledger_path(root)), *needles):
        assert needle in out, out
    assert "not submitted" in cbdsl("submit", code=1).stderr
    assert "search not run" in cbdsl("search", "--iterations", "1", "--max-cost", "metadata", code=1).stderr
    for command in (("log",), ("leaderboard",), ("show", "1"), ("trajectory",)):
        assert str(ledger_path(root)) in cbdsl(*command, code=1).stderr


def damaged(root: Path) -> None:
    """A damaged file: every loop command exits 1 with the file, what is wrong and the restore command."""
    for command in (("verify",), ("log",), ("leaderboard",), ("show", "1"), ("submit",), ("trajectory",),
                    ("search", "--iterations", "1", "--max-cost", "metadata")):
        err = cbdsl(*command, code=1).stderr
        assert str(ledger_path(root)) in err and "damaged" in err and "cp " in err, (command, err)


# --- the file erased, cut or overwritten --------------------------------------------------------


def test_a_deleted_ledger_is_caught(sandbox):
    ledger_path(sandbox).unlink()
    refused_everywhere(sandbox, "is missing", "records 2 finished entries", "cp ")
    assert not ledger_path(sandbox).exists()  # no command made a fresh, empty one in its place


def test_a_ledger_truncated_to_zero_bytes_is_caught(sandbox):
    ledger_path(sandbox).write_bytes(b"")
    refused_everywhere(sandbox, "has 0 finished entries", "records 2", "cp ")


def test_a_ledger_with_its_last_4_kb_cut_is_damaged(sandbox):
    data = ledger_path(sandbox).read_bytes()
    ledger_path(sandbox).write_bytes(data[:-4096])
    damaged(sandbox)


def test_a_ledger_cut_to_half_its_length_is_damaged(sandbox):
    data = ledger_path(sandbox).read_bytes()
    ledger_path(sandbox).write_bytes(data[: len(data) // 2])
    damaged(sandbox)


def test_a_ledger_of_random_bytes_is_damaged_and_no_internal_error(sandbox):
    ledger_path(sandbox).write_bytes(os.urandom(len(ledger_path(sandbox).read_bytes())))
    damaged(sandbox)
    for command in ("verify", "log", "leaderboard", "submit"):  # through the console entry point, E900 included
        done = subprocess.run([sys.executable, "-m", "cbdsl", command], cwd=sandbox, capture_output=True, text=True)
        assert done.returncode == 1, done.stderr
        assert "E900" not in done.stderr and "Traceback" not in done.stderr and "cp " in done.stderr


def test_another_sandboxs_ledger_in_its_place_is_caught(sandbox, tmp_path):
    other = make_sandbox(tmp_path / "other", seed=5)
    shutil.copy(ledger_path(other), ledger_path(sandbox))  # a chain intact in itself: only the witness knows
    refused_everywhere(sandbox, "replaced")


# --- history rewritten ---------------------------------------------------------------------------


def test_deleting_the_last_entry_and_rewinding_the_head_is_caught(sandbox):
    submit(sandbox, seed=2)
    last = rows(ledger_path(sandbox))[-1]
    sql(sandbox, ("DELETE FROM iterations WHERE n = ?", (last["n"],)),
        ("UPDATE meta SET value = ? WHERE key = 'head'", (last["prev_hash"],)))
    refused_everywhere(sandbox, "has 2 finished entries", "records 3", "rewound")


@pytest.mark.parametrize("column, value", [("manifest", "/elsewhere/selection.parquet"),
                                           ("timings", '{"run_s": 0.0}'), ("policy_ast", "{}"), ("pid", 1)])
def test_an_edit_of_a_column_format_1_left_out_of_the_hash_is_caught(sandbox, column, value):
    sql(sandbox, (f"UPDATE iterations SET {column} = ? WHERE n = 1", (value,)))
    out = cbdsl("verify", code=1).stderr
    assert "iteration 1: its content does not match its hash" in out


def test_an_edited_score_makes_the_leaderboard_warn(sandbox):
    before = json.loads(cbdsl("leaderboard", "--json").stdout)
    sql(sandbox, ("UPDATE iterations SET aggregate = 0.99 WHERE n = 1", ()))
    result = cbdsl("leaderboard", "--json", code=1)
    board = json.loads(result.stdout)  # stdout keeps its shape: the edited board, as the ledger has it
    assert [set(r) for r in board] == [set(r) for r in before] and board[0]["aggregate"] == 0.99
    assert "does not verify" in result.stderr and "iteration 1: its content does not match its hash" in result.stderr
    assert "does not verify" in cbdsl("leaderboard", code=1).stderr


def test_an_edited_score_with_the_whole_chain_rehashed_is_caught(sandbox):
    sql(sandbox, ("UPDATE iterations SET aggregate = 0.99 WHERE n = 1", ()))
    rehash(sandbox)
    refused_everywhere(sandbox, "ending at", "edited and rehashed")


def test_a_scored_row_slipped_in_without_a_hash_is_caught(sandbox):
    row = rows(ledger_path(sandbox))[1]
    row.update(n=2, aggregate=0.99, prev_hash=None, entry_hash=None)
    sql(sandbox, (f"INSERT INTO iterations ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                  tuple(row.values())))
    refused_everywhere(sandbox, "iteration 2 is scored but has no place in the hash chain")


def test_a_downgrade_to_format_1_is_caught(sandbox):
    sql(sandbox, ("UPDATE iterations SET manifest = '/elsewhere' WHERE n = 1", ()),
        ("DELETE FROM meta WHERE key = 'format'", ()))
    rehash(sandbox, FORMAT1_FIELDS)  # a consistent format-1 chain, hiding the manifest edit from format 1
    refused_everywhere(sandbox, "format 1", "recorded format 2")


def test_editing_the_iterations_after_the_first_submit_is_caught(sandbox):
    toml = sandbox / "cbdsl.toml"
    toml.write_text(toml.read_text().replace("iterations = 3", "iterations = 10"))
    out = cbdsl("verify", code=1).stderr
    assert str(toml) in out and "sandbox.iterations = 3 at the first submit, now 10" in out
    assert "sandbox.iterations" in cbdsl("submit", code=1).stderr
    toml.write_text(toml.read_text().replace("iterations = 10", "iterations = 3"))
    assert "hash chain verified" in cbdsl("verify").stdout


# --- crashes around the witness's writes, and restoring -----------------------------------------

CRASH = """\
import os, signal, sys
from cbdsl.pipelines.loop.witness import Witness
from cbdsl.cli import main

stage = sys.argv[1]
real = Witness.expect if stage == "pending" else Witness.promote

def crash(self, *args, **kwargs):
    if stage == "pending":
        real(self, *args, **kwargs)  # the pending head is on disk; the SQLite commit is next
    os.kill(os.getpid(), signal.SIGKILL)  # "committed": the commit is done, the promotion is next

setattr(Witness, "expect" if stage == "pending" else "promote", crash)
sys.argv = ["cbdsl", "submit", "-m", "killed"]
main()
"""


def submit_killed(root: Path, stage: str) -> None:
    (root / "policy.cur").write_text('policy "p"\npool "demo"\nbudget 200\nselect random(seed=2)\n')
    cbdsl("compile", "policy.cur")
    done = subprocess.run([sys.executable, "-c", CRASH, stage], cwd=root, capture_output=True, text=True)
    assert done.returncode == -9, done.stdout + done.stderr


def test_a_crash_between_the_pending_witness_and_the_commit_verifies(sandbox, tmp_path):
    submit_killed(sandbox, "pending")
    record, _ = witness_files(tmp_path)
    assert record["entries"] == 2 and record["pending"]["entries"] == 3  # never committed
    assert [r["status"] for r in rows(ledger_path(sandbox))] == ["scored", "scored", "running"]
    assert "hash chain verified" in cbdsl("verify").stdout
    submit(sandbox, seed=3)
    assert [r["status"] for r in rows(ledger_path(sandbox))] == ["scored", "scored", "failed", "scored"]
    assert "hash chain verified" in cbdsl("verify").stdout
    record, _ = witness_files(tmp_path)
    assert record["entries"] == 4 and record["pending"] is None


def test_a_crash_between_the_commit_and_the_promotion_verifies(sandbox, tmp_path):
    submit_killed(sandbox, "committed")
    record, backup = witness_files(tmp_path)
    assert record["entries"] == 2 and record["pending"]["entries"] == 3
    assert [r["status"] for r in rows(ledger_path(sandbox))] == ["scored", "scored", "scored"]
    assert "hash chain verified" in cbdsl("verify").stdout  # and promotes the pending head
    record, backup = witness_files(tmp_path)
    assert record["entries"] == 3 and record["pending"] is None
    assert record["head"] == rows(ledger_path(sandbox))[-1]["entry_hash"] == rows(backup)[-1]["entry_hash"]
    submit(sandbox, seed=3)
    assert "hash chain verified" in cbdsl("verify").stdout


def test_the_restore_command_restores(sandbox):
    submit(sandbox, seed=2)
    good = rows(ledger_path(sandbox))
    ledger_path(sandbox).write_bytes(os.urandom(8192))
    err = cbdsl("verify", code=1).stderr
    command = next(line.strip() for line in err.splitlines() if line.strip().startswith("rm -f "))
    subprocess.run(command, shell=True, check=True)
    assert "ledger intact: 3 entries, hash chain verified" in cbdsl("verify").stdout
    assert rows(ledger_path(sandbox)) == good
    submit(sandbox, seed=3)  # the sandbox goes on from the restored ledger
    assert "hash chain verified" in cbdsl("verify").stdout


# --- sandboxes from before the witness, and starting over ----------------------------------------


def test_a_sandbox_without_a_witness_is_trusted_on_first_use(sandbox, tmp_path):
    """A format-1 ledger (no `format` in meta, the old field set) and no witness: what an older cbdsl left."""
    sql(sandbox, ("DELETE FROM meta WHERE key = 'format'", ()))
    rehash(sandbox, FORMAT1_FIELDS)
    shutil.rmtree(tmp_path / "witness", ignore_errors=True)
    out = cbdsl("verify").stdout
    assert "hash chain verified" in out and "format 1" in out and "no witness yet" in out
    assert "policy_ast, manifest, pid, timings are outside its hash" in out
    assert "trusting it as it is now (2 finished entries)" in submit(sandbox, seed=2).output
    record, backup = witness_files(tmp_path)
    assert record["format"] == 1 and record["entries"] == 3 and rows(backup)[-1]["n"] == 2
    assert "matching its witness" in cbdsl("verify").stdout
    ledger_path(sandbox).unlink()
    assert "is missing" in cbdsl("verify", code=1).stderr


def test_init_where_a_benchmarked_sandbox_was_refuses(sandbox, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(sandbox)
    out = cbdsl("init", str(sandbox), "--backend", "command", code=2).output
    assert "witness" in out and str(tmp_path / "witness") in out and "--restart" in out


def test_init_restart_retires_the_earlier_witness(sandbox, tmp_path, monkeypatch):
    """The main job reruns in the same folder: --restart starts over and keeps the old record aside."""
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(sandbox)
    before = sorted(p.name for p in (tmp_path / "witness").iterdir() if not p.name.endswith(".lock"))
    out = cbdsl("init", str(sandbox), "--backend", "command", "--restart").output
    assert "retired the earlier run's record" in out and "sandbox ready" in out
    after = sorted(p.name for p in (tmp_path / "witness").iterdir() if not p.name.endswith(".lock"))
    assert len(after) == len(before) == 2 and all(".retired-" in name for name in after)
    monkeypatch.chdir(sandbox)
    assert "0 entries" in cbdsl("verify").stdout
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(sandbox)
    assert "sandbox ready" in cbdsl("init", str(sandbox), "--backend", "command", "--restart").output  # nothing to retire


def test_the_witness_folder_defaults_to_cbdsl_home(tmp_path, monkeypatch):
    from cbdsl.pipelines.loop.witness import Witness

    monkeypatch.delenv("CBDSL_WITNESS_DIR")
    assert Witness(tmp_path / "sb").path.parent == tmp_path / "home" / "witness"
    monkeypatch.setenv("CBDSL_WITNESS_DIR", str(tmp_path / "elsewhere"))
    assert Witness(tmp_path / "sb").path.parent == tmp_path / "elsewhere"


def test_a_witness_folder_inside_the_sandbox_is_refused(sandbox, monkeypatch):
    monkeypatch.setenv("CBDSL_WITNESS_DIR", str(sandbox / ".cbdsl" / "witness"))
    assert "inside the sandbox" in cbdsl("verify", code=1).stderr
    assert "inside the sandbox" in cbdsl("submit", code=1).stderr
