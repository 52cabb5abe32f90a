"""``cbdsl experiment run`` and ``report``: a real grid (the scripted agent and cbdsl search, two scaffolds,
two seeds) on the ``command`` backend's stand-in train/eval; a kill mid-grid and a resume; the report's
numbers checked against the ledgers they come from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.harness.experiment import GridError, load_grid
from cbdsl.harness.report import experiment_report
from cbdsl.pipelines.data.demo import make_demo
from cbdsl.pipelines.loop import test_scores

TRAIN = """\
import json, sys, time, polars as pl
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0)
sel = pl.read_parquet(sys.argv[1])
share = sel.filter(pl.col("id").str.ends_with("7")).height / max(sel.height, 1)
json.dump({"benchmarks": {"share7": share}}, open(sys.argv[2] + "/metrics.json", "w"))
json.dump({"benchmarks": {"share7": share / 2}}, open(sys.argv[3], "w"))
"""

GRID = """\
[experiment]
agents = ["scripted", "search"]
scaffolds = ["adapt"]
seeds = [0, 1]
pools = ["{pool}"]
backend = "command"
budget = 200
iterations = 2
parallel = 2

[backend.command]
command = "{python} {train} {{export}} {{workdir}} {{test_metrics}} {sleep}"
format = "parquet"
timeout = 60
metrics = "metrics.json"
"""


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("pools") / "demo", rows=1000, seed=0)


@pytest.fixture
def grid(pool, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    monkeypatch.delenv(test_scores.AGENT_ENV, raising=False)
    (tmp_path / "train.py").write_text(TRAIN)
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(pool=pool, python=sys.executable, train=tmp_path / "train.py", sleep=0))
    return path


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def test_a_grid_runs_every_cell_and_the_report_reads_the_ledgers(grid, tmp_path):
    out = run("experiment", "run", str(grid))
    assert "4 of 4 cells to run, 2 at a time" in out and "4 of 4 cells ended" in out
    folder = tmp_path / "grid"
    cells = sorted(p.name for p in (folder / "cells").iterdir() if p.is_dir() and not p.name.endswith(".agent"))
    assert cells == sorted(f"{a}-adapt-seed{k}-demo" for a in ("scripted", "search") for k in (0, 1))
    # a rerun skips the ended cells
    assert "0 of 4 cells to run" in run("experiment", "run", str(grid))
    text = run("experiment", "report", str(folder))
    assert "| scripted | adapt | demo | 0,1 |" in text and (folder / "report.md").read_text() in text
    assert (folder / "curve.png").stat().st_size > 0 and (folder / "shares.png").stat().st_size > 0
    report = json.loads((folder / "report.json").read_text())
    cell = next(c for c in report["cells"] if c["cell"] == "scripted-adapt-seed0-demo")
    board = json.loads(subprocess.run([sys.executable, "-m", "cbdsl", "leaderboard", "--test", "--json"],
                                      cwd=folder / "cells" / cell["cell"], capture_output=True,
                                      text=True, check=True).stdout)
    best = max((r for r in board if r["iteration"] > 0), key=lambda r: (r["aggregate"], -r["iteration"]))
    assert cell["best_dev"] == best["aggregate"] and cell["test_of_best"] == best["test"]["aggregate"]
    assert cell["iterations"] == 2 and len(cell["curve"]) == 2 and cell["curve"][-1] == cell["best_dev"]
    assert cell["new_family_share"] == 1.0 and cell["literal_share"] == 0.0  # each plan step is a new family
    assert cell["turns"] == {"submitted": 2}
    group = next(g for g in report["groups"] if g["agent"] == "scripted" and g["scaffold"] == "adapt")
    assert group["seeds"] == [0, 1] and group["best_dev"] is not None
    # the command backend has no seed: both seeds' scripted runs made the same selections
    assert group["best_dev_std"] == 0.0


def test_a_killed_grid_resumes_from_the_ledgers(grid, tmp_path, pool):
    grid.write_text(GRID.format(pool=pool, python=sys.executable, train=tmp_path / "train.py", sleep=1)
                    .replace('agents = ["scripted", "search"]', 'agents = ["scripted"]'))  # two cells
    proc = subprocess.Popen([sys.executable, "-m", "cbdsl", "experiment", "run", str(grid)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    folder = tmp_path / "grid"
    deadline = time.time() + 120
    while time.time() < deadline and not list(folder.glob("cells/*.agent/turn-0002")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner, its agents and their submits, at once
    proc.wait()
    assert len(list(folder.glob("cells/*.json"))) < 2
    out = run("experiment", "run", str(grid))
    assert "cells ended" in out
    for mark in (folder / "cells").glob("*.json"):
        ended = json.loads(mark.read_text())
        assert ended["iterations_left"] == 0, ended
        verify = subprocess.run([sys.executable, "-m", "cbdsl", "verify"], cwd=mark.with_suffix(""),
                                capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr
    report = experiment_report(folder)
    assert all(c["iterations"] == 2 for c in report["cells"])


def test_grid_mistakes_are_clear_errors(tmp_path):
    cases = {
        "[experiment]\nagents = [\"gpt\"]\n": "agent 'gpt' is no preset",
        "[experiment]\nagents = [\"scripted\"]\nscaffolds = [\"strict\"]\n": "scaffold 'strict'",
        "[experiment]\nagents = [\"scripted\"]\nseeds = []\n": "seeds must be a non-empty list",
        "[experiment]\nagents = [\"scripted\"]\niterations = 0\n": "iterations must be a positive whole number",
        "[experiment]\nagents = [\"scripted\"]\nworkers = 3\n": "unknown key(s) workers",
        "[experiment]\nagents = [\"mine\"]\n[agents.mine]\nevents = \"x\"\n": "[agents.mine] needs command",
        "[experimen]\n": "no [experiment] table",
        "[experiment\n": "not valid TOML",
    }
    for text, message in cases.items():
        path = tmp_path / "g.toml"
        path.write_text(text)
        with pytest.raises(GridError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            load_grid(path)
    path = tmp_path / "g.toml"
    path.write_text("[experiment]\nagents = [\"scripted\"]\npools = [\"no-such-pool\"]\n")
    out = run("experiment", "run", str(path), code=2)
    assert "pool 'no-such-pool'" in out
    path.write_text("[experiment]\nagents = [\"scripted\", \"codex\"]\npools = [\"demo\"]\n")
    with pytest.MonkeyPatch.context() as patch:  # a preset whose CLI is missing: said before any cell starts
        patch.setenv("PATH", "/nonexistent")
        patch.setenv("CBDSL_HOME", str(tmp_path / "home"))
        out = run("experiment", "run", str(path), code=2)
    assert "agent 'codex': the codex preset runs `codex`, which is not installed" in out
    assert not (tmp_path / "g" / "cells").exists()
    assert "holds no experiment.json" in run("experiment", "report", str(tmp_path), code=2)


def test_groups_average_over_seeds_and_the_table_shows_each_group():
    from cbdsl.harness.report import CellReport, _group, markdown

    def cell(seed, best, test, curve):
        values = {"best_dev": best, "test_of_best": test, "gap": best - test, "baseline": 0.38,
                  "new_family_share": 0.5, "literal_share": 0.25, "scaffold_break_share": 0.0,
                  "refused_share": 0.1, "iterations": len(curve), "curve": curve, "test_curve": [test] * len(curve)}
        return CellReport(f"a-open-seed{seed}-demo", "a", "open", seed, "demo", values)

    group = _group(("a", "open", "demo"), [cell(0, 0.50, 0.48, [0.40, 0.50]), cell(1, 0.54, 0.50, [0.54])])
    assert group["best_dev"] == pytest.approx(0.52) and group["best_dev_std"] == pytest.approx(0.0282843, abs=1e-6)
    assert group["curve"] == pytest.approx([0.47, 0.50])  # the second point: the seed that got that far
    assert group["seeds"] == [0, 1] and group["iterations"] == 1.5
    text = markdown({"k": 2, "groups": [group]})
    assert "| a | open | demo | 0,1 | 0.5200 ± 0.0283 | 0.4900 ± 0.0141 | +0.0300 | 0.3800 | 50% | 25% | 0% | 10% |" \
        in text
