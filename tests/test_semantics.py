"""The fixed semantics of DESIGN.md (1-7), each pinned by a test that fails if it breaks.

Policies run through the public API, stage by stage (``compile_source`` ->
``lower`` -> ``execute``), on small hand-made pools where exact values
matter (expectations computed by hand or with NumPy, never with cbdsl
itself), and on the 2,000-row demo pool where a realistic population
matters. Every tie is expected to go to the lowest
``hashing.hash_strings(id)``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from cbdsl.pipelines.engine.kernels import hashing
from cbdsl.pipelines.engine.kernels import kcenter
from cbdsl.pipelines.engine.kernels import quotas
from cbdsl.stages import lower
from cbdsl.compiler.ir import Apply, Col, FilterStep, Lit, Op, Plan, Scan, Score, SelectStep, Stat
from cbdsl.compiler.rules import optimize
from cbdsl.scorers.api import RunError
from cbdsl.pipelines.engine.execute import execute
from cbdsl.pipelines.data.exports import export
from conftest_pools import (  # noqa: F401 (fixtures)
    demo_defects, demo_frame, demo_pool, make_pool, policy, run_policy, selected,
)


def id_hash(ids) -> dict[str, int]:
    ids = list(ids)
    return dict(zip(ids, hashing.hash_strings(ids).tolist()))


def by_hash(ids) -> list[str]:
    """Ids in tie-breaking order: lowest id hash first."""
    h = id_hash(ids)
    return sorted(h, key=h.__getitem__)


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """Small pools made for this module, by name."""
    root = tmp_path_factory.mktemp("semantics")
    return lambda name, frame, **kw: make_pool(root / name, frame, **kw)


# --- 1. filters: statistics over the whole filter-stage population ------------------------------

# x = 1..10; `ok` holds for x in {1, 2, 3, 4, 9, 10}. The median over the whole
# pool is 5.5; over the rows that pass `ok` it would be 3.5.
TEN = {"id": [f"r{i:02d}" for i in range(1, 11)], "x": [float(i) for i in range(1, 11)],
       "ok": [True, True, True, True, False, False, False, False, True, True]}


@pytest.mark.parametrize("order", ["quantile first", "ok first"])
def test_quantile_is_over_the_whole_filter_population(pools, order):
    pool = pools("ten", TEN) if order == "quantile first" else pools("ten2", TEN)
    clauses = ["filter x >= quantile(x, 0.5)", "filter ok"]
    if order == "ok first":
        clauses.reverse()
    _c, result = run_policy(policy(*clauses), pool, explain=True)
    assert result.thresholds == {"quantile(x, 0.5)": 5.5} == {"quantile(x, 0.5)": np.quantile(TEN["x"], 0.5)}
    # over the survivors of `ok` the median is 3.5 and r04 would pass too
    assert sorted(result.selection["id"]) == ["r09", "r10"]


@pytest.mark.parametrize("method", ["linear", "lower", "higher", "nearest", "midpoint"])
def test_quantile_methods_match_numpy(pools, method):
    rng = np.random.default_rng(7)
    x = rng.normal(size=41).round(4)
    frame = {"id": [f"q{i:02d}" for i in range(41)], "x": x, "y": rng.integers(0, 10, 41)}
    pool = pools(f"q-{method}", frame)
    text = policy(f'filter x >= quantile(x, 0.37, method="{method}")', "filter y > 3")
    _c, result = run_policy(text, pool, explain=True)
    threshold = np.quantile(x, 0.37, method=method)
    assert list(result.thresholds.values()) == [pytest.approx(threshold, abs=0, rel=1e-12)]
    expected = [i for i, xi, yi in zip(frame["id"], x, frame["y"]) if xi >= threshold and yi > 3]
    assert sorted(result.selection["id"]) == expected


def test_quantile_per_group_is_over_each_whole_group(pools):
    # a: 1..6 (median 3.5), b: 10, 20, 30, 40 (median 25); `keep` drops a's top and b's bottom rows
    frame = {"id": [f"p{i}" for i in range(10)], "g": ["a"] * 6 + ["b"] * 4,
             "x": [1.0, 2, 3, 4, 5, 6, 10, 20, 30, 40],
             "keep": [True, True, True, True, False, False, False, True, True, True]}
    pool = pools("per", frame)
    _c, result = run_policy(policy("filter keep", "filter x >= quantile(x, 0.5) per g"), pool, explain=True)
    assert result.thresholds == {"quantile(x, 0.5) per g": {"a": 3.5, "b": 25.0}}
    assert sorted(result.selection["id"]) == ["p3", "p8", "p9"]  # a: 4; b: 30, 40


def test_quantile_among_is_over_the_named_subset(pools):
    # among `big`: x in {5, 6, 7, 8} -> median 6.5; rows outside `big` get the same threshold
    frame = {"id": [f"m{i}" for i in range(8)], "x": [1.0, 2, 9, 10, 5, 6, 7, 8],
             "big": [False, False, False, False, True, True, True, True]}
    pool = pools("among", frame)
    _c, result = run_policy(policy("filter x >= quantile(x, 0.5) among (big)"), pool, explain=True)
    assert result.thresholds == {"quantile(x, 0.5) among big": 6.5}
    assert sorted(result.selection["id"]) == ["m2", "m3", "m6", "m7"]  # 9 and 10 are outside `big` but pass


def test_mean_and_std_are_over_the_whole_population(pools):
    x = [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    frame = {"id": [f"s{i}" for i in range(10)], "x": x, "odd": [i % 2 == 1 for i in range(10)]}
    pool = pools("meanstd", frame)
    _c, result = run_policy(policy("filter odd", "filter x >= mean(x) + std(x)"), pool, explain=True)
    cut = np.mean(x) + np.std(x, ddof=1)  # 5.5 + 3.03 = 8.53: 9 and 10 pass, of which 10 is odd
    assert result.thresholds["mean(x)"] == pytest.approx(5.5)
    assert result.thresholds["std(x)"] == pytest.approx(np.std(x, ddof=1))
    assert sorted(result.selection["id"]) == [f"s{i}" for i in range(10) if x[i] >= cut and i % 2 == 1]


# --- top(x, frac): DataComp's get_threshold -------------------------------------------------------


def datacomp_keep(values, fraction) -> np.ndarray:
    """DataComp's baselines/apply_filter.py: threshold = -np.sort(-v)[int(len(v) * fraction)]; keep >=."""
    values = np.asarray(values, dtype=np.float64)
    threshold = -np.sort(-values)[int(len(values) * fraction)]
    return values >= threshold


