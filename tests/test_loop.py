"""The loop: init, submit, audit, backends, ledger. Every failure step leaves the ledger consistent.

The ``command`` backend runs a tiny real train/eval stand-in (a Python script
that reads the exported selection and writes metrics), so these tests are
fast; the ``mini`` backend's own run is in the slow-marked test at the end.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.data.demo import make_demo

TRAIN = """\
import json, sys, polars as pl
sel = pl.read_parquet(sys.argv[1])
if "{crash}" == "1":
    sys.exit(3)
if "{sleep}" != "0":
    import time; time.sleep(float("{sleep}"))
share = sel.filter(pl.col("id").str.ends_with("7")).height / max(sel.height, 1)
json.dump({{"benchmarks": {{"rows": sel.height / 1000, "share7": share}}}}, open(sys.argv[2] + "/metrics.json", "w"))
"""


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pools")
    make_demo(root / "demo", rows=1000, seed=0)
    return root


@pytest.fixture
def sandbox(pools, tmp_path, monkeypatch):
    """A sandbox with the command backend, budget 200, 3 iterations; cwd is the sandbox."""
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    root = tmp_path / "sb"
    result = CliRunner().invoke(cli, ["init", str(root), "--backend", "command", "--budget", "200",
                                      "--iterations", "3"])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(root)
    set_backend(root)
    return root


def set_backend(root: Path, crash: str = "0", sleep: str = "0", timeout: float = 60) -> None:
    (root / "train.py").write_text(TRAIN.format(crash=crash, sleep=sleep))
    cfg = (root / "cbdsl.toml").read_text()
    head, _sep, _rest = cfg.partition("[backend.command]")
    cmd = f"{sys.executable} {root / 'train.py'} {{export}} {{workdir}}"
    (root / "cbdsl.toml").write_text(head + "[backend.command]\n" + f"command = {json.dumps(cmd)}\n"
                                     f'format = "parquet"\ntimeout = {timeout}\nmetrics = "metrics.json"\n')


def cli_ok(*args, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def write_policy(root: Path, body: str) -> None:
    (root / "policy.cur").write_text('policy "p"\npool "demo"\n' + body)


def ledger_rows(root: Path) -> list[dict]:
    path = root / ".cbdsl" / "ledger.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM iterations ORDER BY n")]
    db.close()
    return rows


def test_init_writes_the_sandbox(sandbox):
    for name in ("cbdsl.toml", "policy.cur", "PROTOCOL.md", "POOL.md", "METHODS.md"):
        assert (sandbox / name).is_file()
    assert "exactly **200 rows**" in (sandbox / "PROTOCOL.md").read_text()
    pool_md = (sandbox / "POOL.md").read_text()
    assert "mismatched" not in pool_md, "the demo's ground truth must not reach the agent"
    assert "demo-defects" not in pool_md and "mini-eval" not in pool_md
    cli_ok("init", str(sandbox), code=2)  # refuses to overwrite


def test_submit_runs_baseline_then_scores_and_reports(sandbox):
    write_policy(sandbox, "filter words(text) > 2\nbudget 200\nselect random(seed=3)\n")
    cli_ok("compile", "policy.cur")
    out = cli_ok("submit", "--json", "-m", "words filter")
    fb = json.loads(out[out.index("{"):])
    assert fb["iteration"] == 1 and fb["status"] == "scored" and fb["selected"] == 200
    assert set(fb["benchmarks"]) == {"rows", "share7"} and fb["iterations_left"] == 2
    assert fb["delta_baseline"] is not None and fb["rank"] in (1, 2)
    rows = ledger_rows(sandbox)
    assert [r["n"] for r in rows] == [0, 1] and {r["status"] for r in rows} == {"scored"}
    assert rows[1]["prev_hash"] == rows[0]["entry_hash"]
    assert "hash chain verified" in cli_ok("verify")
    assert "identical" in cli_ok("reproduce", "1")
    assert "words filter" in cli_ok("log")
    assert "iteration 1" in cli_ok("leaderboard")
    assert "filter words(text) > 2" in cli_ok("show", "1")


def test_a_policy_with_crlf_or_cr_line_ends_submits(sandbox):
    for end in ("\r\n", "\r"):
        (sandbox / "policy.cur").write_bytes(end.join(['policy "p"', 'pool "demo"', "budget 200",
                                                        f"select random(seed={len(end)})", ""]).encode())
        cli_ok("compile", "policy.cur")
        assert "iteration" in cli_ok("submit")
    assert [r["status"] for r in ledger_rows(sandbox)] == ["scored", "scored", "scored"]


def test_stale_compile_and_no_compile_are_refused_without_a_ledger_entry(sandbox):
    cli_ok("submit", code=1)  # nothing compiled yet
    write_policy(sandbox, "budget 200\nselect random(seed=1)\n")
    cli_ok("compile", "policy.cur")
    write_policy(sandbox, "budget 200\nselect random(seed=2)\n")
    out = cli_ok("submit", code=1)
    assert "changed since it was compiled" in out
    assert ledger_rows(sandbox) == []


def test_wrong_budget_is_refused_and_uses_no_iteration(sandbox):
    write_policy(sandbox, "budget 150\nselect random(seed=1)\n")
    cli_ok("compile", "policy.cur")
    out = cli_ok("submit", code=1)
    assert "refused" in out and "budget 200" in out
    rows = ledger_rows(sandbox)
    assert [r["status"] for r in rows] == ["scored", "refused"]
    assert "hash chain verified" in cli_ok("verify")


def test_budget_shortfall_is_a_failed_entry(sandbox):
    write_policy(sandbox, "filter words(text) > 50\nbudget 200\nselect random(seed=1)\n")
    cli_ok("compile", "policy.cur")
    out = cli_ok("submit", code=1)
    assert "fewer than the budget" in out
    assert ledger_rows(sandbox)[-1]["status"] == "failed"


def test_audit_refuses_selections_that_contain_eval_rows(sandbox, pools):
    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.data.writing import add_asset

    pool = Pool.open(pools / "demo")
    texts = pool.scan(["text"]).head(400).collect()  # most of any 200-row selection's captions
    eval_file = sandbox / "leak.parquet"
    texts.write_parquet(eval_file)
    add_asset(pools / "demo", "leaked-eval", eval_file, kind="eval")
    try:
        write_policy(sandbox, "budget 200\nselect random(seed=1)\n")
        cli_ok("compile", "policy.cur")
        out = cli_ok("submit", code=1)
        assert "high risk" in out and "filter them out" in out
        last = ledger_rows(sandbox)[-1]
        assert last["status"] == "refused" and json.loads(last["audit"])["verdict"] == "high risk"
    finally:
        from cbdsl.pipelines.data.pool import Pool as P

        card = P.open(pools / "demo").card
        card.assets.pop("leaked-eval", None)
        (pools / "demo" / "pool.json").write_text(card.model_dump_json(indent=2))


def test_backend_crash_and_timeout_are_failed_entries(sandbox):
    write_policy(sandbox, "budget 200\nselect random(seed=1)\n")
    cli_ok("compile", "policy.cur")
    cli_ok("submit")
    set_backend(sandbox, crash="1")
    out = cli_ok("submit", code=1)
    assert "exit code 3" in out and "stderr.txt" in out
    set_backend(sandbox, sleep="5", timeout=0.5)
    assert "ledger: " not in cli_ok("verify", code=1)  # the settings changed: verify fails ...
    assert "records cbdsl.toml's settings" in cli_ok("verify", "--accept-settings")  # ... until accepted
    out = cli_ok("submit", code=1)
    assert "timeout" in out
    assert [r["status"] for r in ledger_rows(sandbox)] == ["scored", "scored", "failed", "failed"]
    assert "hash chain verified" in cli_ok("verify")


def test_a_failed_baseline_stops_the_submit_and_is_retried_under_the_next_number(sandbox):
    write_policy(sandbox, "budget 200\nselect random(seed=1)\n")
    cli_ok("compile", "policy.cur")
    set_backend(sandbox, crash="1")
    out = cli_ok("submit", code=1)
    assert "baseline (iteration 0) failed" in out and "no iteration was used" in out
    assert [(r["n"], r["status"]) for r in ledger_rows(sandbox)] == [(0, "failed")]
    set_backend(sandbox)
    out = cli_ok("submit", "--json")
    fb = json.loads(out[out.index("{"):])
    assert fb["iteration"] == 2 and fb["status"] == "scored" and fb["delta_baseline"] is not None
    assert fb["iterations_left"] == 2
    assert [(r["n"], r["status"]) for r in ledger_rows(sandbox)] == [(0, "failed"), (1, "scored"), (2, "scored")]
    assert "hash chain verified" in cli_ok("verify")


def test_iteration_limit(sandbox):
    for seed in (1, 2, 3):
        write_policy(sandbox, f"budget 200\nselect random(seed={seed})\n")
        cli_ok("compile", "policy.cur")
        cli_ok("submit")
    write_policy(sandbox, "budget 200\nselect random(seed=4)\n")
    cli_ok("compile", "policy.cur")
    out = cli_ok("submit", code=1)
    assert "no iterations left" in out
    assert len(ledger_rows(sandbox)) == 4


def test_verify_detects_edits_and_deletions(sandbox):
    write_policy(sandbox, "budget 200\nselect random(seed=1)\n")
    cli_ok("compile", "policy.cur")
    cli_ok("submit")
    db = sqlite3.connect(sandbox / ".cbdsl" / "ledger.sqlite")
    db.execute("UPDATE iterations SET aggregate = 0.99 WHERE n = 1")
    db.commit()
    out = cli_ok("verify", code=1)
    assert "iteration 1" in out and "edited" in out
    db.execute("DELETE FROM iterations WHERE n = 1")
    db.commit()
    db.close()
    assert "deleted" in cli_ok("verify", code=1)


def test_two_submits_at_once_and_a_killed_submit(sandbox):
    write_policy(sandbox, "budget 200\nselect random(seed=1)\n")
    cli_ok("compile", "policy.cur")
    cli_ok("submit")  # the baseline exists: the next submit goes straight to iteration 1
    set_backend(sandbox, sleep="30")
    env = {**os.environ, "CBDSL_PROGRESS": "0"}
    slow = subprocess.Popen([sys.executable, "-m", "cbdsl", "submit", "-m", "slow"], cwd=sandbox, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline and not any(r["status"] == "running" for r in ledger_rows(sandbox)):
        time.sleep(0.2)
    assert any(r["status"] == "running" for r in ledger_rows(sandbox))
    out = cli_ok("submit", code=1)
    assert "being submitted right now" in out
    slow.send_signal(signal.SIGKILL)  # kill -9 mid-submit
    slow.wait(timeout=30)
    assert ledger_rows(sandbox)[-1]["status"] == "running"
    set_backend(sandbox)
    cli_ok("submit", "-m", "after the kill")
    statuses = [r["status"] for r in ledger_rows(sandbox)]
    assert statuses == ["scored", "scored", "failed", "scored"], statuses
    assert "interrupted" in ledger_rows(sandbox)[2]["error"]
    assert "hash chain verified" in cli_ok("verify")


@pytest.mark.slow
def test_mini_backend_trains_and_evaluates(pools, tmp_path, monkeypatch):
    """The real embedded backend on a small selection (minutes on CPU)."""
    from cbdsl.pipelines.loop.backends.base import Job
    from cbdsl.pipelines.loop.backends.mini import MiniBackend
    from cbdsl.pipelines.data.pool import Pool
    import polars as pl

    pool = Pool.open(pools / "demo")
    ids = pool.scan(["id"]).head(300).collect()
    selection = ids.with_columns(pl.int_range(1, 301).alias("rank"))
    backend = MiniBackend.from_settings(steps=30, batch_size=64, eval_rows=200, test_rows=200)
    metrics = backend.run(Job(pool=pool, selection=selection, export_dir=tmp_path, workdir=tmp_path, log=lambda m: None))
    assert set(metrics["benchmarks"]) == {"zeroshot_shape", "zeroshot_color", "zeroshot_size", "zeroshot_position",
                                          "zeroshot_texture", "retrieval_image_to_text_r1",
                                          "retrieval_text_to_image_r1"}
    assert 0 <= metrics["aggregate"] <= 1 and backend.suite.startswith("mini-v9-")
    assert set(metrics["test"]["benchmarks"]) == set(metrics["benchmarks"])  # the test part: other pairs, same scores
    assert metrics["test"]["benchmarks"] != metrics["benchmarks"]


def test_feedback_reports_the_calibrated_seed_noise_of_the_recipe():
    """The embedded backends know their aggregate's seed std for the default recipe (any seed); a changed
    recipe, or an external backend, reports none. The feedback shows it beside the aggregate and the deltas."""
    from cbdsl.pipelines.loop.backends import BACKENDS
    from cbdsl.pipelines.loop.ledger import Entry
    from cbdsl.pipelines.loop.submit import Feedback, render_feedback

    vlm, mini = BACKENDS["mini-vlm"], BACKENDS["mini"]
    assert vlm.from_settings(seed=4).seed_std == vlm.SEED_STD == 0.0100 and "bench_validity" in vlm.SEED_STD_SOURCE
    assert mini.from_settings().seed_std == 0.0117
    assert vlm.from_settings(steps=400).seed_std is None and vlm.from_settings(eval_rows=100).seed_std is None
    assert mini.from_settings(lr=0.004).seed_std is None
    entry = Entry(n=3, status="scored", message="m", policy_text="", policy_ast="", policy_hash="h", pool_hash="p",
                  selection_hash="s", manifest=None, selected=10, audit=None, backend="mini-vlm", suite="x",
                  metrics={}, aggregate=0.6413, error=None, pid=None, started_at=0.0, finished_at=1.0, timings=None,
                  prev_hash=None, entry_hash=None)
    fb = Feedback(entry=entry, benchmarks={"vqa": 0.8}, aggregate=0.6413, delta_best=0.02, delta_baseline=0.045,
                  rank=1, of=4, iterations_left=6, seed_std=0.01, seed_std_source="measured")
    text = render_feedback(fb)
    assert "0.6413 ± 0.0100 (seed std of this recipe)" in text
    assert "vs best so far  +0.0200 (+2.0 seed stds)" in text and "vs baseline     +0.0450 (+4.5 seed stds)" in text
    assert fb.to_json()["seed_std"] == 0.01
    quiet = render_feedback(Feedback(entry=entry, benchmarks={"vqa": 0.8}, aggregate=0.6, delta_best=0.02, rank=1))
    assert "±" not in quiet and "seed stds" not in quiet and "vs best so far  +0.0200" in quiet
