"""`cbdsl compile | run | explain | why | pool ...`: files written, exports, exit codes, no tracebacks.

The commands run in-process through ``click.testing.CliRunner`` in a
temporary working directory, with ``$CBDSL_POOLS`` pointing at a folder of
named pools: ``demo`` (the 2,000-row demo pool), ``datacomp-small`` (100
DataComp metadata rows, imported from generated parquet) and ``llava-mini``
(the 30 LLaVA records of ``tests/data/pool_fixtures.py``).
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.data.uids import uids_from_pairs
from cbdsl.pipelines.data.importers import import_pool
from cbdsl.pipelines.data.pool import Pool
from conftest_pools import demo_pool, write_datacomp_pool  # noqa: F401 (fixtures)
from pool_fixtures import LLAVA_CASES, write_llava  # conftest_pools put tests/data on the path

DEMO_POLICY = """policy "cli-demo"
pool "demo"

filter words(text) > 2
filter len(text) <= quantile(len(text), 0.9) per source

dedup exact(text)

mix by source { coco: 0.4, *: 0.6 }

budget 300
select top len(text)
"""


@pytest.fixture(scope="module")
def pools(tmp_path_factory, demo_pool):
    root = tmp_path_factory.mktemp("cli-pools")
    src = tmp_path_factory.mktemp("cli-sources")
    (root / "demo").symlink_to(demo_pool.path)
    write_datacomp_pool(root / "datacomp-small", 100, src)
    import_pool("llava", write_llava(src / "llava.json"), root / "llava-mini", name="llava-mini")
    return root


@pytest.fixture
def cbdsl(pools, tmp_path, monkeypatch):
    """Run `cbdsl ARGS` in tmp_path with $CBDSL_POOLS set; every output is checked for tracebacks."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no pool of the real home is found by name

    def invoke(*args: str, input: str | None = None):
        result = CliRunner().invoke(cli, list(args), input=input)
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        return result

    return invoke


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- compile ------------------------------------------------------------------------------


def test_compile_writes_the_artifact_and_last(cbdsl, tmp_path):
    write(tmp_path / "policy.cur", DEMO_POLICY)
    result = cbdsl("compile", "policy.cur")
    assert result.exit_code == 0, result.output
    compiled = list((tmp_path / ".cbdsl" / "compiled").glob("*.json"))
    assert len(compiled) == 1
    artifact = json.loads(compiled[0].read_text())
    last = json.loads((tmp_path / ".cbdsl" / "last.json").read_text())
    assert last == {"artifact": f"compiled/{compiled[0].name}", "source": "policy.cur"}
    assert compiled[0].name == artifact["policy_hash"][:16] + ".json"
    assert artifact["pool"]["name"] == "demo"
    assert artifact["required"]["columns"] == ["id", "source", "text"]
    # the plan, one line per step with its cost class, and what to do next
    for line in ("scan        id, source, text", "statistic   quantile(len(text), 0.9) per source",
                 "filter      filter words(text) > 2", "dedup       dedup exact(text)", "budget      budget 300",
                 "select      select top len(text)", "rules: fold_constants, share_subexpressions",
                 "next: `cbdsl run policy.cur`"):
        assert line in result.output


def test_compile_json(cbdsl, tmp_path):
    write(tmp_path / "policy.cur", DEMO_POLICY)
    result = cbdsl("compile", "--json", "policy.cur")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["artifact_path"].endswith(".json")
    assert [s["step"] for s in data["plan"]["steps"]] == [
        "scan", "derive", "stat", "filter", "filter", "dedup", "mix", "budget", "select"]


def test_compile_a_policy_with_errors_exits_1(cbdsl, tmp_path):
    write(tmp_path / "bad.cur", 'pool "demo"\nfilter wordz(text) > 2\n')
    result = cbdsl("compile", "bad.cur")
    assert result.exit_code == 1
    assert "E102" in result.output and "not compiled" in result.output
    assert not (tmp_path / ".cbdsl").exists()


# --- run ----------------------------------------------------------------------------------


def test_run_writes_the_parquet_manifest(cbdsl, tmp_path, demo_pool):
    write(tmp_path / "policy.cur", DEMO_POLICY)
    result = cbdsl("run", "policy.cur", "--out", "sel")
    assert result.exit_code == 0, result.output
    manifest = pl.read_parquet(tmp_path / "sel" / "selection.parquet")
    assert manifest.columns == ["id", "group", "score", "rank"]
    assert manifest.height == 300 and manifest["id"].n_unique() == 300
    assert set(manifest["group"]) == {"coco", "*"}
    assert "selected 300 of 2000 rows" in result.output
    ids = set(demo_pool.scan(["id"]).collect()["id"])
    assert set(manifest["id"]) <= ids