def test_top_keeps_every_tie_at_the_threshold(pools):
    # 20 rows; descending: 10, 9, 8, 7, 7, 7, 7, 7, 3, ... ; index floor(20 * 0.3) = 6 holds 7
    values = [10.0, 9, 8, 7, 7, 7, 7, 7] + [3.0] * 12
    frame = {"id": [f"t{i:02d}" for i in range(20)], "x": values}
    pool = pools("top-ties", frame)
    kept = selected(policy("filter top(x, 0.3)"), pool)
    assert sorted(kept) == [f"t{i:02d}" for i in range(8)]  # 8 rows: 40% > 30%, all ties kept
    assert datacomp_keep(values, 0.3).sum() == 8


@pytest.mark.parametrize("order", ["top first", "other first"])
def test_top_threshold_is_over_the_whole_population(pools, order):
    # x = 1..10; top 30%: index 3 of 10, 9, 8, 7, ... -> keep x >= 7. Over the rows passing `ok`
    # (x in 1, 2, 3, 4, 9, 10) the threshold would be 9 (index 1 of 10, 9, 4, ...), and 4 would not pass either way.
    pool = pools(f"top-pop-{order[:3]}", TEN)
    clauses = ["filter top(x, 0.3)", "filter ok"]
    if order == "other first":
        clauses.reverse()
    assert sorted(selected(policy(*clauses), pool)) == ["r09", "r10"]
    assert sorted(selected(policy("filter top(x, 0.3)"), pool)) == ["r07", "r08", "r09", "r10"]


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_top_matches_get_threshold_on_the_demo_pool(demo_pool, demo_frame, fraction):
    lengths = demo_frame["text"].str.len_chars().to_numpy()  # many ties: lengths repeat
    kept = selected(policy(f"filter top(len(text), {fraction})", pool="demo"), demo_pool)
    expected = demo_frame.filter(pl.Series(datacomp_keep(lengths, fraction)))["id"]
    assert sorted(kept) == sorted(expected)


def test_top_per_group(pools):
    rng = np.random.default_rng(3)
    g = rng.choice(["a", "b", "c"], 90).tolist()
    x = rng.integers(0, 12, 90).astype(float)
    frame = pl.DataFrame({"id": [f"g{i:02d}" for i in range(90)], "g": g, "x": x})
    pool = pools("top-per", frame)
    kept = selected(policy("filter top(x, 0.3) per g"), pool)
    expected = []
    for name in ("a", "b", "c"):
        part = frame.filter(pl.col("g") == name)
        expected += part.filter(pl.Series(datacomp_keep(part["x"], 0.3)))["id"].to_list()
    assert sorted(kept) == sorted(expected)


# --- order independence ---------------------------------------------------------------------------

THREE = ["filter len(text) >= quantile(len(text), 0.2)",
         "filter words(text) <= quantile(words(text), 0.9) per source",
         "filter width >= 32"]


def test_every_order_of_three_filters_gives_the_same_selection(demo_pool):
    hashes, policies = set(), set()
    for perm in itertools.permutations(THREE):
        compiled, result = run_policy(policy(*perm, "budget 300", "select bottom len(text)", pool="demo"), demo_pool)
        hashes.add(result.selection_hash())
        policies.add(compiled.artifact["policy_hash"])
        assert result.selection.height == 300
    assert len(hashes) == 1
    assert len(policies) == 1  # clause order within a kind is not part of the policy's identity


def test_filter_order_does_not_change_the_survivors(demo_pool, demo_frame):
    lengths = demo_frame["text"].str.len_chars()
    words = demo_frame["text"].str.count_matches(r"\S+")
    q20 = np.quantile(lengths.to_numpy(), 0.2)
    q90 = demo_frame.with_columns(w=words).group_by("source").agg(pl.col("w").quantile(0.9, "linear"))
    q90 = dict(q90.iter_rows())
    expected = {i for i, n, w, s, wd in zip(demo_frame["id"], lengths, words, demo_frame["source"], demo_frame["width"])
                if n >= q20 and w <= q90[s] and wd >= 32}
    for perm in itertools.permutations(THREE):
        kept = selected(policy(*perm, pool="demo"), demo_pool)
        assert set(kept) == expected


# --- 2. stages: the optimizer moves work, never the result -----------------------------------------

CLIP = 'clip_score(model="ViT-B-32")'


