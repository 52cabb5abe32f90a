"""`cbdsl search` end to end: real sandboxes, the real loop and the `command` backend with a real metric.

The backend is a small train/eval stand-in that scores a selection by the
share of its rows that carry no defect, read from the demo pool's
ground-truth asset (`demo-defects`), so better policies really score higher.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.dsl.format import canonical_hash
from cbdsl.dsl.parser import parse
from cbdsl.pipelines.data.demo import make_demo

METRIC = """\
import json, sys, polars as pl
selection, workdir, defects = sys.argv[1:4]
ids = pl.read_parquet(selection).get_column("id")
labels = pl.read_parquet(defects).filter(pl.col("id").is_in(ids.implode()))
flags = [c for c, t in labels.schema.items() if t == pl.Boolean]
clean = labels.filter(~pl.any_horizontal(flags)).height / len(ids)
json.dump({"benchmarks": {"clean_share": clean}}, open(workdir + "/metrics.json", "w"))
"""


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pools")
    make_demo(root / "demo", rows=1000, seed=0)
    return root


def make_sandbox(root: Path, pools: Path, *options: str) -> Path:
    result = CliRunner().invoke(cli, ["init", str(root), "--backend", "command", "--budget", "300", *options])
    assert result.exit_code == 0, result.output
    (root / "metric.py").write_text(METRIC)
    defects = pools / "demo" / "assets" / "demo-defects.parquet"
    cmd = f"{sys.executable} {root / 'metric.py'} {{export}} {{workdir}} {defects}"
    cfg = (root / "cbdsl.toml").read_text().partition("[backend.command]")[0]
    (root / "cbdsl.toml").write_text(cfg + f"[backend.command]\ncommand = {json.dumps(cmd)}\ntimeout = 60\n")
    return root


def search(root: Path, *args: str, code: int = 0) -> dict | str:
    result = CliRunner().invoke(cli, ["search", "--max-cost", "metadata", *args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return json.loads(result.stdout) if "--json" in args and code == 0 else result.output


def ledger(root: Path) -> list[dict]:
    db = sqlite3.connect(root / ".cbdsl" / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM iterations ORDER BY n")]
    db.close()
    return rows


def clean_share(root: Path, pools: Path, n: int) -> float:
    """The metric recomputed from the exported selection of iteration n, independently of the backend."""
    ids = pl.read_parquet(root / ".cbdsl" / "runs" / f"{n:04d}" / "export" / "selection.parquet").get_column("id")
    labels = pl.read_parquet(pools / "demo" / "assets" / "demo-defects.parquet").filter(pl.col("id").is_in(ids.implode()))
    flags = [c for c, t in labels.schema.items() if t == pl.Boolean]
    return labels.filter(~pl.any_horizontal(flags)).height / len(ids)


def test_mutate_search_climbs_through_the_real_loop(pools, tmp_path, monkeypatch):
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    root = make_sandbox(tmp_path / "a", pools, "--iterations", "4")
    monkeypatch.chdir(root)
    out = search(root, "--iterations", "6", "--seed", "1", "--json")
    rows = ledger(root)
    assert [r["n"] for r in rows] == [0, 1, 2, 3, 4] and {r["status"] for r in rows} == {"scored"}
    assert len(out["steps"]) == 4, "the sandbox's limit of 4 iterations holds"
    for row, step in zip(rows[1:], out["steps"]):
        assert row["message"] == f"search mutate seed 1: {step['kind']}: {step['description']}"
        assert row["aggregate"] == pytest.approx(clean_share(root, pools, row["n"]))
        assert "budget 300" in row["policy_text"] and 'pool "demo"' in row["policy_text"]
        policy_file = root / ".cbdsl" / "search" / f"mutate-seed1-step{row['n']:03d}.cur"
        assert canonical_hash(parse(policy_file.read_text())) == row["policy_hash"], "submitted as compiled"
    sets = {frozenset(pl.read_parquet(r["manifest"]).get_column("id").to_list()) for r in rows}
    assert len(sets) == len(rows), "no set of rows is trained twice (a new order of the same rows is no new data)"
    best = max(rows, key=lambda r: (r["aggregate"], -r["n"]))
    assert (out["best"], out["best_iteration"]) == (best["aggregate"], best["n"])
    assert out["baseline"] == rows[0]["aggregate"]
    # Hill climbing: every step changes the best policy scored before it, as its kind says.
    for i, row in enumerate(rows[1:], 1):
        parent = max(rows[:i], key=lambda r: (r["aggregate"], -r["n"]))
        before, after = (set(r["policy_text"].splitlines()[1:]) for r in (parent, row))
        removed, added = before - after, after - before
        kind = out["steps"][i - 1]["kind"]
        if kind == "literal":
            assert len(removed) == len(added) == 1
        elif kind == "add-filter":
            assert not removed and [a.split()[0] for a in added] == ["filter"]
        elif kind == "drop-filter":
            assert not added and "filter" in {r.split()[0] for r in removed}
        else:
            assert removed or added
    text = search(root, "--iterations", "1", code=1)
    assert "no iterations left" in text and "cbdsl init" in text


def test_search_is_deterministic_for_a_seed(pools, tmp_path, monkeypatch):
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    runs = []
    for name in ("x", "y"):
        root = make_sandbox(tmp_path / name, pools, "--iterations", "3")
        monkeypatch.chdir(root)
        search(root, "--iterations", "3", "--strategy", "random", "--seed", "7")
        runs.append([(r["policy_hash"], r["selection_hash"], r["aggregate"], r["message"]) for r in ledger(root)])
    assert runs[0] == runs[1]
    assert all(m.startswith("search random seed 7: ") for *_, m in runs[0][1:])
    assert len({h for h, *_ in runs[0]}) == 4


def test_cite_scaffold_gets_citations_and_nothing_is_refused(pools, tmp_path, monkeypatch):
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    root = make_sandbox(tmp_path / "c", pools, "--iterations", "2", "--scaffold", "cite")
    monkeypatch.chdir(root)
    out = search(root, "--iterations", "2", "--strategy", "random", "--json")
    rows = ledger(root)[1:]
    assert [r["status"] for r in rows] == ["scored", "scored"] and len(out["steps"]) == 2
    for r in rows:
        assert r["policy_text"].splitlines()[1].startswith("cite ")


def test_adapt_scaffold_accepts_what_the_search_submits(pools, tmp_path, monkeypatch):
    """Under `adapt` proposals cite, instantiate and adapt a method, and literal-only moves are redrawn."""
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    root = make_sandbox(tmp_path / "d", pools, "--iterations", "3", "--scaffold", "adapt")
    monkeypatch.chdir(root)
    out = search(root, "--iterations", "3", "--seed", "2", "--json")
    rows = ledger(root)[1:]
    assert [r["status"] for r in rows] == ["scored"] * 3
    assert "literal" not in {s["kind"] for s in out["steps"]}, "a numbers-only move is refused by adapt (S105)"
    for r in rows:
        lines = r["policy_text"].splitlines()
        cited = lines[1].removeprefix("cite ").split(", ")
        assert {line.split()[1] for line in lines if line.startswith("adapt ")} == set(cited)
        assert all("cbdsl search (mutate, seed 2) wrote: " in line for line in lines if line.startswith("adapt "))


def test_bad_options_are_usage_errors(pools, tmp_path, monkeypatch):
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.chdir(tmp_path)
    out = search(tmp_path, "--iterations", "1", code=2)
    assert "cbdsl init" in out, "outside a sandbox the error says how to make one"
    root = make_sandbox(tmp_path / "s", pools)
    monkeypatch.chdir(root)
    assert "'annealing' is not one of" in search(root, "--strategy", "annealing", code=2)
    assert "--iterations" in search(root, "--iterations", "0", code=2)
