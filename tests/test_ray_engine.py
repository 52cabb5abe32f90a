"""The Ray engine (issue 17, part 1): every run on a real local Ray cluster selects what the local engine
selects, byte for byte.

The cluster is started once for the module (``ray.init`` with two CPUs: a head and worker processes on
loopback), and every pool is cut into pieces smaller than its shards, so statistics, duplicates, ties and
mix groups straddle Ray Data blocks: each case compares the selection hash, the counts, the quotas and the
warnings of both engines.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("ray")

from conftest_pools import ROOT, asset_reader, make_pool, policy, pools_dir  # noqa: F401 (fixtures)
from test_datacomp_reference import layout, pool  # noqa: F401 (fixtures: DataComp's download)
from test_loop import cli_ok, ledger_rows, pools, sandbox, write_policy  # noqa: F401 (fixtures: a sandbox)
from test_statistics_first import CASES, _frame
from cbdsl.compiler.ir import Score
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.engine.execute import execute
from cbdsl.pipelines.engine.on_ray import cluster, execute_on_ray, pieces
from cbdsl.pipelines.engine.scores import cache_path
from cbdsl.scorers.api import RunError
from cbdsl.dsl.diagnostics import PolicyError
from cbdsl.stages import compile_source, lower

EXAMPLES = sorted((ROOT / "examples").glob("*.cur"))
# scorers cheap enough to compute in the default suite (py3langid, k-means over a pool column, DSIR's
# hashed n-grams); an example that needs another model (CLIP weights, a language model) is skipped, and a
# model scorer on the Ray actors is test_a_model_score_on_actors_is_the_local_score's (cbdsl-tiny CLIP).
CHEAP = {"lang", "kmeans", "dsir"}


def test_an_unreachable_cluster_is_a_clear_error():
    import ray

    assert not ray.is_initialized()  # this test runs first: a session would be joined whatever the address
    with pytest.raises(RunError) as err:
        with cluster(address="127.0.0.1:1"):
            pass
    assert err.value.message == "no Ray cluster at '127.0.0.1:1': nothing answers there"
    assert any("ray start --head" in h for h in err.value.hints)


def test_cbdsl_run_names_an_unreachable_cluster(pools_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cbdsl.cli import cli

    monkeypatch.setenv("CBDSL_POOLS", str(pools_dir))
    args = ["run", str(ROOT / "examples" / "demo_basic_quality.cur"), "--out", str(tmp_path / "out"),
            "--engine", "ray", "--address", "127.0.0.1:1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert "error: no Ray cluster at '127.0.0.1:1': nothing answers there" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def ray_cluster():
    with cluster(cpus=2):
        yield


def _lowered(text: str, pool: Pool, name: str = "policy.cur"):
    compiled = compile_source(text, name, pool)
    return lower(compiled.plan, pool.schema, asset_reader(pool))


def _both(text: str, pool: Pool, block_rows: int, name: str = "policy.cur"):
    """(local, Ray): the same policy run by both engines."""
    local = execute(_lowered(text, pool, name), pool)
    on_ray = execute_on_ray(_lowered(text, pool, name), pool, block_rows=block_rows)
    return local, on_ray


def _same(local, on_ray) -> None:
    assert on_ray.selection_hash() == local.selection_hash()
    assert on_ray.selection.equals(local.selection)
    assert (on_ray.survivors, on_ray.after_dedup) == (local.survivors, local.after_dedup)
    assert on_ray.quotas == local.quotas
    assert on_ray.warnings == local.warnings


def _runnable(path: Path, pool: Path) -> str | None:
    """Why an example is not compared here (None: it is)."""
    text = path.read_text(encoding="utf-8")
    try:
        plan = compile_source(text, path.name, Pool.open(pool)).plan
    except PolicyError as err:
        return f"does not compile against the test pool: {sorted({d.code for d in err.diagnostics})}"
    needs = {s["scorer"] for s in plan.required_scorers} - CHEAP
    return f"needs model scores ({', '.join(sorted(needs))})" if needs else None


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_selects_the_same_on_ray(path: Path, pools_dir, ray_cluster, tmp_path):
    text = path.read_text(encoding="utf-8")
    name = re.search(r'^pool\s+"([^"]+)"', text, re.MULTILINE).group(1)
    if not (pools_dir / name).is_dir():
        pytest.skip(f"no test pool named {name!r}")
    why = _runnable(path, pools_dir / name)
    if why:
        pytest.skip(why)
    pool = Pool.open(shutil.copytree(pools_dir / name, tmp_path / name))  # a cold score cache for each engine
    block_rows = max(1, pool.card.rows // 5 + 1)
    assert len(pieces(pool, block_rows)) >= 5
    on_ray = _outcome(lambda: execute_on_ray(_lowered(text, pool, path.name), pool, block_rows=block_rows))
    local = _outcome(lambda: execute(_lowered(text, pool, path.name), pool))  # reads what the Ray run cached
    cold = Pool.open(shutil.copytree(pools_dir / name, tmp_path / "cold"))
    computed = _outcome(lambda: execute(_lowered(text, cold, path.name), cold))  # computes its own scores
    if isinstance(local, str):  # a budget the small test pool cannot meet: the same error on both engines
        assert on_ray == local == computed
        return
    _same(local, on_ray)
    _same(computed, on_ray)


DATACOMP = [p for p in EXAMPLES if 'pool "datacomp-small"' in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("path", DATACOMP, ids=[p.stem for p in DATACOMP])
def test_datacomp_examples_select_the_same_on_ray(path: Path, pool, ray_cluster, tmp_path):
    """DataComp's baselines on test_datacomp_reference's download (embeddings, centroids, target clusters):
    the image-based filter's k-means is a population scorer, computed on the driver."""
    why = _runnable(path, pool)
    if why:
        pytest.skip(why)
    text = path.read_text(encoding="utf-8")
    copies = [Pool.open(shutil.copytree(pool, tmp_path / name)) for name in ("ray", "local")]
    block_rows = copies[0].card.rows // 7 + 1
    on_ray = execute_on_ray(_lowered(text, copies[0], path.name), copies[0], block_rows=block_rows)
    _same(execute(_lowered(text, copies[1], path.name), copies[1]), on_ray)