def _clip_plan(threshold_from_statistic: bool) -> Plan:
    """filter words(text) > 2; filter clip >= (0.5 | quantile(clip, 0.5)); select top clip -- by hand."""
    steps = [Scan(columns=("id", "text")),
             Score(column=CLIP, scorer="clip_score", params={"model": "ViT-B-32"}, cost="gpu_model")]
    threshold = Lit(value=0.5)
    if threshold_from_statistic:
        steps.append(Stat(column="quantile(clip, 0.5)", stat="quantile", arg=Col(name=CLIP),
                          params={"q": 0.5, "method": "linear"}))
        threshold = Col(name="quantile(clip, 0.5)")
    steps += [
        FilterStep(clause="filter clip >= t", predicate=Op(name=">=", args=(Col(name=CLIP), threshold))),
        FilterStep(clause="filter words(text) > 2",
                   predicate=Op(name=">", args=(Apply(fn="words", args=(Col(name="text"),)), Lit(value=2)))),
        SelectStep(clause="select top clip", strategy="top", args=(Col(name=CLIP),)),
    ]
    return Plan(pool="t", steps=tuple(steps))


@pytest.mark.parametrize("with_statistic", [False, True], ids=["constant threshold", "quantile threshold"])
def test_cheap_filters_run_before_the_model_without_changing_the_result(pools, with_statistic):
    rng = np.random.default_rng(0)
    n = 100
    frame = pl.DataFrame({"id": [f"c{i:03d}" for i in range(n)],
                          "text": [" ".join(["w"] * int(k)) for k in rng.integers(1, 6, n)]})
    clip = pl.DataFrame({"id": frame["id"], "clip": rng.uniform(0, 1, n).round(4)})
    pool = pools(f"clip-{with_statistic}", frame)
    scored: list[int] = []

    def model(lazy, steps):  # a stand-in for the model: looks scores up, counts the rows it is asked about
        assert [s.scorer for s in steps] == ["clip_score"]
        out = lazy.join(clip.lazy(), on="id", how="left").rename({"clip": steps[0].column})
        return out.with_columns(pl.col("id").map_batches(lambda s: scored.append(len(s)) or s, return_dtype=pl.String))

    words = frame["text"].str.count_matches(r"\S+") > 2
    threshold = np.quantile(clip["clip"].to_numpy(), 0.5) if with_statistic else 0.5
    expected = (frame.join(clip, on="id").filter(words & (pl.col("clip") >= threshold))
                .sort("clip", descending=True)["id"].to_list())
    results = {}
    for name, p in (("optimized", optimize(_clip_plan(with_statistic))), ("as written", _clip_plan(with_statistic))):
        scored.clear()
        results[name] = execute(lower(p, pool.schema), pool, score_columns=model)
        results[name + " scored"] = list(scored)
        assert results[name].selection["id"].to_list() == expected
    if with_statistic:  # the quantile needs every row's score: nothing may be filtered first (the statistics
        # pass and the query each ask for every row; a real scorer's second answer comes from its cache)
        assert set(results["optimized scored"]) == {n}
    else:  # the model scores only the rows that pass the cheap filter
        assert sum(results["optimized scored"]) == int(words.sum()) < n


def test_dedup_runs_on_the_filter_survivors(pools):
    # a and b are duplicates; a has the better score but is filtered out: b must survive dedup
    pool = pools("stage-dedup", {"id": ["a", "b", "c"], "t": ["x", "x", "y"], "s": [9.0, 1.0, 5.0],
                                 "bad": [True, False, False]})
    assert selected(policy("filter not bad", "dedup exact(t)", "select top s"), pool) == ["c", "b"]


def test_mix_counts_the_rows_left_after_dedup(pools):
    # group a: 6 rows but 2 distinct texts; b: 6 distinct -> a can give 2 of its 5: the other 3 go to b
    frame = {"id": [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)], "g": ["a"] * 6 + ["b"] * 6,
             "t": ["p", "p", "p", "q", "q", "q"] + [f"u{i}" for i in range(6)]}
    pool = pools("stage-mix", frame)
    _c, result = run_policy(policy("dedup exact(t)", "mix by g { a: 0.5, b: 0.5 }", "budget 8"), pool)
    assert result.after_dedup == 8
    assert _picked(result) == {"a": 2, "b": 6}
    assert result.quotas["a"] == {"available": 2, "quota": 2, "shortfall": 2.0}


@pytest.mark.parametrize("select", ["select top x - mean(x) per g", "select top d"])
def test_statistics_in_select_are_over_the_filter_population(pools, select):
    # a: 1, 3, 10 (10 is filtered out), b: 5, 6. Over the whole population the means are 4.67 and 5.5, so
    # x - mean is -3.67, -1.67 | -0.5, 0.5 and b6 is the top row; over the survivors a3 (+1) would be.
    frame = {"id": ["a1", "a3", "a10", "b5", "b6"], "g": ["a", "a", "a", "b", "b"], "x": [1.0, 3, 10, 5, 6],
             "bad": [False, False, True, False, False]}
    pool = pools(f"select-stat-{select[-1]}", frame)
    assert selected(policy("let d = x - mean(x) per g", "filter not bad", "budget 1", select), pool) == ["b6"]


# --- 5. budget ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 37, 500, 1234])
@pytest.mark.parametrize("mix", [None, "mix by source { coco: 0.4, vg: 0.3, *: 0.3 }"])
def test_budget_is_exact(demo_pool, n, mix):
    clauses = ["filter words(text) > 2", *([mix] if mix else []), f"budget {n}", "select random(seed=5)"]
    _c, result = run_policy(policy(*clauses, pool="demo"), demo_pool)
    assert result.selection.height == n
    assert result.selection["id"].n_unique() == n
    assert sum(q["quota"] for q in result.quotas.values()) == n


def test_budget_top_takes_the_n_largest(demo_pool, demo_frame):
    kept = selected(policy("budget 100", "select top len(text)", pool="demo"), demo_pool)
    lengths = dict(zip(demo_frame["id"], demo_frame["text"].str.len_chars()))
    cut = sorted(lengths.values(), reverse=True)[99]
    assert len(kept) == 100
    assert all(lengths[i] >= cut for i in kept)
    assert sum(v > cut for v in lengths.values()) <= 100 <= sum(v >= cut for v in lengths.values())
    assert [lengths[i] for i in kept] == sorted((lengths[i] for i in kept), reverse=True)  # rank order