def test_run_json_summary(cbdsl, tmp_path):
    write(tmp_path / "policy.cur", DEMO_POLICY)
    result = cbdsl("run", "--json", "policy.cur", "--out", "sel")
    summary = json.loads(result.output)
    assert summary["selected"] == 300 and summary["pool_rows"] == 2000
    assert summary["survivors"] >= summary["after_dedup"] >= 300
    assert sum(g["quota"] for g in summary["groups"].values()) == 300
    assert len(summary["selection_hash"]) == 64
    assert summary["manifest"].endswith("selection.parquet")


def test_run_datacomp_format_writes_a_subset_file(cbdsl, tmp_path, pools):
    text = ('pool "datacomp-small"\n'
            "filter clip_l14_similarity_score >= quantile(clip_l14_similarity_score, 0.5)\n"
            "filter words(text) > 2\n")
    write(tmp_path / "dc.cur", text)
    result = cbdsl("run", "dc.cur", "--out", "dc", "--format", "datacomp")
    assert result.exit_code == 0, result.output
    subset = np.load(tmp_path / "dc" / "subset.npy")
    assert subset.dtype == np.dtype("u8,u8")
    pairs = [(int(a), int(b)) for a, b in subset.tolist()]
    assert pairs == sorted(pairs)  # sorted, as DataComp's resharder expects
    manifest = pl.read_parquet(tmp_path / "dc" / "selection.parquet")
    assert sorted(uids_from_pairs(subset)) == sorted(manifest["id"])
    # by hand: the median of the whole pool, then more than two words
    pool = Pool.open(pools / "datacomp-small").scan(["id", "text", "clip_l14_similarity_score"]).collect()
    median = np.quantile(pool["clip_l14_similarity_score"].to_numpy(), 0.5)
    expected = pool.filter((pl.col("clip_l14_similarity_score") >= median)
                           & (pl.col("text").str.count_matches(r"\S+") > 2))["id"]
    assert sorted(manifest["id"]) == sorted(expected)


def test_run_llava_format_writes_the_original_records(cbdsl, tmp_path):
    write(tmp_path / "ll.cur", 'pool "llava-mini"\nfilter source in ["vqa", "gqa", "sharegpt"]\nbudget 8\n'
                               "select random(seed=2)\n")
    result = cbdsl("run", "ll.cur", "--out", "ll", "--format", "llava")
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "ll" / "llava.json").read_text())
    manifest = pl.read_parquet(tmp_path / "ll" / "selection.parquet")
    assert [str(r["id"]) for r in records] == manifest["id"].to_list()  # selection order
    originals = {str(rec["id"]): rec for rec, _ in LLAVA_CASES}
    sources = {str(rec["id"]): source for rec, source in LLAVA_CASES}
    assert all(r == originals[str(r["id"])] for r in records)
    assert {sources[str(r["id"])] for r in records} <= {"vqa", "gqa", "sharegpt"}


def test_run_datacomp_format_on_a_demo_pool_is_a_usage_error(cbdsl, tmp_path):
    write(tmp_path / "policy.cur", DEMO_POLICY)
    result = cbdsl("run", "policy.cur", "--out", "x", "--format", "datacomp")
    assert result.exit_code == 2
    assert "32 lowercase hex uids" in result.output


def test_run_budget_shortfall_exits_1_naming_the_clauses(cbdsl, tmp_path):
    write(tmp_path / "short.cur", 'pool "demo"\nfilter width >= 48\nfilter words(text) > 8\nbudget 1500\n')
    result = cbdsl("run", "short.cur")
    assert result.exit_code == 1
    assert "fewer than the budget of 1500" in result.output
    assert "`filter width >= 48` removed" in result.output and "`filter words(text) > 8` removed" in result.output
    assert "hint:" in result.output and "cbdsl explain --run" in result.output
    assert not (tmp_path / "selection").exists()


def test_unknown_pool_is_a_usage_error_telling_how_to_make_the_demo(cbdsl, tmp_path, monkeypatch):
    monkeypatch.setenv("CBDSL_POOLS", str(tmp_path / "empty"))
    write(tmp_path / "policy.cur", DEMO_POLICY)
    for command in ("run", "compile", "explain"):
        result = cbdsl(command, "policy.cur")
        assert result.exit_code == 2
        assert "unknown pool 'demo'" in result.output
        assert "cbdsl pool make-demo" in result.output


def test_unknown_pool_names_the_known_ones(cbdsl, tmp_path):
    write(tmp_path / "p.cur", 'pool "dem"\nbudget 5\n')
    result = cbdsl("run", "p.cur")
    assert result.exit_code == 2
    assert "unknown pool 'dem'" in result.output and "`demo`" in result.output


