"""DESIGN rule 9: a missing value (null or NaN) never passes a comparison, `in` or a filter, and is
never kept by `top`; in `top(x, f)` it counts in N and sorts below every number, as DataComp's
``get_threshold`` does; statistics skip it; `cbdsl explain --run` counts it per score.

Expectations are DataComp's own formulas (mlfoundations/datacomp, baselines/apply_filter.py) in
NumPy on the same values: ``threshold = -np.sort(-x)[int(len(x) * fraction)]`` then
``x >= threshold`` (``load_uids_with_clip_score``), ``x >= 0.28`` (the LAION baseline), and
``np.minimum``/``np.maximum`` for the basic filter's image sizes. NumPy compares NaN as false.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbdsl.pipelines.engine.scores import cache_path
from cbdsl.scorers.registry import registry
from conftest_pools import make_pool, policy, run_policy, selected  # noqa: F401

N = 20_000


def datacomp_like(seed: int = 0, n: int = N) -> pl.DataFrame:
    """Float32 CLIP scores with many exact ties (rounded to 1/8192 and 1/512) and NaNs, as in a real download."""
    rng = np.random.default_rng(seed)
    l14 = np.round(rng.normal(0.25, 0.05, n) * 8192).astype(np.float32) / np.float32(8192)
    b32 = np.round(rng.normal(0.28, 0.04, n) * 512).astype(np.float32) / np.float32(512)
    l14[rng.choice(n, 150, replace=False)] = np.nan
    b32[rng.choice(n, 225, replace=False)] = np.nan
    width = rng.integers(50, 900, n).astype(np.float64)
    height = rng.integers(50, 900, n).astype(np.float64)
    height[rng.choice(n, 40, replace=False)] = np.nan
    width[rng.choice(n, 5, replace=False)] = 0.0
    height[rng.choice(n, 5, replace=False)] = 0.0
    return pl.DataFrame({"id": [f"{i:032x}" for i in range(n)], "l14": l14, "b32": b32,
                         "width": width, "height": height})


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    frame = datacomp_like()
    return frame, make_pool(tmp_path_factory.mktemp("missing") / "dc", frame)


def ids_where(frame: pl.DataFrame, mask: np.ndarray) -> set[str]:
    return set(np.asarray(frame["id"].to_list())[mask])


def get_threshold(x: np.ndarray, fraction: float) -> float:
    """DataComp's get_threshold on one array."""
    return -np.sort(-x)[int(len(x) * fraction)]


@pytest.mark.parametrize("fraction", [0.3, 0.1, 0.9, 0.5])
def test_top_is_datacomp_get_threshold_with_nan(dc, fraction):
    frame, pool = dc
    x = frame["l14"].to_numpy()
    with np.errstate(invalid="ignore"):
        expected = ids_where(frame, x >= get_threshold(x, fraction))
    got = set(selected(policy(f"filter top(l14, {fraction})"), pool))
    assert got == expected
    assert not any(np.isnan(x[int(i, 16)]) for i in got)


def test_the_nan_count_moves_the_threshold_as_in_datacomp(dc):
    """30% of 20,000 with 150 NaN: the index is floor(0.3 * 20000) over all rows, NaN included."""
    frame, pool = dc
    x = frame["l14"].to_numpy()
    threshold = -np.sort(-x)[6000]
    without_nan_in_n = np.sort(x[~np.isnan(x)])[::-1][int(len(x[~np.isnan(x)]) * 0.3)]
    assert threshold != without_nan_in_n  # the data tell the two readings apart
    assert len(selected(policy("filter top(l14, 0.3)"), pool)) == int((x >= threshold).sum())


def test_a_threshold_on_a_missing_value_keeps_nothing(tmp_path):
    """DataComp: when floor(N * f) indexes a NaN, `x >= NaN` is false for every row."""
    x = np.array([0.9, 0.8, np.nan, np.nan], dtype=np.float32)
    pool = make_pool(tmp_path / "p", {"id": ["a", "b", "c", "d"], "x": x})
    assert x[x >= get_threshold(x, 0.5)].size == 0
    assert selected(policy("filter top(x, 0.5)"), pool) == []
    assert set(selected(policy("filter top(x, 0.25)"), pool)) == {"a", "b"}


def test_a_fixed_threshold_never_keeps_nan(dc):
    frame, pool = dc
    x = frame["b32"].to_numpy()
    with np.errstate(invalid="ignore"):
        expected = ids_where(frame, x >= 0.28)
    assert set(selected(policy("filter b32 >= 0.28"), pool)) == expected


@pytest.mark.parametrize("condition", [
    "x < 2", "x <= 2", "x > 0", "x >= 0", "x == 1", "x != 1", "not (x < 1)", "not (x >= 1)",
    "x in [1, 2]", "x not in [1, 2]", "x + 1 > 0", "-x < 0", "abs(x) >= 0", "round(x) >= 0",
    "x >= 0 or x < 0", "x / 1 > 0", "log(x + 1) >= 0",
])
def test_no_comparison_passes_a_missing_value(tmp_path, condition):
    pool = make_pool(tmp_path / "p", {"id": ["nan", "null", "one"], "x": [float("nan"), None, 1.0]})
    kept = set(selected(policy(f"filter {condition}"), pool))
    assert kept <= {"one"}, condition