@pytest.mark.parametrize(("percent", "rows"), [("10%", 20), ("0.25%", 1), ("1.25%", 3), ("37.5%", 75), ("100%", 200)])
def test_budget_percent_is_of_the_pool_rounded_half_up(pools, percent, rows):
    # 200 rows: 10% = 20; 0.25% = 0.5 -> 1; 1.25% = 2.5 -> 3; 37.5% = 75 (execute.py `_budget_rows`)
    pool = pools(f"pct-{percent}", {"id": [f"b{i:03d}" for i in range(200)], "x": list(range(200))})
    assert len(selected(policy(f"budget {percent}"), pool)) == rows


def test_budget_percent_rounds_exact_halves_the_same_way(pools):
    pool = pools("pct-3000", {"id": [f"h{i:04d}" for i in range(3000)]})
    assert len(selected(policy("budget 0.25%"), pool)) == 8  # 7.5 rounds up
    assert len(selected(policy("budget 1.15%"), pool)) == 35  # 34.5 rounds up too


@pytest.mark.parametrize("mix", [None, "mix by g { a: 0.5, *: 0.5 }"])
@pytest.mark.parametrize("n", [1, 50, 300])
def test_budget_tokens_never_exceeds(pools, mix, n):
    rng = np.random.default_rng(11)
    frame = {"id": [f"k{i:03d}" for i in range(300)], "toks": rng.integers(1, 20, 300),
             "g": rng.choice(["a", "b", "c"], 300).tolist(), "s": rng.uniform(size=300)}
    pool = pools(f"tok-{n}-{mix is None}", frame)
    clauses = [*([mix] if mix else []), f"budget {n} tokens of toks", "select top s"]
    kept = selected(policy(*clauses), pool)
    toks = dict(zip(frame["id"], frame["toks"].tolist()))
    total = sum(toks[i] for i in kept)
    assert total <= n
    if mix is None:  # filled up to within one row
        assert total > n - max(toks.values())


def test_budget_tokens_defaults_to_the_n_tokens_column(pools):
    pool = pools("tok-default", {"id": ["1", "2", "3", "4"], "n_tokens": [5, 5, 5, 5], "x": [1.0, 2.0, 3.0, 4.0]})
    assert selected(policy("budget 12 tokens of n_tokens", "select top x"), pool) == ["4", "3"]  # the explicit form works
    assert selected(policy("budget 12 tokens", "select top x"), pool) == ["4", "3"]


def test_budget_tokens_of_an_expression(demo_pool, demo_frame):
    kept = selected(policy("budget 2000 tokens of words(text)", "select random(seed=1)", pool="demo"), demo_pool)
    words = dict(zip(demo_frame["id"], demo_frame["text"].str.count_matches(r"\S+")))
    assert 2000 - max(words.values()) < sum(words[i] for i in kept) <= 2000


def test_no_budget_keeps_every_survivor(demo_pool, demo_frame):
    kept = selected(policy("filter words(text) > 3", "filter width >= 40", pool="demo"), demo_pool)
    expected = demo_frame.filter((pl.col("text").str.count_matches(r"\S+") > 3) & (pl.col("width") >= 40))["id"]
    assert sorted(kept) == sorted(expected)


def test_no_budget_and_no_filter_keeps_the_whole_pool(demo_pool):
    assert len(selected(policy("select top width", pool="demo"), demo_pool)) == demo_pool.card.rows


def test_budget_shortfall_names_the_clauses_that_removed_most(demo_pool, demo_frame):
    words = demo_frame["text"].str.count_matches(r"\S+")
    wide = demo_frame["width"] >= 48
    survivors = int(((words > 8) & wide).sum())
    with pytest.raises(RunError) as err:
        run_policy(policy("filter width >= 48", "filter words(text) > 8", "budget 1500", pool="demo"), demo_pool)
    message = err.value.message
    assert message.startswith(f"only {survivors} rows survive the policy, fewer than the budget of 1500")
    # the funnel: `width >= 48` removes the most rows, then `words > 8` removes more
    removed_wide = int((~wide).sum())
    removed_words = int(wide.sum()) - survivors
    assert removed_wide > removed_words > 0
    first = f"`filter width >= 48` removed {removed_wide} rows ({int(wide.sum())} of the pool pass it alone)"
    second = f"`filter words(text) > 8` removed {removed_words} rows ({int((words > 8).sum())} of the pool pass it alone)"
    assert first in message and second in message
    assert message.index(first) < message.index(second)
    assert any("explain --run" in h for h in err.value.hints)


def test_budget_shortfall_after_dedup_is_an_error_too(pools):
    pool = pools("dup-short", {"id": ["a", "b", "c", "d"], "t": ["x", "x", "x", "y"]})
    with pytest.raises(RunError, match="only 2 rows survive the policy, fewer than the budget of 3"):
        run_policy(policy("dedup exact(t)", "budget 3"), pool)


# --- 4. mix --------------------------------------------------------------------------------------------


def _groups(sizes: dict[str, int]) -> dict:
    ids, groups = [], []
    for g, n in sizes.items():
        ids += [f"{g}{i:03d}" for i in range(n)]
        groups += [g] * n
    return {"id": ids, "g": groups, "s": list(range(len(ids)))}


def _picked(result) -> dict[str, int]:
    return dict(result.selection.group_by("group").len().iter_rows())


