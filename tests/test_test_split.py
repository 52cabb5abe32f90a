"""The held-out test split (issue 16, part 4): test scores reach the researcher's record and nothing the agent
can read.

The ``command`` backend runs a real stand-in train/eval that writes its dev metrics in the sandbox and its test
part to ``{test_metrics}``; after real submits, every file under the sandbox is searched for the test scores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.data.demo import make_demo
from cbdsl.pipelines.loop import test_scores
from cbdsl.pipelines.loop.backends.base import BackendError, check_metrics, split_test
from cbdsl.pipelines.loop.witness import Witness, witness_dir

# Test scores with digits no dev score, hash or timing shares: searched for in every sandbox file.
TRAIN = """\
import json, sys, polars as pl
sel = pl.read_parquet(sys.argv[1])
share = sel.filter(pl.col("id").str.ends_with("7")).height / max(sel.height, 1)
json.dump({{"benchmarks": {{"rows": sel.height / 1000, "share7": share}}}}, open(sys.argv[2] + "/metrics.json", "w"))
test = {{"benchmarks": {{"rows": 0.{marker}1 + share / 1e7, "share7": 0.{marker}2}}}}
{where}
"""
MARKER = "8642097531"
TO_TEST_FILE = 'json.dump(test, open(sys.argv[3], "w"))'
INTO_METRICS = ('m = json.load(open(sys.argv[2] + "/metrics.json")); m["test"] = test; '
                'json.dump(m, open(sys.argv[2] + "/metrics.json", "w"))')


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pools")
    make_demo(root / "demo", rows=1000, seed=0)
    return root


def make_sandbox(root: Path, where: str = TO_TEST_FILE) -> None:
    result = CliRunner().invoke(cli, ["init", str(root), "--backend", "command", "--budget", "200",
                                      "--iterations", "3"])
    assert result.exit_code == 0, result.output
    script = root.parent / f"{root.name}-train.py"  # the researcher's train/eval, outside the sandbox
    script.write_text(TRAIN.format(marker=MARKER, where=where))
    head = (root / "cbdsl.toml").read_text().partition("[backend.command]")[0]
    cmd = f"{sys.executable} {script} {{export}} {{workdir}} {{test_metrics}}"
    (root / "cbdsl.toml").write_text(head + "[backend.command]\n" + f"command = {json.dumps(cmd)}\n"
                                     'format = "parquet"\ntimeout = 60\nmetrics = "metrics.json"\n')


@pytest.fixture
def sandbox(pools, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    monkeypatch.delenv(test_scores.AGENT_ENV, raising=False)
    root = tmp_path / "sb"
    make_sandbox(root)
    monkeypatch.chdir(root)
    return root


def run(*args: str, code: int = 0, stdout: bool = False) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.stdout if stdout else result.output


def submit(root: Path, body: str, message: str) -> dict:
    (root / "policy.cur").write_text('policy "p"\npool "demo"\n' + body)
    run("compile", "policy.cur")
    out = run("submit", "-m", message, "--json")
    assert str(witness_dir()) not in out  # the agent is not told where the record lies
    return json.loads(out[out.index("\n{") + 1:])


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_test_scores_reach_the_record_and_no_file_in_the_sandbox(sandbox):
    fb = submit(sandbox, "budget 200\nselect random(seed=1)\n", "random one")
    assert fb["status"] == "scored" and set(fb["benchmarks"]) == {"rows", "share7"} and "test" not in fb
    submit(sandbox, "filter words(text) > 2\nbudget 200\nselect random(seed=3)\n", "words")
    for args in (["log", "--json"], ["show", "2", "--json"], ["leaderboard", "--json"], ["trajectory", "--json"]):
        assert MARKER not in run(*args), args  # the agent's commands
    assert files_holding(sandbox, MARKER.encode()) == []
    # the researcher's view
    witness = Witness(sandbox)
    assert witness.test_path.is_file() and witness.test_path.parent == witness_dir()
    assert (witness.test_path.stat().st_mode & 0o777) == 0o600
    board = json.loads(run("leaderboard", "--test", "--json", stdout=True))
    assert len(board) == 3 and all(row["test"]["benchmarks"]["share7"] == float(f"0.{MARKER}2") for row in board)
    for row in board:
        assert row["gap"] == pytest.approx(row["aggregate"] - row["test"]["aggregate"])
    assert "gap" in run("leaderboard", "--test")
    traj = json.loads(run("trajectory", "--test", "--json", stdout=True))
    assert [s["test"] is not None for s in traj["iterations"]] == [True, True, True]
    assert traj["summary"]["best_test"] is not None and traj["summary"]["mean_gap"] is not None
    assert "test score of the best" in run("trajectory", "--test")
    assert "test" not in json.loads(run("trajectory", "--json", stdout=True))["iterations"][0]
    # no stray scratch file is left beside the record
    assert not list(witness.folder.glob(f"{witness.path.stem}.test-*.json"))


def test_an_agent_run_cannot_ask_for_test_scores(sandbox, monkeypatch):
    submit(sandbox, "budget 200\nselect random(seed=1)\n", "one")
    monkeypatch.setenv(test_scores.AGENT_ENV, "1")
    for args in (["leaderboard", "--test"], ["trajectory", "--test"]):
        out = run(*args, code=2)
        assert "never sees" in out and MARKER not in out


def test_test_scores_written_into_the_sandbox_fail_the_entry_and_are_removed(pools, tmp_path, monkeypatch):
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    root = tmp_path / "leaky"
    make_sandbox(root, where=INTO_METRICS)
    monkeypatch.chdir(root)
    (root / "policy.cur").write_text('policy "p"\npool "demo"\nbudget 200\nselect random(seed=1)\n')
    run("compile", "policy.cur")
    out = run("submit", code=1)
    assert "holds test scores" in out and "{test_metrics}" in out
    assert files_holding(root, MARKER.encode()) == []
    run("verify")


def test_a_record_line_of_an_iteration_that_did_not_score_is_not_shown(sandbox):
    submit(sandbox, "budget 200\nselect random(seed=1)\n", "one")
    witness = Witness(sandbox)
    test_scores.record(witness, 7, "nope", "suite", {"benchmarks": {"a": 0.5}, "aggregate": 0.5})
    board = json.loads(run("leaderboard", "--test", "--json", stdout=True))
    assert {row["iteration"] for row in board} == {0, 1} and all(row["test"] for row in board)
    with open(witness.test_path, "a") as f:
        f.write('{"iteration": 1, "cut')  # a crash mid-append: ignored
    assert len(json.loads(run("leaderboard", "--test", "--json", stdout=True))) == 2
    with open(witness.test_path, "a") as f:
        f.write('\n{"bad": 1}\n')  # an edited line in the middle: refused with its place
    out = run("leaderboard", "--test", code=1)
    assert f"{witness.test_path}:" in out and "not a line cbdsl wrote" in out


def test_restarting_a_sandbox_retires_its_test_scores(sandbox, tmp_path):
    submit(sandbox, "budget 200\nselect random(seed=1)\n", "one")
    witness = Witness(sandbox)
    assert witness.test_path.is_file()
    moved = witness.retire()
    assert not witness.test_path.exists() and any(p.name.endswith(".test.jsonl") for p in moved)


def test_metrics_with_a_malformed_test_part_are_a_clear_error():
    metrics = check_metrics({"benchmarks": {"a": 1}, "test": {"benchmarks": {"a": 0.5}}}, "m.json")
    dev, test = split_test(metrics)
    assert test == {"benchmarks": {"a": 0.5}, "aggregate": 0.5} and "test" not in dev and "test" in metrics
    with pytest.raises(BackendError, match="its `test` object"):
        check_metrics({"benchmarks": {"a": 1}, "test": {"benchmarks": {"a": "x"}}}, "m.json")
    with pytest.raises(BackendError, match="not a number"):
        check_metrics({"benchmarks": {"a": 1}, "aggregate": "high"}, "m.json")


def test_a_command_backend_without_a_record_refuses_the_placeholder(tmp_path):
    from cbdsl.pipelines.loop.backends.command import render

    with pytest.raises(BackendError, match="no place outside the sandbox"):
        render("train {export} {test_metrics}", "[backend.ray]", export="e", format="parquet", workdir="w")
    assert render("t {test_metrics}", "s", export="e", format="f", workdir="w", test_metrics="/r/x y") == "t '/r/x y'"


def test_the_mini_backend_as_a_program_writes_the_test_part_only_where_asked(pools, tmp_path):
    import polars as pl

    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.loop.backends import mini

    sel = Pool.open(pools / "demo").scan(["id"]).head(64).collect().with_columns(
        pl.int_range(1, 65).alias("rank"))
    sel.write_parquet(tmp_path / "selection.parquet")
    args = [str(tmp_path / "selection.parquet"), "--pool", str(pools / "demo"), "--steps", "2", "--batch-size", "16",
            "--eval-rows", "50", "--test-rows", "50"]
    assert mini.main([*args, "--metrics", str(tmp_path / "a" / "m.json"),
                      "--test-metrics", str(tmp_path / "t.json")]) == 0
    dev, test = json.loads((tmp_path / "a" / "m.json").read_text()), json.loads((tmp_path / "t.json").read_text())
    assert "test" not in dev and set(test["benchmarks"]) == set(dev["benchmarks"])
    assert mini.main([*args, "--metrics", str(tmp_path / "b" / "m.json")]) == 0
    assert "test" not in json.loads((tmp_path / "b" / "m.json").read_text())


def test_the_mini_vlm_backend_scores_a_test_part_of_other_questions(tmp_path, monkeypatch):
    """The it track's backend on a tiny base (a few steps on 64 captions, in tmp): the test part has the dev
    part's benchmarks, on the suite's other questions; the suite names its size."""
    import functools

    import polars as pl

    from cbdsl.pipelines.data.demo_it import make_demo_it
    from cbdsl.pipelines.data.demo_it_eval import eval_suite, TEST_SEED
    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.loop.backends.base import Job
    from cbdsl.pipelines.loop.backends.mini_vlm import MiniVLMBackend
    from cbdsl.scorers.models import vlm_base
    from cbdsl.scorers.models.vlm_recipe import BaseRecipe, VLMConfig

    tiny = dict(workdir=tmp_path / "base", config=VLMConfig(vocab=300, width=32, layers=1, heads=2, context=128,
                                                               visual_tokens=2),
                recipe=BaseRecipe(steps=4, batch_size=16, lr=2e-3, warmup=2, seed=0, threads=1, rows=64,
                                  clip_steps=4, clip_batch=16))
    folder = vlm_base.base_dir(**tiny)
    monkeypatch.setattr(vlm_base, "base", functools.partial(vlm_base.base, **tiny))
    monkeypatch.setattr(vlm_base, "base_dir", lambda *args, **kwargs: folder)
    pool = Pool.open(make_demo_it(tmp_path / "demo-it", rows=200))
    selection = pool.scan(["id"]).head(40).collect().with_columns(pl.int_range(1, 41).alias("rank"))
    backend = MiniVLMBackend.from_settings(steps=2, batch_size=8, threads=1, eval_rows=3, test_rows=3)
    metrics = backend.run(Job(pool=pool, selection=selection, export_dir=tmp_path, workdir=tmp_path,
                              log=lambda m: None))
    assert set(metrics["test"]["benchmarks"]) == set(metrics["benchmarks"]) and len(metrics["benchmarks"]) == 8
    assert backend.suite.startswith("mini-vlm-v2-")
    assert backend.suite != MiniVLMBackend.from_settings(steps=2, batch_size=8, threads=1, eval_rows=3,
                                                         test_rows=0).suite
    dev, test = eval_suite(3), eval_suite(3, TEST_SEED)
    assert not set(dev["question"]) & set(test["question"]) or not dev["image"].equals(test["image"])


def test_a_mini_sandbox_keeps_its_test_scores_out_of_every_file(pools, tmp_path, monkeypatch):
    """The embedded backend end to end (a few steps): after the submits, no file under the sandbox holds any
    test score as Python or JSON writes it, nor the record's path."""
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    monkeypatch.setenv("CBDSL_DEVICE", "cpu")
    root = tmp_path / "mini"
    run("init", str(root), "--budget", "200", "--iterations", "2")
    config = (root / "cbdsl.toml").read_text().replace("[backend.mini]", "[backend.mini]\nsteps = 3\nbatch_size = 16\n"
                                                        "eval_rows = 64\ntest_rows = 60\nthreads = 1", 1)
    (root / "cbdsl.toml").write_text(config)
    monkeypatch.chdir(root)
    submit(root, "budget 200\nselect random(seed=1)\n", "one")
    tests = test_scores.read(Witness(root), _entries(root))
    assert set(tests) == {0, 1}
    needles = {repr(v) for t in tests.values() for v in [t["aggregate"], *t["benchmarks"].values()]}
    needles = {n for n in needles if len(n) > 6}  # k/60 (test) is never j/64 (dev) but for 0.25, 0.5, 0.75
    assert needles
    for needle in needles | {str(witness_dir())}:
        assert files_holding(root, needle.encode()) == [], needle


def _entries(root: Path):
    from cbdsl.pipelines.loop.sandbox import load
    from cbdsl.pipelines.loop.submit import ledger_for

    ledger = ledger_for(load(root))
    try:
        return ledger.entries()
    finally:
        ledger.close()
