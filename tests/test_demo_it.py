"""The demo instruction pool (`demo-it`) and the held-out suite of the mini-vlm backend."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.data import demo_it, demo_it_eval, instructions as it
from cbdsl.pipelines.data.demo import split_counts
from cbdsl.pipelines.data.importers import read_llava
from cbdsl.pipelines.data.llava import llava_source
from cbdsl.pipelines.data.pool import Pool

ROWS = 3000


@pytest.fixture(scope="module")
def generated():
    return demo_it.generate_demo_it(ROWS, seed=0)


def test_same_rows_and_seed_give_identical_output(generated):
    again = demo_it.generate_demo_it(ROWS, seed=0)
    assert again.pool.equals(generated.pool) and again.defects.equals(generated.defects)
    assert again.images == generated.images
    assert not demo_it.generate_demo_it(ROWS, seed=1).pool.equals(generated.pool)


def test_columns_are_the_llava_importers(generated, tmp_path):
    """The records, written as LLaVA JSON and imported, give the pool's columns exactly."""
    path = tmp_path / "demo-it.json"
    path.write_text(json.dumps(generated.records))
    imported = read_llava(path).frame
    assert imported.equals(generated.pool.drop("image_sha256"))
    assert generated.pool.columns[-1] == "image_sha256"


def test_sources_have_their_shares_and_their_llava_prompts(generated):
    counts = dict(generated.pool.group_by("source").len().iter_rows())
    assert counts == dict(zip(demo_it.SOURCE_SHARES, split_counts(ROWS, demo_it.SOURCE_SHARES)))
    for row in generated.pool.iter_rows(named=True):
        assert llava_source(row["image"], row["question"]) == row["source"]
        assert row["has_image"] == (row["source"] != "sharegpt")


def test_defects_have_their_counts(generated):
    joined = generated.pool.join(generated.defects, on="id")
    for source, n in zip(demo_it.SOURCE_SHARES, split_counts(ROWS, demo_it.SOURCE_SHARES)):
        part = joined.filter(pl.col("source") == source)
        for defect in demo_it.DEFECTS:
            assert part.get_column(defect).sum() == round(demo_it.DEFECT_RATES[source].get(defect, 0) * n), (source, defect)
    flags = joined.select(demo_it.DEFECTS).to_numpy()
    assert (flags.sum(1) <= 1).all()  # at most one defect a row


def test_other_rates_make_another_pool_with_their_counts():
    """with_rates (how the validity benchmark tries other pools) changes the counts and the lineage, nothing
    else; a defect a source cannot have, a rate outside [0, 1] or rates summing above 1 are refused."""
    rates = demo_it.with_rates({"vqa": {"wrong_answer": 0.3}, "sharegpt": {"refusal": 0.0}})
    assert rates["vqa"]["wrong_answer"] == 0.3 and demo_it.DEFECT_RATES["vqa"]["wrong_answer"] != 0.3
    other = demo_it.generate_demo_it(ROWS, rates=rates)
    joined = other.pool.join(other.defects, on="id")
    n = dict(zip(demo_it.SOURCE_SHARES, split_counts(ROWS, demo_it.SOURCE_SHARES)))
    assert joined.filter(pl.col("source") == "vqa").get_column("wrong_answer").sum() == round(0.3 * n["vqa"])
    assert joined.filter(pl.col("source") == "sharegpt").get_column("refusal").sum() == 0
    assert other.lineage["defect_rates"] == rates
    for bad, says in (({"sharegpt": {"unanswerable": 0.1}}, "cannot have"), ({"vqa": {"refusal": 1.5}}, "between"),
                      ({"vqa": {"wrong_answer": 0.9}}, "sum above 1"), ({"laion": {"refusal": 0.1}}, "unknown source"),
                      ({"vqa": {"typo": 0.1}}, "unknown defect")):
        with pytest.raises(ValueError, match=says):
            demo_it.with_rates(bad)