def test_mix_quotas_largest_remainder_and_water_filling(pools):
    # kernels.allocate_quotas' worked example: budget 10, weights .5/.3/.2, available 100/1/100.
    # y has 1 row: its shortfall of 2 goes to x and z as 0.5 : 0.2 -> shares 6.43, 1, 2.57;
    # floors 6, 1, 2 = 9; the last row goes to the largest remainder (z, .57) -> 6, 1, 3.
    pool = pools("mix-worked", _groups({"x": 100, "y": 1, "z": 100}))
    _c, result = run_policy(policy("mix by g { x: 0.5, y: 0.3, z: 0.2 }", "budget 10"), pool)
    assert {g: q["quota"] for g, q in result.quotas.items()} == {"x": 6, "y": 1, "z": 3}
    assert _picked(result) == {"x": 6, "y": 1, "z": 3}
    assert result.quotas["y"]["shortfall"] == pytest.approx(2.0)
    assert result.warnings == ["mix group `y` has 1 rows, 2.0 short of its share; the others take the difference in proportion"]


def test_mix_equal_remainders_go_to_the_first_group(pools):
    pool = pools("mix-equal", _groups({"a": 10, "b": 10, "c": 10}))
    _c, result = run_policy(policy("mix by g { a: 1, b: 1, c: 1 }", "budget 10"), pool)
    assert _picked(result) == {"a": 4, "b": 3, "c": 3}
    assert result.warnings == []


def test_mix_largest_remainder_by_hand(pools):
    # budget 23, weights .5/.3/.2: shares 11.5, 6.9, 4.6 -> floors 11, 6, 4 = 21;
    # remainders .5, .9, .6 -> the two rows left go to b (.9) and c (.6)
    pool = pools("mix-hand", _groups({"a": 50, "b": 50, "c": 50}))
    _c, result = run_policy(policy("mix by g { a: 0.5, b: 0.3, c: 0.2 }", "budget 23"), pool)
    assert _picked(result) == {"a": 11, "b": 7, "c": 5}


@pytest.mark.parametrize("weights", ["a: 0.7, b: 0.3", "a: 70%, b: 30%"])
def test_mix_equal_decimal_remainders_go_to_the_first_group(pools, weights):
    # shares 3.5 and 1.5: floors 3 + 1 = 4, the remainders .5 and .5 tie -> the first group gets the row
    pool = pools(f"mix-tie-{weights[-3:]}", _groups({"a": 10, "b": 10}))
    _c, result = run_policy(policy(f"mix by g {{ {weights} }}", "budget 5"), pool)
    assert _picked(result) == {"a": 4, "b": 1}


def test_mix_group_with_exactly_its_share_gets_no_warning(pools):
    pool = pools("mix-exact-share", _groups({"a": 60, "b": 300}))
    _c, result = run_policy(policy("mix by g { a: 0.3, *: 0.7 }", "budget 200"), pool)
    assert _picked(result) == {"a": 60, "*": 140}
    assert result.quotas["a"]["shortfall"] == 0.0
    assert result.warnings == []


def test_mix_shortfall_of_star_is_spread_in_proportion(pools):
    # a, b listed at .2 each, the rest (c: 6, d: 4 = 10 rows) at .6 of 50: nominal 10, 10, 30.
    # `*` has 10: its 20 go to a and b equally -> 20, 20, 10.
    pool = pools("mix-star-short", _groups({"a": 100, "b": 100, "c": 6, "d": 4}))
    _c, result = run_policy(policy("mix by g { a: 0.2, b: 0.2, *: 0.6 }", "budget 50"), pool)
    assert _picked(result) == {"a": 20, "b": 20, "*": 10}
    assert result.quotas["*"] == {"available": 10, "quota": 10, "shortfall": 20.0}
    assert result.warnings == ["mix group `*` has 10 rows, 20.0 short of its share; the others take the difference in proportion"]


def test_mix_star_covers_every_unlisted_group(pools):
    pool = pools("mix-star", _groups({"a": 50, "b": 30, "c": 20, "d": 5}))
    _c, result = run_policy(policy("mix by g { a: 0.5, *: 0.5 }", "budget 40", "select top s"), pool)
    assert _picked(result) == {"a": 20, "*": 20}
    star = result.selection.filter(pl.col("group") == "*")["id"].to_list()
    assert {i[0] for i in star} <= {"b", "c", "d"}
    # within `*` select picks the top 20 by s of b, c and d together: d's 5 and c's 15 best
    assert sorted(star) == sorted([f"d{i:03d}" for i in range(5)] + [f"c{i:03d}" for i in range(5, 20)])


def test_mix_on_the_demo_pool_sums_to_the_budget(demo_pool):
    _c, result = run_policy(policy("mix by source { coco: 0.4, vg: 0.3, *: 0.3 }", "budget 1000", pool="demo"),
                            demo_pool)
    # coco has 260 rows, short of 400: the 140 go to vg and `*` as 0.3 : 0.3
    assert _picked(result) == {"coco": 260, "vg": 240, "*": 500}  # vg (240 rows) is short too: all to `*`
    assert result.selection.height == 1000
    assert len(result.warnings) == 2 and all("short of its share" in w for w in result.warnings)


# --- 3. dedup ---------------------------------------------------------------------------------------

# groups of t: a (s 1, 3, 2), b (5, 5: a tie), c (0, 0, 9, 1), d (4), e (2, 2: a tie)
DUPS = {"id": [f"k{i}" for i in range(12)], "t": list("aaabbccccdee"), "s": [1, 3, 2, 5, 5, 0, 0, 9, 1, 4, 2, 2]}


