"""The logical plan and the compiled artifact: step shapes and order, projection, sharing, staleness."""

from __future__ import annotations

import json

import polars as pl
import pytest

from cbdsl.stages import compile_source
from cbdsl.pipelines.loop.artifacts import is_stale, read_last, write_artifact
from cbdsl.compiler.ir import (
    Apply, BudgetStep, Col, DedupStep, Derive, FilterStep, Lit, MixStep, Op, Plan, Scan, Score, SelectStep, Stat, order_computed,
)
from cbdsl.stages import plan
from cbdsl.stages import resolve
from cbdsl.compiler.rules import RULES, optimize
from cbdsl.dsl.diagnostics import PolicyError
from cbdsl.dsl.format import canonical_hash, canonical_text
from cbdsl.dsl.parser import parse
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.writing import add_asset
from conftest_pools import demo_frame, demo_pool, make_pool, policy, run_policy, selected  # noqa: F401 (fixtures)

SCHEMA = {"id": "str", "x": "float", "y": "int", "g": "str", "text": "str", "width": "int", "height": "int",
          "emb": "embedding", "url": "str", "image": "binary", "toks": "int"}


def planned(text: str, schema=SCHEMA) -> Plan:
    return plan(resolve(parse(text, "t.cur"), schema))


def kinds(p: Plan) -> list[str]:
    return [s.step for s in p.steps]


STAGE = {"scan": 0, "score": 1, "derive": 1, "stat": 1, "filter": 2, "dedup": 3, "mix": 4, "budget": 5, "select": 6}

SHAPES = {
    "everything": (
        policy("let n = len(text)",
               "filter n >= quantile(n, 0.3)",
               "filter words(text) > 2 and min(width, height) >= 16 * 2",
               "dedup exact(text)",
               "mix by g { a: 0.5, *: 0.5 }",
               "budget 100",
               "select top n"),
        ["scan", "derive", "stat", "filter", "filter", "dedup", "mix", "budget", "select"],
    ),
    "let reads a statistic": (
        policy("let z = zscore(x) per g", "filter z > 0", "select bottom z"),
        ["scan", "stat", "derive", "filter", "select"],
    ),
    "no filters, no select": (
        policy("budget 10"),
        ["scan", "budget", "select"],
    ),
    "dedup and percent budget": (
        policy("dedup minhash(text, threshold=0.7)", "budget 10%", "select random(seed=3)"),
        ["scan", "dedup", "budget", "select"],
    ),
    "tokens budget": (
        policy("filter x > 0", "budget 1000 tokens of toks", "select top x"),
        ["scan", "filter", "budget", "select"],
    ),
}


@pytest.mark.parametrize("name", SHAPES)
def test_plan_shape(name):
    text, expected = SHAPES[name]
    for p in (planned(text), optimize(planned(text))):
        assert kinds(p) == expected
        stages = [STAGE[k] for k in kinds(p)]
        assert stages == sorted(stages), "steps run scan -> computed -> filters -> dedup -> mix -> budget -> select"


def test_plan_steps_in_detail():
    p = optimize(planned(SHAPES["everything"][0]))
    scan, derive, stat, f1, f2, dedup, mix, budget, select = p.steps
    assert scan == Scan(columns=("g", "height", "id", "text", "width"))
    assert derive == Derive(column="n", expr=Apply(fn="len", args=(Col(name="text"),)))
    assert stat == Stat(column="quantile(n, 0.3)", stat="quantile", arg=Col(name="n"),
                        params={"q": 0.3, "method": "linear"})
    assert f1.clause == "filter n >= quantile(n, 0.3)"
    assert f1.predicate == Op(name=">=", args=(Col(name="n"), Col(name="quantile(n, 0.3)")))
    assert f2.predicate.args[1].args[1] == Lit(value=32)  # folded: 16 * 2
    assert dedup == DedupStep(clause="dedup exact(text)", method="exact", args=(Col(name="text"),))
    assert mix == MixStep(clause="mix by g { a: 0.5, *: 0.5 }", by="g", groups=("a",), weights=(0.5,), star=0.5)
    assert budget == BudgetStep(clause="budget 100", unit="rows", amount=100)
    assert select == SelectStep(clause="select top n", strategy="top", args=(Col(name="n"),))
    assert p.rules == ("fold_constants", "share_subexpressions", "order_predicates", "prune_projection")


