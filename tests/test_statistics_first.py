"""Statistics first (issue 17, part 4): a run computes each statistic's aggregates before the filter stage and
runs the filters as row-local predicates in the scan; the selection must be the one the single query gives.

Each case runs both ways, the single query (every statistic a column of the filter query, as
``query`` lowers a plan without known statistics) and a run, and compares the selections on pools of
several shards (so several parquet files and row groups) with nulls, NaNs, ties and a null ``per`` group.
``x`` is rounded (ties at every ``top`` and ``quantile`` threshold, which select values, exactly); the
sums of ``mean`` and ``std`` are over ``u``, unrounded, since the single query adds them in the order
Polars' streaming threads finish (the reason a run computes them first, exactly: the last test and
tests/test_exact_statistics.py).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest_pools import asset_reader, make_pool, policy, run_policy  # noqa: F401 (fixtures)
from cbdsl.stages import compile_source, lower
from cbdsl.pipelines.engine.execute import execute, model_scores, query, statistics_first


def _frame(rows: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows).round(2)  # rounded: ties at every threshold
    u = rng.normal(size=rows)
    x[rng.random(rows) < 0.05] = np.nan
    xs = pl.Series("x", x).to_list()
    for i in np.flatnonzero(rng.random(rows) < 0.05):
        xs[i] = None
    groups = rng.choice(["a", "b", "c"], rows).tolist()
    for i in np.flatnonzero(rng.random(rows) < 0.1):
        groups[i] = None
    return pl.DataFrame({
        "id": [f"r{i:04d}" for i in range(rows)],
        "x": pl.Series(xs, dtype=pl.Float64),
        "u": pl.Series([None if v is None else float(w) for v, w in zip(xs, u)], dtype=pl.Float64),
        "y": rng.integers(0, 20, rows),
        "g": groups,
        "k": rng.integers(0, 3, rows),
        "ok": rng.random(rows) < 0.7,
        "text": [" ".join(["w"] * int(n)) for n in rng.integers(0, 6, rows)],
    })


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return make_pool(tmp_path_factory.mktemp("sf") / "t", _frame(400, 1), shard_rows=97)


CASES = [
    ["filter top(x, 0.3)"],
    ["filter top(x, 0.25) per g", "filter ok"],
    ["filter top(x, 0.5) among (ok)", "filter words(text) > 2"],
    ["filter x >= quantile(x, 0.7)", "filter len(text) > 3"],
    ['filter x > quantile(x, 0.4, method="nearest") per k', "budget 20", "select top x"],
    ["filter u >= mean(u) per g", "filter y < 15"],
    ["filter u <= mean(u) + std(u)", "filter u >= mean(u) - 2 * std(u, ddof=0)"],
    ["filter zscore(u) per g > 0.5"],
    ["filter minmax(y) >= 0.5", "select top minmax(x)", "budget 10"],
    ["let z = zscore(u)", "filter z > quantile(zscore(u), 0.6)", "select top z", "budget 15"],
    ["filter rank(x) > 100", "filter x >= quantile(x, 0.2)"],
    ["filter quantile(y, 0.5) per g among (ok) <= y"],
    ["let big = y > 5", "filter top(x, 0.4) per k among (big)", "filter words(text) >= 1"],
    ["filter x >= quantile(x, 0.9) per x"],  # a float `per`: NaN and null groups
    ["filter y >= quantile(y, 0.5) per x", "filter ok"],  # their rows keep their own groups' values
    ["let kk = k + 1", "filter top(x, 0.3) per kk"],  # a derived `per`
    ["filter x * 2 >= quantile(x * 2, 0.5)", "filter min(y, 10) >= 3", "filter text != \"\""],
]


def _both(text: str, pool):
    """(a run, the single query): ``execute`` as runs call it, and with every statistic in the query."""
    _c, fast = run_policy(text, pool)
    low = _lowered(text, pool)
    return fast, execute(low, pool, statistics=False)


@pytest.mark.parametrize("clauses", CASES, ids=[" | ".join(c) for c in CASES])
def test_statistics_first_selects_what_the_single_query_selects(pool, clauses):
    fast, single = _both(policy(*clauses), pool)
    assert fast.selection.equals(single.selection)
    assert fast.selection_hash() == single.selection_hash()
    assert (fast.survivors, fast.after_dedup) == (single.survivors, single.after_dedup)


def _lowered(text: str, pool):
    compiled = compile_source(text, "policy.cur", pool)
    return lower(compiled.plan, pool.schema, asset_reader(pool), pool)


def test_which_statistics_are_computed_first(pool):
    low = _lowered(policy("filter rank(x) > 10", "filter top(x, 0.3) per g", "filter x >= quantile(x, 0.5) per x",
                          "filter y >= mean(y)"), pool)
    first = [s.column for s in low.first_statistics()]
    assert first == ["top(x, 0.3) per g", "quantile(x, 0.5) per x", "mean(y)"]  # rank needs every row
    known = statistics_first(low, pool, model_scores(low, pool)).exprs.statistics
    assert set(known) == set(first)
    table = known["top(x, 0.3) per g"]
    assert table.columns == ["g", "threshold"] and table.height == 4  # a, b, c and the null group
    assert known["mean(y)"]["mean"][0] == pytest.approx(pool.scan(["y"]).collect()["y"].mean(), rel=1e-15)


def test_numeric_filters_go_into_the_scan_and_strings_after_them(pool):
    text = policy("filter words(text) > 2", "filter y >= 3", "filter top(x, 0.3)", "filter len(text) > 5")
    low = _lowered(text, pool)
    low = statistics_first(low, pool, model_scores(low, pool))
    numeric, strings = low.in_scan(low.late_filters)
    assert set(numeric.meta.root_names()) == {"x", "y"} and set(strings.meta.root_names()) == {"text"}
    plan = query(low, pool.scan(list(low.plan.scan.columns)), model_scores(low, pool)).explain()
    scan = plan[plan.index("Parquet SCAN"):]
    assert "SELECTION" in scan and '"x"' in scan.split("SELECTION")[1] and "text" not in scan.split("SELECTION")[1]
    threshold = low.exprs.statistics["top(x, 0.3)"]["threshold"][0]
    assert repr(threshold) in scan  # the statistic is a literal in the scan's predicate
    assert plan.index('col("text")') < plan.index("OPAQUE_PYTHON")  # the string filter is above the barrier


def test_a_filter_on_a_statistic_of_the_query_stays_in_the_query(pool):
    low = _lowered(policy("filter rank(x) > 10", "filter y > 2"), pool)
    low = statistics_first(low, pool, model_scores(low, pool))
    assert low.in_scan(low.late_filters) is None


_STATS = st.sampled_from([
    "top(x, {f})", "x >= quantile(x, {f})", "x >= quantile(x, {f}) per g", "top(x, {f}) per k",
    "u >= mean(u) per g", "zscore(u) > {f}", "minmax(y) > {f}", "top(y, {f}) among (ok)",
    "x < quantile(x, {f}, method=\"higher\") per g among (y > 4)", "y >= std(u) * 10",
])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 150), shard=st.integers(1, 60),
       stats=st.lists(st.tuples(_STATS, st.floats(0.05, 0.95).map(lambda f: math.floor(f * 100) / 100)),
                      min_size=1, max_size=3),
       with_text=st.booleans())
def test_random_policies_select_the_same_both_ways(seed, rows, shard, stats, with_text):
    clauses = [f"filter {s.format(f=f)}" for s, f in stats] + (["filter words(text) > 1"] if with_text else [])
    with tempfile.TemporaryDirectory() as tmp:
        pool = make_pool(Path(tmp) / "t", _frame(rows, seed), shard_rows=shard)
        fast, single = _both(policy(*clauses), pool)
    assert fast.selection.equals(single.selection)


def test_a_mean_computed_first_is_the_same_bits_for_any_sharding_and_run(tmp_path):
    """Polars' streaming engine adds a mean's morsels in thread order (its last bits change from run to run);
    computed first, from exact sums, it does not, whatever the shards."""
    rng = np.random.default_rng(3)
    frame = pl.DataFrame({"id": [f"r{i:05d}" for i in range(30_000)], "x": rng.normal(size=30_000)})
    means = set()
    for shard in (30_000, 4_000, 777):
        pool = make_pool(tmp_path / f"s{shard}", frame, shard_rows=shard)
        low = _lowered(policy("filter x >= mean(x)", "filter x <= mean(x) + 2 * std(x)"), pool)
        for _ in range(3):
            known = statistics_first(low, pool, model_scores(low, pool)).exprs.statistics
            means.add((known["mean(x)"]["mean"][0], known["std(x)"]["std"][0]))
    assert len(means) == 1


def test_top_of_an_empty_population_keeps_nothing(pool):
    """`among` that holds nowhere: no threshold (it was an out-of-bounds gather), so no row is kept."""
    _c, result = run_policy(policy("filter top(x, 0.5) among (y > 100)"), pool, explain=True)
    assert result.selection.height == 0 and result.thresholds == {}
