"""Design rule 8 by construction: a policy reads only the pool and the scorers.

Each test is a hole an agent trying to win found on d5ad455: reading the
demo's ground truth or the evaluation set through ``asset()`` or a scorer
parameter, a symbolic link (or a swapped file) inside the pool's
``assets/``, and a ``pool`` clause naming a directory of the policy's
choosing. Every one is now refused before a row is read, with a positioned
diagnostic at check time when the pool is known, and by the run itself when
a plan reaches it some other way.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.stages import compile_source
from cbdsl.stages import check_source
from cbdsl.dsl.diagnostics import PolicyError
from cbdsl.scorers.api import RunError
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.writing import add_asset
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.scorers.api import asset_ids, read_asset
from cbdsl.pipelines.data.demo import make_demo


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    root = tmp_path_factory.mktemp("rule8-pools")
    make_demo(root / "demo", rows=300, seed=0)
    pool = Pool.open(root / "demo")
    ids = pool.scan(["id"]).head(50).collect()["id"].to_list()
    src = tmp_path_factory.mktemp("rule8-src")
    (src / "keep-ids.txt").write_text("\n".join(ids) + "\n")
    add_asset(root / "demo", "keep-ids", src / "keep-ids.txt", kind="ids")
    np.save(src / "eval-centroids.npy", np.eye(4, 512, dtype=np.float32))
    add_asset(root / "demo", "eval-centroids", src / "eval-centroids.npy", kind="centroids")
    return root


@pytest.fixture
def pool_copy(pools, tmp_path) -> Pool:
    """A private copy of the demo pool, for the tests that tamper with its files."""
    shutil.copytree(pools / "demo", tmp_path / "demo")
    return Pool.open(tmp_path / "demo")


@pytest.fixture
def cbdsl(pools, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def invoke(*args: str):
        result = CliRunner().invoke(cli, list(args))
        assert "Traceback" not in result.output and "E900" not in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        return result

    return invoke


def assets_of(pool: Pool) -> dict[str, str]:
    return {name: info.kind for name, info in pool.card.assets.items()}


READS = [
    ('filter id in asset("demo-defects")', "demo-defects"),
    ('filter id not in asset("demo-defects")', "demo-defects"),
    ('filter text in asset("mini-eval")', "mini-eval"),
    ('filter id not in asset("mini-eval")', "mini-eval"),
    ('let d = centroid_distance(image_embedding(image), centroids="mini-eval")\nfilter d < 1', "mini-eval"),
    ('filter dsir(text, target="mini-eval") > 0', "mini-eval"),
]


@pytest.mark.parametrize(("clause", "asset"), READS)
def test_check_with_the_pool_refuses_benchmark_assets_with_a_positioned_error(pools, clause, asset):
    pool = Pool.open(pools / "demo")
    text = f'pool "demo"\n{clause}\nbudget 10\n'
    _policy, diags = check_source(text, "p.cur", pool.schema, assets_of(pool))
    e112 = [d for d in diags if d.code == "E112"]
    assert len(e112) == 1, [d.code for d in diags]
    quoted = text.encode()[e112[0].span.start:e112[0].span.end].decode()
    assert quoted == f'"{asset}"'  # the span marks the asset's name
    assert "benchmark" in e112[0].message and e112[0].hints


@pytest.mark.parametrize(("clause", "asset"), READS[:4])
def test_compile_and_run_refuse_them_before_reading_a_row(cbdsl, tmp_path, clause, asset):
    (tmp_path / "p.cur").write_text(f'pool "demo"\n{clause}\nbudget 10\n')
    for command in ("compile", "run", "explain"):
        result = cbdsl(command, "p.cur")
        assert result.exit_code == 1, result.output
        assert "E112" in result.output and asset in result.output
    assert not (tmp_path / "selection").exists()


def test_check_refuses_them_through_the_cli_with_pool(cbdsl, pools, tmp_path):
    (tmp_path / "p.cur").write_text('pool "demo"\nfilter id in asset("demo-defects")\nbudget 10\n')
    result = cbdsl("check", "--pool", str(pools / "demo"), "p.cur")
    assert result.exit_code == 1 and "E112" in result.output and "p.cur:2:20" in result.output


def test_the_run_refuses_a_benchmark_asset_even_without_the_checker(pool_copy):
    # a plan that reaches the run some other way (an older artifact, a hand-made plan) is stopped there,
    # before the file is read: the eval file is garbage here, so reading it would fail differently
    (pool_copy.path / pool_copy.card.assets["mini-eval"].file).write_bytes(b"not parquet")
    for read in (lambda: asset_ids(pool_copy, "mini-eval"),
                 lambda: read_asset(pool_copy, "mini-eval", ("centroids",), "`centroid_distance` parameter"),
                 lambda: asset_ids(pool_copy, "demo-defects")):
        with pytest.raises(RunError, match="read only by the benchmark"):
            read()


def test_policy_readable_assets_still_work_and_pool_md_lists_only_them(cbdsl, pools, tmp_path):
    (tmp_path / "p.cur").write_text('pool "demo"\nfilter id in asset("keep-ids")\nbudget 50\n')
    result = cbdsl("run", "p.cur")
    assert result.exit_code == 0, result.output
    from cbdsl.pipelines.loop.cards import pool_md

    md = pool_md(Pool.open(pools / "demo"))
    assert "keep-ids" in md and "demo-defects" not in md and "mini-eval" not in md


def test_the_demo_ground_truth_is_a_truth_asset(pools):
    assert Pool.open(pools / "demo").card.assets["demo-defects"].kind == "truth"


# --- asset files: regular files inside the pool, checked against the card -----------------------


def test_a_symlink_replacing_an_asset_is_refused_at_run_time(pool_copy, tmp_path):
    target = pool_copy.path / pool_copy.card.assets["keep-ids"].file
    other = tmp_path / "other-ids.txt"
    other.write_text(target.read_text())  # the same bytes: only the link itself is wrong
    target.unlink()
    target.symlink_to(other)
    with pytest.raises(PoolError, match="symbolic link"):
        pool_copy.read_asset("keep-ids")
    target.unlink()
    target.symlink_to("/etc/passwd")
    with pytest.raises(PoolError, match="symbolic link"):
        pool_copy.read_asset("keep-ids")


def test_a_symlinked_assets_folder_is_refused_at_run_time_and_at_add_asset(pool_copy, tmp_path):
    outside = tmp_path / "outside-assets"
    shutil.move(pool_copy.path / "assets", outside)
    (pool_copy.path / "assets").symlink_to(outside)
    with pytest.raises(PoolError, match="symbolic link"):
        pool_copy.read_asset("keep-ids")
    (tmp_path / "more.txt").write_text("d000001\n")
    with pytest.raises(PoolError, match="symbolic link"):
        add_asset(pool_copy.path, "more-ids", tmp_path / "more.txt", kind="ids")
    assert not (outside / "more-ids.txt").exists()


def test_a_link_inside_a_model_folder_is_refused(pool_copy, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    add_asset(pool_copy.path, "tiny-model", model, kind="model")
    pool = Pool.open(pool_copy.path)
    folder = pool.path / pool.card.assets["tiny-model"].file
    (folder / "weights.bin").symlink_to("/etc/passwd")
    with pytest.raises(PoolError, match="symbolic link"):
        pool.asset_path("tiny-model")


def test_add_asset_copies_a_linked_source_as_a_regular_file(pool_copy, tmp_path):
    real = tmp_path / "real-ids.txt"
    real.write_text("d000001\nd000002\n")
    (tmp_path / "link-ids.txt").symlink_to(real)
    pool = add_asset(pool_copy.path, "linked-ids", tmp_path / "link-ids.txt", kind="ids")
    stored = pool.path / pool.card.assets["linked-ids"].file
    assert stored.is_file() and not stored.is_symlink()
    real.write_text("d000003\n")  # the pool keeps what was registered
    assert pool.read_asset("linked-ids").to_list() == ["d000001", "d000002"]


def test_an_asset_changed_after_registration_fails_its_sha256(pool_copy):
    target = pool_copy.path / pool_copy.card.assets["keep-ids"].file
    assert len(pool_copy.read_asset("keep-ids")) == 50  # read once: checked and remembered
    ids = target.read_text().splitlines()
    target.write_text("\n".join(ids[:10]) + "\n")  # another selection, silently
    with pytest.raises(PoolError, match="does not match its sha256"):
        pool_copy.read_asset("keep-ids")


def test_a_run_with_a_swapped_asset_fails_with_the_reason(cbdsl, pool_copy, tmp_path):
    target = pool_copy.path / pool_copy.card.assets["keep-ids"].file
    target.write_text("d000001\n")
    (tmp_path / "p.cur").write_text('pool "demo"\nfilter id in asset("keep-ids")\n')
    result = cbdsl("run", "p.cur", "--pool", str(pool_copy.path))
    assert result.exit_code == 1 and "does not match its sha256" in result.output


# --- the pool clause names a pool, never a directory ----------------------------------------------


@pytest.mark.parametrize("where", ["/abs", "./rel", "../up", "~/home", "a/b"])
def test_a_pool_clause_with_a_path_is_E114(where):
    _policy, diags = check_source(f'pool "{where}"\nbudget 10\n', "p.cur")
    assert [d.code for d in diags if d.is_error] == ["E114"]


def test_run_and_compile_refuse_a_pool_directory_named_by_the_policy(cbdsl, pools, tmp_path):
    (tmp_path / "p.cur").write_text(f'pool "{pools / "demo"}"\nbudget 10\n')
    for command in ("compile", "run"):
        result = cbdsl(command, "p.cur")
        assert result.exit_code == 1 and "E114" in result.output, result.output
    result = cbdsl("run", "p.cur", "--pool", str(pools / "demo"))  # the person running may give one
    assert result.exit_code == 1 and "E114" in result.output  # ... but the policy text itself stays wrong
    (tmp_path / "q.cur").write_text('pool "demo"\nbudget 10\n')
    assert cbdsl("run", "q.cur", "--pool", str(pools / "demo")).exit_code == 0


def test_a_sandbox_on_a_pool_directory_names_it_by_its_card_name(pools, tmp_path, monkeypatch):
    monkeypatch.setenv("CBDSL_POOLS", str(tmp_path / "no-pools"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "sb", "--pool", str(pools / "demo"), "--budget", "20"])
    assert result.exit_code == 0, result.output
    starter = (tmp_path / "sb" / "policy.cur").read_text()
    assert 'pool "demo"' in starter
    os.chdir(tmp_path / "sb")
    result = runner.invoke(cli, ["compile", "policy.cur"])
    assert result.exit_code == 0, result.output
    from cbdsl.pipelines.loop.artifacts import read_last

    artifact = read_last(tmp_path / "sb" / ".cbdsl")
    assert artifact["pool"]["path"] == str((pools / "demo").resolve())


def test_import_refuses_an_id_with_a_control_character(tmp_path):
    import json

    from cbdsl.pipelines.data.importers import import_pool

    records = [{"id": "a1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
               {"id": "a\x002", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]
    (tmp_path / "llava.json").write_text(json.dumps(records))
    with pytest.raises(PoolError, match="control character") as err:
        import_pool("llava", tmp_path / "llava.json", tmp_path / "pool")
    assert "'a\\x002'" in str(err.value) and "llava.json" in str(err.value) and err.value.row == 1
    assert not (tmp_path / "pool").exists()
    frame = pl.DataFrame({"id": ["x", "y\nz"], "text": ["a", "b"]})
    frame.write_parquet(tmp_path / "t.parquet")
    with pytest.raises(PoolError, match="control character"):
        import_pool("parquet", tmp_path / "t.parquet", tmp_path / "pool2", id_column="id")