def test_default_select_is_random_seed_0():
    select = planned(policy("budget 5")).steps[-1]
    assert (select.strategy, select.params) == ("random", {"seed": 0})


def test_budget_steps():
    assert planned(policy("budget 1.5%")).of(BudgetStep)[0].model_dump(include={"unit", "amount"}) == \
        {"unit": "percent", "amount": 1.5}
    tokens = planned(policy("budget 2_000 tokens of toks")).of(BudgetStep)[0]
    assert (tokens.unit, tokens.amount, tokens.of) == ("tokens", 2000, Col(name="toks"))


def test_same_statistic_written_twice_is_one_step():
    text = policy("filter x >= quantile(x, 0.3)", "filter y <= 4 or x < quantile(x, 0.3) + 1")
    raw = planned(text)
    assert len(raw.of(Stat)) == 2  # the planner emits one per occurrence
    p = optimize(raw)
    assert [s.column for s in p.of(Stat)] == ["quantile(x, 0.3)"]
    assert all("quantile(x, 0.3)" in f.reads for f in p.of(FilterStep))


def test_different_statistics_stay_apart():
    text = policy("filter x >= quantile(x, 0.3)", "filter x >= quantile(x, 0.3) per g",
                  "filter x >= quantile(x, 0.3) among (y > 2)", 'filter x >= quantile(x, 0.3, method="lower")')
    assert [s.column for s in optimize(planned(text)).of(Stat)] == [
        "quantile(x, 0.3)", "quantile(x, 0.3) per g", "quantile(x, 0.3) among (y > 2)",
        'quantile(x, 0.3, method="lower")']


def test_a_function_used_twice_is_derived_once():
    p = optimize(planned(policy("filter words(text) > 2", "budget 10", "select top words(text)")))
    assert p.of(Derive) == [Derive(column="words(text)", expr=Apply(fn="words", args=(Col(name="text"),)))]
    assert p.of(FilterStep)[0].predicate == Op(name=">", args=(Col(name="words(text)"), Lit(value=2)))
    assert p.of(SelectStep)[0].args == (Col(name="words(text)"),)


def test_computed_steps_are_put_in_dependency_order():
    score = Score(column="s", scorer="clip_score", cost="gpu_model")
    stat = Stat(column="mean(d)", stat="mean", arg=Col(name="d"))
    derive = Derive(column="d", expr=Op(name="*", args=(Col(name="s"), Lit(value=2))))
    later = Derive(column="e", expr=Op(name="-", args=(Col(name="d"), Col(name="mean(d)"))))
    select = SelectStep(clause="select top e", strategy="top", args=(Col(name="e"),))
    p = Plan(steps=(Scan(columns=("id",)), later, stat, derive, score, select))
    assert order_computed(p).steps == (Scan(columns=("id",)), score, derive, stat, later, select)


def test_required_scorers_of_a_plan():
    score = Score(column='clip_score(model="ViT-L-14")', scorer="clip_score", params={"model": "ViT-L-14"},
                  cost="gpu_model")
    p = Plan(steps=(Scan(columns=("id",)), score, SelectStep(clause="s", strategy="top", args=(Col(name=score.column),))))
    assert p.required_scorers == [{"scorer": "clip_score", "params": {"model": "ViT-L-14"},
                                   "column": 'clip_score(model="ViT-L-14")', "cost": "gpu_model"}]


def test_plan_json_round_trips():
    p = optimize(planned(SHAPES["everything"][0]))
    again = Plan.model_validate(json.loads(json.dumps(p.model_dump(mode="json"))))
    assert again == p
    assert again.digest() == p.digest()


# --- projection pruning ------------------------------------------------------------------------


def test_text_policy_does_not_scan_the_image(demo_pool):
    text = policy("filter words(text) > 2", "filter len(text) <= quantile(len(text), 0.9) per source",
                  "budget 50", "select top len(text)", pool="demo")
    compiled = compile_source(text, "t.cur", demo_pool)
    assert compiled.plan.scan.columns == ("id", "source", "text")
    assert compiled.artifact["required"]["columns"] == ["id", "source", "text"]