def _best(strategy: str) -> list[str]:
    """The keeper of each group by hand: best by s (top: largest), ties by the lowest id hash."""
    h = id_hash(DUPS["id"])
    out = []
    for t in sorted(set(DUPS["t"])):
        rows = [(i, s) for i, tt, s in zip(DUPS["id"], DUPS["t"], DUPS["s"]) if tt == t]
        sign = -1 if strategy == "top" else 1
        rows.sort(key=lambda r: (sign * r[1], h[r[0]]))
        out.append(rows[0][0])
    return sorted(out)


@pytest.mark.parametrize("strategy", ["top", "bottom"])
def test_exact_dedup_keeps_the_best_by_the_select_score(pools, strategy):
    pool = pools(f"dups-{strategy}", DUPS)
    kept = selected(policy("dedup exact(t)", f"select {strategy} s"), pool)
    assert sorted(kept) == _best(strategy)
    expected = {"top": ["k1", "k11", "k4", "k7", "k9"], "bottom": ["k0", "k11", "k4", "k5", "k9"]}[strategy]
    assert sorted(kept) == expected  # by hand: the hash order of the ties k3/k4, k5/k6, k10/k11


def test_exact_dedup_without_a_score_keeps_the_lowest_id_hash(pools):
    pool = pools("dups-hash", DUPS)
    kept = selected(policy("dedup exact(t)"), pool)
    expected = [by_hash([i for i, tt in zip(DUPS["id"], DUPS["t"]) if tt == t])[0] for t in "abcde"]
    assert sorted(kept) == sorted(expected)


def test_exact_dedup_over_several_columns(pools):
    frame = {"id": ["a", "b", "c", "d"], "t": ["x", "x", "x", "y"], "u": [1, 1, 2, 1], "s": [1, 2, 3, 4]}
    pool = pools("dups-two", frame)
    assert sorted(selected(policy("dedup exact(t, u)", "select top s"), pool)) == ["b", "c", "d"]


def _dup_groups(defects: pl.DataFrame, kept: set[str], kind: str) -> pl.DataFrame:
    """Per demo duplicate group: how many of the original and its `kind` copies were kept."""
    other = "near_duplicate" if kind == "exact_duplicate" else "exact_duplicate"
    rows = defects.filter(pl.col("dup_group").is_not_null() & ~pl.col(other))
    return (rows.group_by("dup_group")
            .agg(pl.col("id").is_in(list(kept)).sum().alias("kept"), pl.col(kind).any().alias("has"))
            .filter(pl.col("has")))


@pytest.mark.parametrize("method", ["exact(text)", "exact(image)", "minhash(text)"])
def test_dedup_removes_every_exact_duplicate_of_the_demo_pool(demo_pool, demo_frame, demo_defects, method):
    _c, result = run_policy(policy(f"dedup {method}", pool="demo"), demo_pool)
    kept = set(result.selection["id"])
    groups = _dup_groups(demo_defects, kept, "exact_duplicate")
    assert groups.height > 50
    assert groups["kept"].max() <= 1  # recall 1.0: no two copies of one row survive
    if method == "exact(image)":  # no other rows share the bytes: exactly one of each group stays
        assert groups["kept"].min() == 1
        assert result.after_dedup == demo_pool.scan(["image"]).collect()["image"].n_unique()
    if method == "exact(text)":
        assert result.after_dedup == demo_frame["text"].n_unique()


def test_minhash_finds_near_duplicates_that_exact_misses(demo_pool, demo_defects):
    near = {}
    for method in ("exact(text)", "minhash(text, threshold=0.7, ngram=2)"):
        kept = set(selected(policy(f"dedup {method}", pool="demo"), demo_pool))
        near[method] = _dup_groups(demo_defects, kept, "near_duplicate")
    assert near["exact(text)"]["kept"].min() >= 2  # one word changed: exact never merges them
    merged = int((near["minhash(text, threshold=0.7, ngram=2)"]["kept"] <= 1).sum())
    assert merged >= near["exact(text)"].height // 3


VOCAB = [f"w{i}" for i in range(5000)]


def test_minhash_keeps_one_of_each_near_duplicate_group_the_best_by_score(pools):
    rng = np.random.default_rng(5)
    ids, texts, scores, groups = [], [], [], []
    for g in range(4):  # 4 groups of 3 long texts that differ in their last word only
        base = list(rng.choice(VOCAB, 60))
        for k in range(3):
            ids.append(f"n{g}{k}")
            texts.append(" ".join(base[:-1] + [f"end{k}"]))
            scores.append(float(rng.integers(0, 100)))
            groups.append(g)
    for u in range(20):  # distinct texts
        ids.append(f"u{u:02d}")
        texts.append(" ".join(rng.choice(VOCAB, 60)))
        scores.append(float(rng.integers(0, 100)))
        groups.append(100 + u)
    pool = pools("minhash", {"id": ids, "text": texts, "s": scores})
    kept = selected(policy("dedup minhash(text)", "select top s"), pool)
    expected = []
    for g in sorted(set(groups)):
        members = [(s, i) for i, s, gg in zip(ids, scores, groups) if gg == g]
        h = id_hash([i for _, i in members])
        expected.append(min(members, key=lambda m: (-m[0], h[m[1]]))[1])
    assert sorted(kept) == sorted(expected)


def test_semantic_dedup_removes_identical_embeddings(pools):
    rng = np.random.default_rng(2)
    base = rng.normal(size=(30, 8)).astype(np.float32)
    emb = np.concatenate([base, base[:10]])  # rows 30..39 repeat rows 0..9
    frame = pl.DataFrame({"id": [f"e{i:02d}" for i in range(40)], "emb": emb.tolist()})
    pool = pools("semdedup", frame)
    assert pool.schema["emb"] == "embedding"
    kept = selected(policy("dedup semantic(emb, eps=0.001, clusters=3)"), pool)
    assert len(kept) == 30
    for i in range(10):  # exactly one of each identical pair
        pair = {f"e{i:02d}", f"e{i + 30:02d}"}
        assert len(pair & set(kept)) == 1