def test_policy_without_pool_is_a_usage_error(cbdsl, tmp_path):
    write(tmp_path / "p.cur", "budget 5\n")
    result = cbdsl("run", "p.cur")
    assert result.exit_code == 2
    assert 'add `pool "demo"`' in result.output


def test_pool_option_overrides_the_policy(cbdsl, tmp_path, pools):
    write(tmp_path / "p.cur", 'pool "nowhere"\nbudget 5\nselect random(seed=1)\n')
    result = cbdsl("run", "p.cur", "--pool", str(pools / "demo"), "--out", "o")
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "o" / "selection.parquet").height == 5


# --- explain and why ------------------------------------------------------------------------


def test_explain_without_run_shows_the_plan(cbdsl, tmp_path):
    write(tmp_path / "policy.cur", DEMO_POLICY)
    result = cbdsl("explain", "policy.cur")
    assert result.exit_code == 0
    assert "plan of policy.cur on pool `demo` (2000 rows):" in result.output
    assert "metadata   filter      filter words(text) > 2" in result.output
    assert "`cbdsl explain --run`" in result.output


def test_explain_run_shows_funnel_thresholds_and_dropped_rows(cbdsl, tmp_path, demo_pool):
    write(tmp_path / "policy.cur", DEMO_POLICY)
    result = cbdsl("explain", "--run", "policy.cur")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "filter funnel" in out
    assert "2000 ->" in out and "filter words(text) > 2" in out
    assert out.count("dropped: {") == 6  # 3 examples for each of 2 filters
    assert "statistics resolved to:" in out
    assert "quantile(len(text), 0.9) per source = {" in out
    assert "dedup" in out and "mix groups" in out and "selected 300 rows" in out

    data = json.loads(cbdsl("explain", "--run", "--json", "policy.cur").output)
    frame = demo_pool.scan(["id", "text", "source"]).collect()
    words_pass = int((frame["text"].str.count_matches(r"\S+") > 2).sum())
    assert data["funnel"][0] == {"clause": "filter words(text) > 2", "rows_in": 2000, "rows_out": words_pass,
                                 "passed_alone": words_pass}
    assert data["funnel"][1]["rows_in"] == words_pass
    expected = {s: np.quantile(g["text"].str.len_chars().to_numpy(), 0.9)
                for (s,), g in frame.group_by(["source"])}
    got = data["thresholds"]["quantile(len(text), 0.9) per source"]
    assert got == pytest.approx(expected)
    dropped = data["dropped_examples"]["filter words(text) > 2"]
    assert len(dropped) == 3 and all(len(d["text"].split()) <= 2 for d in dropped)
    assert data["selected"] == 300
    assert data["after_dedup"]["rows_in"] == data["funnel"][-1]["rows_out"]


@pytest.mark.parametrize("n", [1, 5])
def test_explain_examples_option_sets_the_dropped_rows_shown(cbdsl, tmp_path, n):
    write(tmp_path / "policy.cur", DEMO_POLICY)
    data = json.loads(cbdsl("explain", "--run", "--json", "--examples", str(n), "policy.cur").output)
    assert [len(v) for v in data["dropped_examples"].values()] == [n, n]
    text = cbdsl("explain", "--run", "--examples", str(n), "policy.cur").output
    assert text.count("dropped: {") == 2 * n


def test_why_a_selected_a_filtered_and_a_deduplicated_row(cbdsl, tmp_path, demo_pool):
    write(tmp_path / "policy.cur", DEMO_POLICY)
    assert cbdsl("run", "policy.cur", "--out", "sel").exit_code == 0
    manifest = pl.read_parquet(tmp_path / "sel" / "selection.parquet")
    frame = demo_pool.scan(["id", "text"]).collect().with_columns(w=pl.col("text").str.count_matches(r"\S+"))

    kept = manifest["id"][0]
    out = json.loads(cbdsl("why", "--json", kept, "policy.cur").output)
    assert out["selected"] is True and out["rank"] == 1 and out["passed_filters"] is True and out["dedup"] == "kept"
    text = cbdsl("why", kept, "policy.cur").output
    assert f"{kept}: selected, rank 1" in text

    short = frame.filter(pl.col("w") <= 2)["id"][0]
    out = json.loads(cbdsl("why", "--json", short, "policy.cur").output)
    assert out["passed_filters"] is False and out["selected"] is False and out["dedup"] is None
    assert out["filters"][0]["clause"] == "filter words(text) > 2" and out["filters"][0]["passed"] is False
    assert "DROPPED by `filter words(text) > 2`" in cbdsl("why", short, "policy.cur").output

    # a duplicate: a text shared by several rows that pass the filters; dedup keeps the lowest id hash
    from cbdsl.pipelines.engine.kernels import hashing

    dups = frame.filter((pl.col("w") > 2) & pl.col("text").is_duplicated())
    dups = dups.with_columns(h=pl.Series(hashing.hash_strings(dups["id"])))
    loser = None
    for _text, group in dups.group_by("text", maintain_order=True):
        outcomes = {i: json.loads(cbdsl("why", "--json", i, "policy.cur").output) for i in group["id"]}
        removed = [i for i, o in outcomes.items() if o["dedup"] == "removed as a duplicate"]
        if removed:
            assert sum(o["dedup"] == "kept" for o in outcomes.values()) == 1
            loser = removed[0]
            break
    assert loser is not None
    assert f"dedup: removed as a duplicate" in cbdsl("why", loser, "policy.cur").output