def test_only_the_planned_columns_are_read(demo_pool, monkeypatch):
    reads: list[list[str] | None] = []
    original = Pool.scan

    def spy(self, columns=None):
        reads.append(None if columns is None else list(columns))
        return original(self, columns)

    monkeypatch.setattr(Pool, "scan", spy)
    text = policy("filter words(text) > 2", "mix by source { coco: 0.5, *: 0.5 }", "budget 50", pool="demo")
    _c, result = run_policy(text, demo_pool)
    assert result.selection.height == 50
    assert reads and all(r is not None and "image" not in r and set(r) <= {"id", "source", "text"} for r in reads)


def test_prune_keeps_columns_of_every_step_kind():
    text = policy("filter x > quantile(x, 0.5) per g among (y > 1)", "dedup exact(url)", "mix by g { a: 1 }",
                  "budget 10 tokens of toks", "select stratified(width)")
    assert optimize(planned(text)).scan.columns == ("g", "id", "toks", "url", "width", "x", "y")


def test_constant_filter_prunes_its_columns():
    # `or true` folds the whole predicate to true: the filter reads nothing, so neither does the scan
    p = optimize(planned(policy("filter width > 10 or true", "budget 5", "select top x")))
    assert p.scan.columns == ("id", "x")
    assert p.of(FilterStep)[0].predicate == Lit(value=True)


@pytest.mark.parametrize("expr", ["width(image) >= 40", "aspect_ratio(image) <= 1.2", "area(image) >= 1600"])
def test_image_scorers_read_the_pools_size_columns(demo_pool, demo_frame, expr):
    kept = selected(policy(f"filter {expr}", pool="demo"), demo_pool)
    frame = demo_frame.with_columns(area=pl.col("width") * pl.col("height"),
                                    aspect_ratio=pl.max_horizontal("width", "height") / pl.min_horizontal("width", "height"))
    column, op, value = expr.replace("(image)", "").split()
    expected = frame.filter(pl.col(column) >= float(value) if op == ">=" else pl.col(column) <= float(value))
    assert sorted(kept) == sorted(expected["id"])


def test_image_scorers_decode_the_bytes_when_the_pool_has_no_size_columns(demo_pool, demo_frame, tmp_path):
    images = make_pool(tmp_path / "images", demo_pool.scan(["id", "image"]).collect())
    kept = selected(policy("filter width(image) >= 40 and height(image) < 48"), images)
    expected = demo_frame.filter((pl.col("width") >= 40) & (pl.col("height") < 48))["id"]
    assert sorted(kept) == sorted(expected)


@pytest.mark.parametrize("items", ["[32, -4]", "[16 * 2, 48]"])
def test_list_items_may_be_constant_expressions(demo_pool, demo_frame, items):
    kept = selected(policy(f"filter width in {items}", pool="demo"), demo_pool)
    wanted = {32, -4} if "-4" in items else {32, 48}
    assert sorted(kept) == sorted(demo_frame.filter(pl.col("width").is_in(list(wanted)))["id"])


@pytest.mark.parametrize(("column", "items"), [("x", "[1, 3]"), ("k", "[1.0, 3.0]")])
def test_in_list_of_numbers_of_the_other_numeric_type(tmp_path, column, items):
    pool = make_pool(tmp_path / "t", {"id": ["1", "2", "3"], "x": [1.0, 2.0, 3.0], "k": [1, 2, 3]})
    assert sorted(selected(policy(f"filter {column} in {items}"), pool)) == ["1", "3"]


# --- the compiled artifact ---------------------------------------------------------------------

POLICY = """# a comment
policy "artifact"
cite random

pool "t"

filter x >= quantile(x, 0.3)
filter words(text) > 2
filter id in asset("keep-ids")

budget 5
select top x
"""


@pytest.fixture
def small_pool(tmp_path):
    frame = pl.DataFrame({"id": [f"a{i}" for i in range(20)], "x": [float(i) for i in range(20)],
                          "text": ["one two three"] * 20})
    pool = make_pool(tmp_path / "t", frame)
    (tmp_path / "keep.txt").write_text("\n".join(f"a{i}" for i in range(0, 20, 2)) + "\n")
    return Pool.open(add_asset(pool.path, "keep-ids", tmp_path / "keep.txt").path)