# --- tie-breaking and row order ------------------------------------------------------------------------

TIES = {"id": [f"t{i:03d}" for i in range(300)], "s": [1.0] * 100 + [0.5] * 200,
        "g": (["a", "b", "c"] * 100)}


def test_ties_are_broken_by_the_id_hash(pools):
    pool = pools("ties", TIES)
    kept = selected(policy("budget 150", "select top s"), pool)
    top = by_hash(TIES["id"][:100])
    tied = by_hash(TIES["id"][100:])[:50]
    assert kept == top + tied  # rank order too: within equal scores, lowest hash first


def test_bottom_ties_are_broken_by_the_id_hash(pools):
    pool = pools("ties-bottom", TIES)
    kept = selected(policy("budget 20", "select bottom s"), pool)
    assert kept == by_hash(TIES["id"][100:])[:20]


ORDER_POLICIES = [
    ("budget 150", "select top s"),
    ("budget 40", "select random(seed=4)"),
    ("budget 40", "select weighted(s, seed=4)"),
    ("mix by g { a: 0.5, *: 0.5 }", "budget 41", "select bottom s"),
    ("dedup exact(s)", "select top s"),
    ("budget 30", "select stratified(g)"),
    ("filter s >= quantile(s, 0.5)", "budget 60", "select random(seed=1)"),
]


@pytest.mark.parametrize("clauses", ORDER_POLICIES, ids=lambda c: " | ".join(c))
def test_row_and_shard_order_of_the_pool_do_not_matter(pools, clauses):
    frame = pl.DataFrame(TIES)
    name = str(ORDER_POLICIES.index(clauses))
    as_is = pools("order-a" + name, frame)
    shuffled = pools("order-b" + name, frame.sample(fraction=1.0, shuffle=True, seed=9), shard_rows=70)
    assert len(shuffled.card.shards) == 5
    assert selected(policy(*clauses), as_is) == selected(policy(*clauses), shuffled)


# --- 7. determinism -----------------------------------------------------------------------------------

DETERMINISM = policy(
    "filter words(text) > 2",
    "filter len(text) <= quantile(len(text), 0.9) per source",
    "dedup minhash(text)",
    "mix by source { coco: 0.3, laion: 0.3, *: 0.4 }",
    "budget 700",
    "select random(seed=3)",
    pool="demo",
)


