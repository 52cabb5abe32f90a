"""Statistics computed exactly over a population in pieces (pipelines/engine/exact.py), the executor's way on
every engine: order statistics are Polars' own values, moments are rounded once from exact sums, and any
cut into pieces gives the same bits."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cbdsl.compiler.aggregates import Aggregation, Maximum, Mean, Minimum, Quantile, Std, Threshold
from cbdsl.pipelines.engine import exact
from cbdsl.pipelines.engine.exact import InMemory, aggregate

ORDER = {
    **{f"q_{m}": Quantile(0.37, m) for m in ("linear", "lower", "higher", "nearest", "midpoint")},
    "q0": Quantile(0.0), "q1": Quantile(1.0), "median": Quantile(0.5, "midpoint"),
    "top": Threshold(0.3), "top_all": Threshold(1.0), "min": Minimum(), "max": Maximum(),
}
MOMENTS = {"mean": Mean(), "std": Std(), "std0": Std(0)}


def _frame(rows: int, seed: int, dtype=pl.Float64) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows) * 100
    if dtype.is_float():
        x = x.round(1)  # ties, and -0.0 among them
        x[rng.random(rows) < 0.05] = np.nan
        x[rng.random(rows) < 0.01] = np.inf
    xs = pl.Series("x", x).cast(dtype, strict=False).to_list()
    for i in np.flatnonzero(rng.random(rows) < 0.05):
        xs[i] = None
    g = [None if r < 0.1 else str(v) for r, v in zip(rng.random(rows), rng.integers(0, 4, rows))]
    return pl.DataFrame({"x": pl.Series(xs, dtype=dtype), "g": g, "ok": rng.random(rows) < 0.6})


def _aggregation(aggregates, per=None, among=None) -> Aggregation:
    x = pl.col("x")
    return Aggregation(x=x.fill_nan(None) if x is not None else x, among=among, per=per, aggregates=aggregates)


def _polars(frame: pl.DataFrame, a: Aggregation) -> pl.DataFrame:
    exprs = [e.alias(name) for name, e in a.exprs().items()]
    out = frame.select(exprs) if a.per is None else frame.group_by(a.per).agg(exprs).sort(a.per, nulls_last=True)
    return out


def _cuts(frame: pl.DataFrame, sizes) -> InMemory:
    pieces, at = [], 0
    for n in sizes:
        pieces.append(frame.slice(at, n))
        at += n
    return InMemory([*pieces, frame.slice(at)])


def _unsigned_zero(table: pl.DataFrame) -> pl.DataFrame:
    """-0.0 as 0.0: Polars' sort keeps either zero of a tie; the order keys make it 0.0."""
    return table.with_columns(pl.col(pl.Float32, pl.Float64) + 0.0)


@pytest.mark.parametrize("dtype", [pl.Float64, pl.Float32, pl.Int64, pl.UInt16])
@pytest.mark.parametrize("per,among", [(None, None), ("g", None), (None, pl.col("ok")), ("g", pl.col("x") > 0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_order_statistics_are_the_values_polars_gives(dtype, per, among, seed):
    frame = _frame(700, seed, dtype)
    a = _aggregation(ORDER, per, among)
    got = aggregate(a, InMemory([frame]))
    assert_frame_equal(_unsigned_zero(got), _unsigned_zero(_polars(frame, a)), check_exact=True)


@pytest.mark.parametrize("seed", range(4))
def test_any_cut_into_pieces_gives_the_same_bits(seed):
    frame = _frame(900, seed)
    rng = np.random.default_rng(seed)
    for per in (None, "g"):
        a = _aggregation({**ORDER, **MOMENTS}, per, pl.col("ok") if seed % 2 else None)
        whole = aggregate(a, InMemory([frame]))
        for _ in range(3):
            sizes = rng.integers(0, 200, size=int(rng.integers(1, 12)))  # empty pieces too
            assert_frame_equal(aggregate(a, _cuts(frame, sizes)), whole, check_exact=True)


def test_every_digit_counted_when_no_bucket_is_fetched(monkeypatch):
    """The radix select down to the last digit of the key (FETCH 0: no bucket fetched) finds the same elements."""
    frame = _frame(500, 7)
    a = _aggregation(ORDER, "g")
    fetched = aggregate(a, _cuts(frame, [100, 50, 200]))
    monkeypatch.setattr(exact, "FETCH", 0)
    assert_frame_equal(aggregate(a, _cuts(frame, [100, 50, 200])), fetched, check_exact=True)
    monkeypatch.setattr(exact, "CHUNK", 13)  # a pass makes a piece's keys 13 at a time
    assert_frame_equal(aggregate(a, _cuts(frame, [100, 50, 200])), fetched, check_exact=True)


def test_moments_are_rounded_once_from_exact_sums():
    rng = np.random.default_rng(5)
    x = rng.normal(size=5000) * 10.0 ** rng.integers(-8, 8, size=5000)
    frame = pl.DataFrame({"x": x})
    got = aggregate(_aggregation(MOMENTS), _cuts(frame, [1000, 7, 2500]))
    v = [Fraction(float(a)) for a in x]
    total, squares = sum(v), sum(a * a for a in v)
    assert got["mean"][0] == float(total / len(v))
    for name, ddof in (("std", 1), ("std0", 0)):
        assert got[name][0] == math.sqrt(float((squares - total * total / len(v)) / (len(v) - ddof)))
        assert got[name][0] == pytest.approx(frame["x"].std(ddof=ddof), rel=1e-12)  # Polars, rounded on the way
    assert got["mean"][0] == pytest.approx(frame["x"].mean(), rel=1e-9, abs=1e-300)


def test_moments_at_the_edges():
    a = _aggregation(MOMENTS, "g")
    frame = pl.DataFrame({"x": [1.0, None, 2.0, math.inf, 1.0, -math.inf, math.inf, 1e308, 1e308, 3.0],
                          "g": ["one", "none", "none", "inf", "inf", "both", "both", "big", "big", "big"]})
    got = {row["g"]: row for row in aggregate(a, InMemory([frame])).iter_rows(named=True)}
    assert (got["one"]["mean"], got["one"]["std"], got["one"]["std0"]) == (1.0, None, 0.0)  # one value: no std
    assert got["none"]["mean"] == 2.0  # the null is not a value
    assert got["inf"]["mean"] == math.inf and math.isnan(got["inf"]["std"])
    assert math.isnan(got["both"]["mean"])
    big = (2 * Fraction(1e308) + 3) / 3
    assert got["big"]["mean"] == float(big) and frame.filter(g="big")["x"].sum() == math.inf  # no overflow


def test_integers_past_two_to_the_53_are_summed_exactly():
    big = 2**62
    frame = pl.DataFrame({"x": pl.Series([big, 1, big, -3], dtype=pl.Int64)})
    got = aggregate(_aggregation({"mean": Mean(), "max": Maximum()}), _cuts(frame, [1, 2]))
    assert got["mean"][0] == float(Fraction(2 * big - 2, 4)) and got["max"][0] == big
    assert got.schema == pl.Schema({"mean": pl.Float64, "max": pl.Int64})


def test_an_empty_population_has_no_values():
    frame = _frame(50, 1)
    a = _aggregation({**ORDER, **MOMENTS}, "g", pl.lit(False))
    got = aggregate(a, _cuts(frame, [10]))
    assert got.height == frame["g"].n_unique()
    assert got.drop("g").null_count().row(0) == (got.height,) * (got.width - 1)