def test_nan_from_arithmetic_is_missing(tmp_path):
    """0/0 is NaN and x/0 is inf in NumPy and Polars alike; NaN fails, inf compares as a number."""
    pool = make_pool(tmp_path / "p", {"id": ["zero", "tall", "ok"], "w": [0, 0, 300], "h": [0, 400, 200]})
    assert selected(policy("filter max(w, h) / min(w, h) <= 3"), pool) == ["ok"]
    assert set(selected(policy("filter max(w, h) / min(w, h) >= 1"), pool)) == {"tall", "ok"}


def test_basic_filter_sizes_are_numpys_minimum_and_maximum(dc):
    """A missing height fails `min(width, height) >= 200`, as np.minimum's NaN does."""
    frame, pool = dc
    w, h = frame["width"].to_numpy(), frame["height"].to_numpy()
    lo, hi = np.minimum(w, h), np.maximum(w, h)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = ids_where(frame, (lo >= 200) & (hi / lo <= 3.0))
    got = set(selected(policy("filter min(width, height) >= 200", "filter max(width, height) / min(width, height) <= 3"),
                       pool))
    assert got == expected


def test_statistics_skip_missing_values(dc):
    frame, pool = dc
    x = frame["b32"].to_numpy().astype(np.float64)
    _c, result = run_policy(policy("let q = quantile(b32, 0.7)", "let m = mean(b32)", "let s = std(b32)",
                                   "filter b32 >= q and b32 >= m - s"), pool, explain=True)
    t = result.thresholds
    assert t["quantile(b32, 0.7)"] == pytest.approx(np.nanquantile(x, 0.7))
    assert t["mean(b32)"] == pytest.approx(np.nanmean(x))
    assert t["std(b32)"] == pytest.approx(np.nanstd(x, ddof=1))
    with np.errstate(invalid="ignore"):
        expected = ids_where(frame, (x >= np.nanquantile(x, 0.7)) & (x >= np.nanmean(x) - np.nanstd(x, ddof=1)))
    assert set(result.selection["id"].to_list()) == expected


def test_select_top_puts_missing_values_last(tmp_path):
    pool = make_pool(tmp_path / "p", {"id": ["a", "b", "c", "d"], "x": [0.1, float("nan"), None, 0.5]})
    assert selected(policy("budget 3", "select top x"), pool)[:2] == ["d", "a"]
    assert selected(policy("budget 2", "select bottom x"), pool) == ["a", "d"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from([0.25, 0.5, 0.75]), st.just(float("nan")),
                          st.floats(0, 1, width=32)), min_size=1, max_size=40),
       st.sampled_from([0.05, 0.3, 0.5, 0.99]))
def test_top_property(tmp_path_factory, values, fraction):
    x = np.array(values, dtype=np.float32)
    pool = make_pool(tmp_path_factory.mktemp("prop") / "p", {"id": [f"r{i}" for i in range(len(x))], "x": x})
    with np.errstate(invalid="ignore"):
        expected = {f"r{i}" for i in np.flatnonzero(x >= get_threshold(x, fraction))}
    assert set(selected(policy(f"filter top(x, {fraction})"), pool)) == expected


# --- a model score without a value ------------------------------------------------------------

def _distance_policy() -> str:
    return policy("let d = centroid_distance(emb, clusters=2)", "filter d >= 0")


def test_a_model_score_without_a_value_fails_and_is_counted(tmp_path, cbdsl_cmd):
    """A scorer that gave NaN for some rows (written into its cache as it would have written it)."""
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(50, 4)).astype(np.float32)
    pool = make_pool(tmp_path / "p", pl.DataFrame({"id": [f"r{i:02d}" for i in range(50)], "emb": emb}))
    text = _distance_policy()
    compiled, before = run_policy(text, pool)
    assert before.selection.height == 50
    step = compiled.plan.required_scorers[0]
    from cbdsl.compiler.ir import Score

    score = next(s for s in compiled.plan.steps if isinstance(s, Score))
    path = cache_path(pool, score, registry().get(step["scorer"], "expr"))
    cached = pl.read_parquet(path)
    value = cached.columns[1]
    nan_rows = {"r03", "r17", "r40"}
    cached = cached.with_columns(pl.when(pl.col(cached.columns[0]).is_in(list(nan_rows)))
                                 .then(float("nan")).otherwise(pl.col(value)).alias(value))
    cached.write_parquet(path)
    _c, after = run_policy(text, pool, explain=True)
    assert set(after.selection["id"].to_list()) == {f"r{i:02d}" for i in range(50)} - nan_rows
    assert after.missing == {score.column: 3}

    policy_file = tmp_path / "p.cur"
    policy_file.write_text(text, encoding="utf-8")
    out = subprocess.run([*cbdsl_cmd, "explain", "--run", "--json", str(policy_file), "--pool", str(pool.path)],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["missing"] == {score.column: 3}
    out = subprocess.run([*cbdsl_cmd, "explain", "--run", str(policy_file), "--pool", str(pool.path)],
                         capture_output=True, text=True, check=True).stdout
    assert "rows without a value" in out and f"3 of        50  {score.column}" in out


def test_explain_counts_missing_pool_scores(dc):
    frame, pool = dc
    _c, result = run_policy(policy("filter top(l14, 0.3)", "filter b32 >= 0.28"), pool, explain=True)
    assert result.missing == {"l14": 150, "b32": 225}