def _outcome(run):
    """A run's result, or the message of the RunError it raised."""
    try:
        return run()
    except RunError as err:
        return err.message


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """test_statistics_first's pool: 400 rows with nulls, NaNs, ties and a null group, in shards of 97."""
    return make_pool(tmp_path_factory.mktemp("ray") / "t", _frame(400, 1), shard_rows=97)


@pytest.mark.parametrize("clauses", CASES, ids=[" | ".join(c) for c in CASES])
@pytest.mark.parametrize("block_rows", [40, 1000])
def test_every_statistic_is_exact_across_blocks(sharded, ray_cluster, clauses, block_rows):
    _same(*_both(policy(*clauses), sharded, block_rows))


def _straddling() -> pl.DataFrame:
    """Rows whose duplicates, near-duplicates, select ties and mix groups lie in different shards."""
    n = 240
    words = ["red", "green", "blue", "cat", "dog", "fish", "tree", "house", "road", "lamp"]
    return pl.DataFrame({
        "id": [f"u{i:03d}" for i in range(n)],
        "text": [  # each caption twice, 80 rows apart (another shard), then once more with a word added
            " ".join(words[(i % 80 * 3 + j) % 10] for j in range(6)) + f" n{i % 80}" + ("" if i < 160 else " x")
            for i in range(n)],
        "y": [i % 7 for i in range(n)],  # ties at every select threshold
        "g": [["a", "b", "c"][(i // 40) % 3] for i in range(n)],
        "x": [float(i % 11) for i in range(n)],
    })


@pytest.fixture(scope="module")
def straddling(tmp_path_factory):
    return make_pool(tmp_path_factory.mktemp("ray") / "s", _straddling(), shard_rows=50)


TAIL_CASES = [
    ["dedup exact(text)", "select top(y)", "budget 40"],
    ["dedup exact(text)", "select random(seed=3)", "budget 50"],
    ["dedup minhash(text, threshold=0.5)", "select top(x)", "budget 15"],
    ["select top(y)", "budget 37"],
    ["select bottom(x)", "budget 101"],
    ["filter x >= quantile(x, 0.3) per g", "mix by g { a: 0.5, b: 0.3, *: 0.2 }", "select top(y)", "budget 60"],
    ["dedup exact(text)", "mix by g { a: 0.6, b: 0.4 }", "select random(seed=9)"],
    ["filter top(y, 0.4) per g", "dedup minhash(text)", "select top(x)"],
]


@pytest.mark.parametrize("clauses", TAIL_CASES, ids=[" | ".join(c) for c in TAIL_CASES])
def test_duplicates_and_ties_across_blocks_meet(straddling, ray_cluster, clauses):
    _same(*_both(policy(*clauses), straddling, 23))


@pytest.mark.parametrize("clauses", [
    ["dedup exact(g, k)", "select top(u)"],  # a null `g`: nulls are one key, as Polars' unique has them
    ["dedup exact(x)", "select bottom(y)", "budget 30"],  # NaN and null keys
    ["filter ok", "dedup exact(text)", "select random(seed=2)", "budget 5"],
    ["dedup minhash(text, ngram=1, threshold=0.5)", "select top(x)"],  # a null and empty texts: one group
    ["filter y > 3", "dedup minhash(text, num_perm=64, bands=8, ngram=2)", "select random(seed=5)"],
], ids=["two keys with nulls", "NaN keys", "text", "minhash", "minhash with bands"])
def test_dedup_with_bands_runs_on_the_workers(sharded, ray_cluster, monkeypatch, clauses):
    """`exact` and `minhash` have bands: the workers hash-partition them, the driver merges the groups and
    never gathers every survivor for the local tail."""
    import cbdsl.pipelines.engine.on_ray as on_ray

    text = policy(*clauses)
    local = execute(_lowered(text, sharded), sharded)

    def whole_tail(*_args):
        raise AssertionError("every survivor came to the driver")

    monkeypatch.setattr(on_ray, "run_tail", whole_tail)
    _same(local, execute_on_ray(_lowered(text, sharded), sharded, block_rows=30))


def test_a_pool_cut_into_pieces_covers_every_row_once(straddling):
    parts = pieces(straddling, 23)
    assert [p.index for p in parts] == list(range(len(parts)))
    rows = pl.concat([p.scan(["id"]).collect() for p in parts])
    assert rows["id"].to_list() == straddling.scan(["id"]).collect()["id"].to_list()
    assert all(p.rows <= 23 for p in parts) and any(p.whole for p in pieces(straddling, 50))


def test_an_empty_selection_on_ray(straddling, ray_cluster):
    local, on_ray = _both(policy("filter x > 100", "select top(y)"), straddling, 23)
    _same(local, on_ray)
    assert on_ray.selection.height == 0


def test_scores_computed_on_ray_land_in_the_cache(pools_dir, ray_cluster, tmp_path):
    """A model score (``lang``, after an early filter) is computed once into the pool's cache by a Ray run;
    a local run afterwards computes nothing and selects the same."""
    pool = Pool.open(shutil.copytree(pools_dir / "demo", tmp_path / "demo"))
    text = policy("filter len(text) > 20", "filter lang(text) == \"en\"", "select random(seed=1)", "budget 300",
                  pool="demo")
    low = _lowered(text, pool)
    on_ray = execute_on_ray(low, pool, block_rows=1000)
    step = low.plan.of(Score)[0]
    path = cache_path(pool, step, low.exprs.registry.get(step.scorer, "expr"),
                      {s.writes: s for s in low.plan.steps if s.writes})
    cached = pl.read_parquet(path)
    assert 0 < cached.height < pool.card.rows  # the rows that passed the early filter, not the pool
    stamp = path.stat().st_mtime_ns
    _same(execute(_lowered(text, pool), pool), on_ray)
    assert path.stat().st_mtime_ns == stamp


def test_cbdsl_run_on_ray_writes_the_local_bytes(pools_dir, ray_cluster, tmp_path, monkeypatch):
    """`cbdsl run --engine ray`: the manifest and DataComp's subset file, byte for byte the local run's."""
    from click.testing import CliRunner

    from cbdsl.cli import cli

    monkeypatch.setenv("CBDSL_POOLS", str(pools_dir))
    monkeypatch.chdir(tmp_path)
    policy_file = ROOT / "examples" / "datacomp_no_filter.cur"
    runner = CliRunner()
    outputs = {}
    for engine in ("local", "ray"):
        args = ["run", str(policy_file), "--out", engine, "--format", "datacomp", "--json", "--engine", engine]
        result = runner.invoke(cli, args + (["--block-rows", "37"] if engine == "ray" else []))
        assert result.exit_code == 0, result.output
        outputs[engine] = json.loads(result.stdout)
        assert outputs[engine]["engine"] == engine
    assert outputs["ray"]["selection_hash"] == outputs["local"]["selection_hash"]
    for name in ("selection.parquet", "subset.npy"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_ray_settings_without_the_ray_engine_are_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from cbdsl.cli import cli

    (tmp_path / "p.cur").write_text(policy("select random", pool="demo"))
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "p.cur"), "--address", "auto"])
    assert result.exit_code == 2
    assert "--address and --block-rows are settings of the Ray engine: add --engine ray" in result.output


@pytest.mark.parametrize("table, message", [
    ('name = "spark"', "[engine] name is 'spark'; choose one of local, ray"),
    ('name = "ray"\nworkers = 4', "unknown [engine] setting 'workers'; the settings are name, address, block_rows"),
    ('address = "auto"', "[engine] address is a Ray cluster's address (a string), for name = \"ray\""),
    ('name = "ray"\nblock_rows = 0', "[engine] block_rows must be a positive whole number of rows, got 0"),
])
def test_a_bad_engine_table_in_cbdsl_toml_is_named(tmp_path, table, message):
    from cbdsl.pipelines.loop.sandbox import SandboxError, load

    (tmp_path / "cbdsl.toml").write_text(f'[sandbox]\npool = "demo"\n\n[engine]\n{table}\n')
    with pytest.raises(SandboxError) as err:
        load(tmp_path)
    assert str(err.value) == f"cbdsl.toml: {message}"


def test_an_engine_table_names_the_engine_of_submissions(tmp_path):
    from cbdsl.pipelines.engine.engines import Engine
    from cbdsl.pipelines.loop.sandbox import load

    (tmp_path / "cbdsl.toml").write_text('[sandbox]\npool = "demo"\n\n[engine]\nname = "ray"\nblock_rows = 5000\n')
    assert load(tmp_path).engine == Engine("ray", None, 5000)


def test_a_model_score_on_actors_is_the_local_score(ray_cluster, tmp_path, monkeypatch):
    """``clip_score`` (cbdsl-tiny weights, a real checkpoint file) on an actor pool: the cache holds the values a
    local run computes, bit for bit, when the actors' chunks align with the scorer's batches."""
    import cbdsl.pipelines.engine.on_ray as on_ray
    from cbdsl.pipelines.data.writing import add_asset, write_pool
    from cbdsl.scorers.models import tinyclip
    from cbdsl.pipelines.data.demo import generate_clean

    rows = generate_clean(150, 9, stream="eval")
    weights = tmp_path / "tiny.safetensors"
    tinyclip.save(tinyclip.build(seed=3), weights)
    pools = []
    for name in ("ray", "local"):
        write_pool(rows, tmp_path / name, name="w", shard_rows=40)
        pools.append(add_asset(tmp_path / name, "tiny-ckpt", str(weights), kind="model"))
    text = policy('let s = clip_score(image, text, checkpoint="tiny-ckpt", batch_size=16)',
                  "filter s >= quantile(s, 0.3)", "select top(s)", "budget 40", pool="w")
    monkeypatch.setattr(on_ray, "SCORE_CHUNK", 32)  # five chunks for two actors; a multiple of the batch
    on_ray_result = execute_on_ray(_lowered(text, pools[0]), pools[0], block_rows=25)
    local = execute(_lowered(text, pools[1]), pools[1])
    _same(local, on_ray_result)
    caches = [sorted((p.path / "scores").glob("clip_score-*.parquet")) for p in pools]
    assert [c.name for c in caches[0]] == [c.name for c in caches[1]] and len(caches[0]) == 1
    assert pl.read_parquet(caches[0][0]).equals(pl.read_parquet(caches[1][0]))


def test_submit_on_the_ray_engine_reproduces_on_the_local_one(sandbox, ray_cluster):
    """`[engine] name = "ray"` in cbdsl.toml: `cbdsl submit` runs the policy on Ray (the test's cluster), and
    `cbdsl reproduce` on the local engine finds the selection the ledger recorded."""
    config = (sandbox / "cbdsl.toml").read_text()
    (sandbox / "cbdsl.toml").write_text(config + '\n[engine]\nname = "ray"\nblock_rows = 150\n')
    write_policy(sandbox, "filter words(text) > 2\ndedup exact(text)\nbudget 200\nselect random(seed=3)\n")
    cli_ok("compile", "policy.cur")
    cli_ok("submit", "-m", "on ray")
    assert [r["status"] for r in ledger_rows(sandbox)] == ["scored", "scored"]
    (sandbox / "cbdsl.toml").write_text(config)
    assert "identical" in cli_ok("reproduce", "1")
    assert "hash chain verified" in cli_ok("verify")


@pytest.mark.slow
def test_cbdsl_run_joins_a_running_cluster(pools_dir, tmp_path):
    """`cbdsl run --engine ray --address HOST:PORT` in its own process, on a head started by `ray start` (two
    CPUs; with Ray's token authentication, on by default): the local run's selection hash. Slow: the head
    takes 10-20 s to start here. (With `--node-ip-address 127.0.0.1` the driver, which puts the machine's
    address for 127.0.0.1, is refused: a head for other machines listens on its own address.)"""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    from cbdsl.pipelines.engine.on_ray import _listening

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="cbray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cbdsl = [sys.executable, "-m", "cbdsl", "run", str(ROOT / "examples" / "demo_basic_quality.cur"), "--json"]
    env = {**os.environ, "CBDSL_POOLS": str(pools_dir)}
    try:
        deadline = time.monotonic() + 120
        while not _listening(f"127.0.0.1:{port}", timeout=1):
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(1)
        runs = {}
        for engine in ("local", "ray"):
            extra = ["--engine", "ray", "--address", f"127.0.0.1:{port}", "--block-rows", "1000"]
            extra = extra if engine == "ray" else []
            done = subprocess.run([*cbdsl, "--out", str(tmp_path / engine), *extra], capture_output=True, text=True,
                                  env=env, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            runs[engine] = json.loads(done.stdout)
        assert runs["ray"]["selection_hash"] == runs["local"]["selection_hash"]
        assert runs["ray"]["engine"] == "ray"
    finally:
        head.terminate()  # `ray start --block` ends the head's processes when it is terminated
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