def test_artifact_holds_what_a_run_needs(small_pool):
    compiled = compile_source(POLICY, "policy.cur", small_pool)
    a = json.loads(json.dumps(compiled.artifact))  # plain JSON
    assert set(a) >= {"artifact_version", "cbdsl_version", "source", "canonical_text", "policy_hash", "source_sha256",
                      "ast", "plan", "required", "pool", "catalogue_hash"}
    assert a["source"] == "policy.cur"
    assert a["canonical_text"] == canonical_text(parse(POLICY, "policy.cur"))
    assert "# a comment" not in a["canonical_text"] and 'filter x >= quantile(x, 0.3)' in a["canonical_text"]
    assert a["policy_hash"] == canonical_hash(parse(POLICY, "policy.cur"))
    assert a["ast"]["node"] == "policy_file"
    assert Plan.model_validate(a["plan"]) == compiled.plan
    assert a["required"] == {"scorers": [], "columns": ["id", "text", "x"]}
    assert a["pool"]["name"] == "t" and a["pool"]["content_hash"] == small_pool.content_hash
    assert a["pool"]["assets"] == {"keep-ids": small_pool.card.assets["keep-ids"].sha256}
    assert len(a["catalogue_hash"]) == 64 and len(a["source_sha256"]) == 64


def test_policy_hash_ignores_order_comments_and_spacing(small_pool):
    a = compile_source(POLICY, "p.cur", small_pool).artifact
    reordered = POLICY.replace("filter x >= quantile(x, 0.3)\nfilter words(text) > 2\n",
                               "filter words(text)>2   # spaced\nfilter x >= quantile(x, 0.3)\n")
    b = compile_source(reordered, "p.cur", small_pool).artifact
    assert b["policy_hash"] == a["policy_hash"]
    assert b["canonical_text"] == a["canonical_text"]
    assert b["source_sha256"] != a["source_sha256"]
    assert compile_source(POLICY.replace("budget 5", "budget 6"), "p.cur", small_pool).artifact["policy_hash"] \
        != a["policy_hash"]


def test_is_stale_detects_a_changed_policy_and_pool(small_pool, tmp_path):
    a = compile_source(POLICY, "policy.cur", small_pool).artifact
    assert is_stale(a, POLICY, small_pool) is None
    assert is_stale(a, POLICY.replace("budget 5", "budget 6"), small_pool) == "policy.cur changed since it was compiled"
    # the same rows (and asset) written again: same content hash, not stale
    frame = small_pool.scan().collect()
    same = add_asset(make_pool(tmp_path / "same", frame).path, "keep-ids", tmp_path / "keep.txt")
    assert same.content_hash == small_pool.content_hash
    assert is_stale(a, POLICY, same) is None
    # one value changed: a new content hash
    changed = make_pool(tmp_path / "changed", frame.with_columns(pl.when(pl.col("id") == "a3").then(99.0)
                                                                 .otherwise(pl.col("x")).alias("x")))
    assert changed.content_hash != small_pool.content_hash
    assert is_stale(a, POLICY, changed) == "pool `t` changed since the policy was compiled"
    # an asset the policy names changed
    (tmp_path / "keep2.txt").write_text("a1\na3\n")
    other = add_asset(small_pool.path, "keep-ids", tmp_path / "keep2.txt")
    assert is_stale(a, POLICY, other) == "asset `keep-ids` of pool `t` changed since the policy was compiled"


def test_write_artifact_and_read_last(small_pool, tmp_path):
    compiled = compile_source(POLICY, "policy.cur", small_pool)
    path = write_artifact(compiled.artifact, tmp_path / ".cbdsl")
    assert path.parent == tmp_path / ".cbdsl" / "compiled"
    assert path.name == compiled.artifact["policy_hash"][:16] + ".json"
    assert read_last(tmp_path / ".cbdsl") == json.loads(json.dumps(compiled.artifact))
    assert json.loads((tmp_path / ".cbdsl" / "last.json").read_text())["source"] == "policy.cur"


def test_compile_refuses_a_policy_with_errors(small_pool):
    with pytest.raises(PolicyError) as err:
        compile_source(policy("filter nope > 1"), "bad.cur", small_pool)
    assert [d.code for d in err.value.diagnostics] == ["E101"]


def test_compiled_plan_runs(small_pool):
    _c, result = run_policy(POLICY, small_pool)
    # x >= quantile(x, .3) = 5.7 and an even id: a6, a8, ..., a18; top 5 by x
    assert result.selection["id"].to_list() == ["a18", "a16", "a14", "a12", "a10"]


def test_rules_are_the_documented_sequence():
    assert [r.__name__ for r in RULES] == ["fold_constants", "share_subexpressions", "order_predicates",
                                           "prune_projection"]