def test_why_unknown_row_is_a_usage_error(cbdsl, tmp_path):
    write(tmp_path / "policy.cur", DEMO_POLICY)
    result = cbdsl("why", "no-such-row", "policy.cur")
    assert result.exit_code == 2
    assert "no row with id 'no-such-row'" in result.output


# --- pools --------------------------------------------------------------------------------------


def test_pool_info(cbdsl):
    result = cbdsl("pool", "info", "demo")
    assert result.exit_code == 0
    assert "pool demo: 2000 rows in 1 shard(s), id column `id`" in result.output
    assert "demo-defects" in result.output and "source" in result.output
    card = json.loads(cbdsl("pool", "info", "--json", "demo").output)
    assert card["rows"] == 2000 and card["schema"]["image"] == "binary"


def test_pool_info_of_a_missing_pool(cbdsl):
    result = cbdsl("pool", "info", "nope")
    assert result.exit_code == 2
    assert "unknown pool 'nope'" in result.output


def test_pool_make_demo_and_add_asset_then_use_it(cbdsl, tmp_path):
    result = cbdsl("pool", "make-demo", "--rows", "500", "d500")
    assert result.exit_code == 0, result.output
    assert "demo pool: 500 rows" in result.output
    pool = Pool.open(tmp_path / "d500")
    assert pool.card.rows == 500 and "demo-defects" in pool.card.assets
    ids = pool.scan(["id"]).collect()["id"].to_list()[:40]
    write(tmp_path / "keep-ids.txt", "\n".join(ids) + "\n")
    result = cbdsl("pool", "add-asset", "d500", "keep-ids", "keep-ids.txt")
    assert result.exit_code == 0, result.output
    assert 'asset("keep-ids")' in result.output
    assert Pool.open(tmp_path / "d500").card.assets["keep-ids"].kind == "ids"
    write(tmp_path / "a.cur", 'pool "d500"\nfilter id in asset("keep-ids")\nbudget 40\n')
    result = cbdsl("run", "a.cur", "--pool", "./d500", "--out", "a")
    assert result.exit_code == 0, result.output
    assert sorted(pl.read_parquet(tmp_path / "a" / "selection.parquet")["id"]) == sorted(ids)


def test_pool_add_asset_bad_input_is_a_usage_error(cbdsl, tmp_path):
    assert cbdsl("pool", "make-demo", "--rows", "100", "d").exit_code == 0
    write(tmp_path / "x.bin", "??")
    result = cbdsl("pool", "add-asset", "./d", "Bad Name", "x.bin")
    assert result.exit_code == 2
    assert "not a valid asset name" in result.output


def test_an_asset_the_pool_lacks_is_E113_at_compile_time(cbdsl, tmp_path):
    assert cbdsl("pool", "make-demo", "--rows", "100", "d").exit_code == 0
    write(tmp_path / "a.cur", 'pool "d"\nfilter id in asset("icons-133k")\n')
    result = cbdsl("run", "a.cur", "--pool", "./d")
    assert result.exit_code == 1
    assert "E113" in result.output and "has no asset `icons-133k`" in result.output
    assert "cbdsl pool add-asset" in result.output


@pytest.mark.parametrize("command", ["explain", "why"])
def test_explain_and_why_on_a_filter_that_reads_the_id(cbdsl, tmp_path, command):
    write(tmp_path / "ids.cur", 'pool "demo"\nfilter id != "d000000"\nfilter words(text) > 2\nbudget 10\n')
    args = ["explain", "--run", "--json", "ids.cur"] if command == "explain" else ["why", "--json", "d000000", "ids.cur"]
    result = cbdsl(*args)
    assert result.exit_code == 0
    data = json.loads(result.output)
    if command == "explain":
        assert data["funnel"][0]["clause"] == 'filter id != "d000000"'
        assert data["funnel"][0]["rows_out"] == 1999
    else:
        assert data["filters"][0] == {"clause": 'filter id != "d000000"', "passed": False,
                                      "values": {"id": "d000000"}}