def test_defects_are_what_they_say(generated):
    joined = generated.pool.join(generated.defects, on="id")
    clean = joined.filter(~pl.any_horizontal(list(demo_it.DEFECTS)))
    short = clean.filter(pl.col("task") == "short", ~pl.col("question").str.starts_with("Is "))
    for row in short.iter_rows(named=True):  # a clean short answer is one of the image's attributes
        assert row["answer"] in {row[k] for k in ("shape", "color", "size", "position", "texture")}
    for row in joined.filter(pl.col("refusal")).iter_rows(named=True):
        assert row["answer"] in demo_it.REFUSALS
    for row in joined.filter(pl.col("one_word")).iter_rows(named=True):
        assert row["answer"] == row["shape"].capitalize() + "."
    for row in joined.filter(pl.col("exact_duplicate")).iter_rows(named=True):
        original = joined.filter(pl.col("id") == row["dup_group"]).row(0, named=True)
        assert (row["question"], row["answer"], row["image"]) == (original["question"], original["answer"],
                                                                  original["image"])
    for row in joined.filter(pl.col("near_duplicate")).iter_rows(named=True):
        original = joined.filter(pl.col("id") == row["dup_group"]).row(0, named=True)
        assert row["answer"] == original["answer"] and row["question"] != original["question"]
    for row in joined.filter(pl.col("wrong_answer"), pl.col("task") == "short").iter_rows(named=True):
        truth = {row[k] for k in ("shape", "color", "size", "position", "texture")}
        assert row["answer"] not in truth or row["answer"] in ("yes", "no")


def test_images_are_the_pool_rows_own(generated):
    for row in generated.pool.filter(pl.col("has_image")).iter_rows(named=True):
        assert hashlib.sha256(generated.images[row["image"]]).hexdigest() == row["image_sha256"]


def test_the_suite_is_fixed_and_disjoint_from_the_pool(generated):
    suite = demo_it_eval.eval_suite(50)
    assert suite.equals(demo_it_eval.eval_suite(50))
    assert suite.get_column("benchmark").unique(maintain_order=True).to_list() == list(demo_it_eval.BENCHMARKS)
    pool_images = set(generated.pool.get_column("image_sha256").drop_nulls().to_list())
    assert not pool_images & {hashlib.sha256(b).hexdigest() for b in suite.get_column("image").to_list()}
    pope = suite.filter(pl.col("benchmark") == "pope")
    assert 0.3 < (pope.get_column("answer") == "yes").mean() < 0.7
    mm = suite.filter(pl.col("benchmark") == "mmbench").row(0, named=True)
    assert mm["question"].endswith(it.SHORT) and mm["answer"] in mm["choices"] and len(mm["choices"]) == 4
    assert all(f". {c}" in mm["question"] for c in mm["choices"])


def test_make_demo_it_writes_its_image_folder_and_assets(tmp_path):
    out = CliRunner().invoke(cli, ["pool", "make-demo", str(tmp_path / "p"), "--track", "it", "--rows", "500"])
    assert out.exit_code == 0, out.output
    assert "demo-it pool: 500 rows" in out.output
    pool = Pool.open(tmp_path / "p")
    assert pool.name == "demo-it" and pool.schema["image"] == "image" and pool.card.image_folder == "images"
    assert {a: i.kind for a, i in pool.card.assets.items()} == {"demo-defects": "truth", "mini-vlm-eval": "eval"}
    frame = pool.scan(["image", "image_sha256"]).collect().drop_nulls()
    data = pool.read_images(frame.get_column("image").to_list())
    assert [hashlib.sha256(b).hexdigest() for b in data] == frame.get_column("image_sha256").to_list()