def test_two_runs_write_byte_identical_manifests(demo_pool, tmp_path):
    paths = []
    for k in range(2):
        _c, result = run_policy(DETERMINISM, demo_pool)
        paths.append(export(demo_pool, result.selection, tmp_path / f"run{k}", "parquet"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


@pytest.fixture(scope="module")
def embedding_pool(pools):
    rng = np.random.default_rng(1)
    n = 600
    frame = pl.DataFrame({
        "id": [f"e{i:03d}" for i in range(n)],
        "emb": rng.normal(size=(n, 16)).astype(np.float32).tolist(),
        "w": rng.uniform(0, 1, n).round(3),
        "g": rng.choice(["a", "b", "c", "d"], n, p=[0.1, 0.3, 0.3, 0.3]).tolist(),
        "text": [" ".join(rng.choice(VOCAB[:30], 8)) for _ in range(n)],
    })
    return pools("embeddings", frame)


def test_threads_one_and_all_cores_write_identical_manifests(embedding_pool, tmp_path):
    """`cbdsl run --threads 1`, the default (every core) and 8 threads (more than CI's cores) give the same bytes.

    The policy exercises the parallel kernels: MinHash signatures and LSH, and k-center greedy.
    """
    text = policy("dedup minhash(text, threshold=0.6, ngram=1)", "mix by g { a: 0.3, *: 0.7 }", "budget 150",
                  "select kcenter(emb, seed=2)", pool="embeddings")
    (tmp_path / "p.cur").write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("POLARS_MAX_THREADS", "NUMBA_NUM_THREADS")}
    manifests = []
    for out, extra in (("one", ["--threads", "1"]), ("all", []), ("eight", ["--threads", "8"])):
        proc = subprocess.run([sys.executable, "-m", "cbdsl", "run", "p.cur", "--pool", str(embedding_pool.path),
                               "--out", out, *extra],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        manifests.append((tmp_path / out / "selection.parquet").read_bytes())
    assert manifests[0] == manifests[1] == manifests[2]
    assert pl.read_parquet(tmp_path / "one" / "selection.parquet").height == 150


# --- 6. select strategies -----------------------------------------------------------------------------


def test_random_is_stable_for_a_seed_and_differs_across_seeds(demo_pool):
    runs = {seed: selected(policy("budget 50", f"select random(seed={seed})", pool="demo"), demo_pool)
            for seed in (0, 1, 2)}
    assert runs[0] == selected(policy("budget 50", "select random(seed=0)", pool="demo"), demo_pool)
    assert len({tuple(r) for r in runs.values()}) == 3
    assert all(len(set(runs[a]) & set(runs[b])) < 25 for a, b in itertools.combinations(runs, 2))


def test_random_is_the_seeded_hash_order(pools):
    pool = pools("random-order", TIES)
    kept = selected(policy("budget 10", "select random(seed=7)"), pool)
    h = hashing.hash_strings(TIES["id"])
    key = hashing.hash_u64(h, 7)
    assert kept == [TIES["id"][i] for i in np.lexsort((h, key))[:10]]


def test_no_select_is_random_with_seed_0(demo_pool):
    assert (selected(policy("budget 30", pool="demo"), demo_pool)
            == selected(policy("budget 30", "select random(seed=0)", pool="demo"), demo_pool))


def test_weighted_prefers_heavy_rows_and_never_takes_weight_zero(pools):
    n = 4000
    frame = {"id": [f"w{i:04d}" for i in range(n)], "w": [0.0] * 1000 + [1.0] * 2000 + [4.0] * 1000}
    pool = pools("weighted", frame)
    weight = dict(zip(frame["id"], frame["w"]))
    for seed in (0, 1):
        kept = selected(policy("budget 1000", f"select weighted(w, seed={seed})"), pool)
        picked = [weight[i] for i in kept]
        assert picked.count(0.0) == 0
        # a weight-4 row is picked far more often than a weight-1 row (about 60% vs 20% of each)
        assert picked.count(4.0) / 1000 > 0.5 > 0.25 > picked.count(1.0) / 2000
    kept = selected(policy("budget 3500", "select weighted(w, seed=0)"), pool)
    assert [weight[i] for i in kept].count(0.0) == 500  # zero-weight rows only once the others are all taken
    assert set(kept) >= {i for i, w in weight.items() if w > 0}


def test_weighted_differs_across_seeds_and_is_stable(pools):
    pool = pools("weighted-seeds", {"id": [f"v{i:03d}" for i in range(300)], "w": [1.0 + i % 7 for i in range(300)]})
    a = selected(policy("budget 30", "select weighted(w, seed=1)"), pool)
    assert a == selected(policy("budget 30", "select weighted(w, seed=1)"), pool)
    assert a != selected(policy("budget 30", "select weighted(w, seed=2)"), pool)


def _strata(result, pool) -> dict[str, int]:
    g = pool.scan(["id", "g"]).collect()
    return dict(result.selection.join(g, on="id").group_by("g").len().iter_rows())


def test_stratified_gives_equal_shares(embedding_pool):
    _c, result = run_policy(policy("budget 100", "select stratified(g)"), embedding_pool)
    assert _strata(result, embedding_pool) == {"a": 25, "b": 25, "c": 25, "d": 25}


def test_stratified_water_fills_a_small_stratum(embedding_pool):
    sizes = dict(embedding_pool.scan(["g"]).collect().group_by("g").len().iter_rows())
    small = sizes["a"]
    assert small < 301 / 4
    _c, result = run_policy(policy("budget 301", "select stratified(g)"), embedding_pool)
    strata = _strata(result, embedding_pool)
    assert strata["a"] == small
    rest = 301 - small  # spread equally over b, c, d, the remainder to the first
    share, left = divmod(rest, 3)
    assert [strata[x] for x in "bcd"] == [share + (i < left) for i in range(3)]


def test_kcenter_is_the_greedy_core_set_from_the_seeded_first_row(embedding_pool):
    frame = embedding_pool.scan(["id", "emb"]).collect()
    emb = np.asarray(frame["emb"].to_list(), dtype=np.float32)
    ids = frame["id"].to_list()
    h = hashing.hash_strings(ids)
    for seed in (0, 3):
        kept = selected(policy("budget 25", f"select kcenter(emb, seed={seed})"), embedding_pool)
        first = int(np.lexsort((h, hashing.hash_u64(h, seed)))[0])  # the seeded order's first row
        picks = kcenter.kcenter_greedy(emb, 25, first)
        assert kept == [ids[i] for i in picks]


def test_kcenter_and_minhash_ignore_the_pools_row_order(embedding_pool, pools):
    frame = embedding_pool.scan().collect()
    shuffled = pools("embeddings-shuffled", frame.sample(fraction=1.0, shuffle=True, seed=4), shard_rows=128)
    text = policy("dedup minhash(text, threshold=0.6, ngram=1)", "budget 60", "select kcenter(emb, seed=5)")
    assert selected(text, embedding_pool) == selected(text, shuffled)


def test_kcenter_within_mix_groups(embedding_pool):
    _c, result = run_policy(policy("mix by g { a: 0.5, *: 0.5 }", "budget 40", "select kcenter(emb, seed=0)"),
                            embedding_pool)
    frame = embedding_pool.scan(["id", "emb", "g"]).collect()
    for group, members in (("a", frame.filter(pl.col("g") == "a")), ("*", frame.filter(pl.col("g") != "a"))):
        ids = members["id"].to_list()
        h = hashing.hash_strings(ids)
        order = np.lexsort((h, hashing.hash_u64(h, 0)))
        emb = np.asarray(members["emb"].to_list(), dtype=np.float32)
        picks = kcenter.kcenter_greedy(emb, 20, int(order[0]))
        got = result.selection.filter(pl.col("group") == group)["id"].to_list()
        assert sorted(got) == sorted(ids[i] for i in picks)


def test_select_top_rank_zscore_minmax_agree(demo_pool):
    """Monotone transforms of one score select the same rows."""
    runs = [selected(policy("budget 200", f"select top {e}", pool="demo"), demo_pool)
            for e in ("len(text)", "rank(len(text))", "zscore(len(text))", "minmax(len(text))")]
    assert all(set(r) == set(runs[0]) for r in runs)


def test_empty_selection_is_fine_without_budget(demo_pool):
    _c, result = run_policy(policy("filter width > 1000", pool="demo"), demo_pool)
    assert result.selection.height == 0
    assert result.selection.columns == ["id", "group", "score", "rank"]


def test_manifest_columns_and_ranks(demo_pool):
    _c, result = run_policy(policy("mix by source { coco: 0.5, *: 0.5 }", "budget 40", "select top width",
                                   pool="demo"), demo_pool)
    sel = result.selection
    assert sel.columns == ["id", "group", "score", "rank"]
    assert sel["rank"].to_list() == list(range(1, 41))
    assert set(sel["group"]) == {"coco", "*"}
    assert sel["score"].is_sorted(descending=True)