def test_make_demo_keeps_a_current_demo_and_remakes_an_older_one(tmp_path, monkeypatch):
    """A second make-demo is a no-op; a demo of other rates (or an older generator) is refused without
    --overwrite, remade with it, and `init` warns about it (the project CI keeps ~/.cbdsl/pools between runs)."""
    monkeypatch.setenv("CBDSL_POOLS", str(tmp_path / "pools"))
    make = ["pool", "make-demo", "--track", "it", "--rows", "300"]
    assert CliRunner().invoke(cli, make).exit_code == 0
    again = CliRunner().invoke(cli, make)
    assert again.exit_code == 0 and "up to date" in again.output
    target = tmp_path / "pools" / "demo-it"
    demo_it.make_demo_it(target, rows=300, overwrite=True, rates=demo_it.with_rates({"vqa": {"refusal": 0.5}}))
    init = CliRunner().invoke(cli, ["init", str(tmp_path / "sb"), "--track", "it"])
    assert init.exit_code == 0 and "made by another version" in init.output and "--overwrite" in init.output
    refused = CliRunner().invoke(cli, make)
    assert refused.exit_code != 0 and "overwrite" in refused.output
    remade = CliRunner().invoke(cli, [*make, "--overwrite"])
    assert remade.exit_code == 0 and "up to date" not in remade.output
    assert Pool.open(target).card.lineage["defect_rates"] == demo_it.DEFECT_RATES


def test_init_track_it_makes_a_mini_vlm_sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("CBDSL_POOLS", str(tmp_path / "pools"))
    demo_it.make_demo_it(tmp_path / "pools" / "demo-it", rows=300)
    out = CliRunner().invoke(cli, ["init", str(tmp_path / "sb"), "--track", "it"])
    assert out.exit_code == 0, out.output
    assert "pool `demo-it` (300 rows), budget 4000, backend mini-vlm" in out.output
    config = (tmp_path / "sb" / "cbdsl.toml").read_text()
    assert 'backend = "mini-vlm"' in config and "[backend.mini-vlm]" in config and "budget = 4000" in config
    protocol = (tmp_path / "sb" / "PROTOCOL.md").read_text()
    assert "instruction-tuned" in protocol and "refcoco" in protocol
    pool_md = (tmp_path / "sb" / "POOL.md").read_text()
    assert "names an image file" in pool_md and "demo-defects" not in pool_md and "mini-vlm-eval" not in pool_md
    assert "wrong_answer" not in pool_md
    assert 'pool "demo-it"' in (tmp_path / "sb" / "policy.cur").read_text()


def test_init_track_it_makes_the_pool_when_missing(tmp_path, monkeypatch):
    """A private CBDSL_HOME too: a demo-it made earlier in ~/.cbdsl/pools (the main job's) would be found."""
    monkeypatch.setenv("CBDSL_POOLS", str(tmp_path / "pools"))
    monkeypatch.setenv("CBDSL_HOME", str(tmp_path / "home"))
    out = CliRunner().invoke(cli, ["init", str(tmp_path / "sb"), "--track", "it", "--budget", "100"])
    assert out.exit_code == 0, out.output
    assert "making the demo-it pool" in out.output and Pool.open(tmp_path / "pools" / "demo-it").card.rows == 20_000


def test_the_audit_hashes_images_named_by_path(tmp_path):
    """An `image` column of paths: the audit hashes the files (or reads `image_sha256`), flags eval images."""
    from cbdsl.pipelines.data.image_folder import Images
    from cbdsl.pipelines.data.writing import add_asset, write_pool
    from cbdsl.pipelines.engine.audit import audit

    pool = Pool.open(demo_it.make_demo_it(tmp_path / "p", rows=300))
    everything = pool.scan(["id"]).collect()
    assert audit(pool, everything).verdict == "clean"

    suite = demo_it_eval.eval_suite(2)
    folder = tmp_path / "scratch"
    folder.mkdir()
    (folder / "leak.png").write_bytes(suite.get_column("image")[0])
    (folder / "own.png").write_bytes(generated_png())
    frame = pl.DataFrame({"id": ["a", "b", "c"], "image": ["leak.png", "own.png", None], "text": ["x", "y", "z"]})
    small = write_pool(frame, tmp_path / "q", name="q", images=Images(folder, move=True))
    asset = tmp_path / "eval.parquet"
    demo_it_eval.eval_asset(2).write_parquet(asset)
    small = add_asset(small.path, "mini-vlm-eval", asset, kind="eval")
    verdict = audit(small, small.scan(["id"]).collect())
    assert verdict.flagged == 1 and verdict.examples[0]["id"] == "a"


def generated_png() -> bytes:
    return demo_it.generate_demo_it(10, seed=3).images[next(iter(demo_it.generate_demo_it(10, seed=3).images))]
