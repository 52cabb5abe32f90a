"""Builtin functions and statistics.

Functions are row by row: ``min``, ``max``, ``abs``, ``log``, ``sqrt``,
``round``, ``lower``, ``matches(text, pattern)`` and ``asset(name)`` (``len``
and ``words`` are metadata scorers, in :mod:`cbdsl.scorers.metadata`).

Statistics look at a population of rows: ``quantile``, ``mean``, ``std``,
``rank``, ``zscore``, ``minmax`` and ``top`` (DataComp's keep-the-top-fraction).
The population is the pool as it enters the filter stage; ``per COL`` makes
it each group of COL, ``among COND`` the rows where COND holds (rows outside
it still get the group's value for ``quantile``, ``mean`` and ``std``; they
get null for ``rank`` and false for ``top``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from cbdsl.compiler import regex_cost
from cbdsl.compiler.aggregates import Maximum, Mean, Minimum, Quantile, Std, Threshold
from cbdsl.scorers.registry import Input, LowerContext, Params, function, statistic

# --- row-by-row functions ---------------------------------------------------------


@function("min", inputs=[Input("x", "number", variadic=True, min_count=2)], output="join")
def min_(ctx: LowerContext, *xs):
    """The smallest of its arguments, row by row (`min(width, height)`); missing if any one is."""
    import polars as pl

    return _missing_if_any(xs, pl.min_horizontal(*xs))


@function("max", inputs=[Input("x", "number", variadic=True, min_count=2)], output="join")
def max_(ctx: LowerContext, *xs):
    """The largest of its arguments, row by row; missing if any one is."""
    import polars as pl

    return _missing_if_any(xs, pl.max_horizontal(*xs))


def _missing_if_any(xs, out):
    """Null where an argument is null (DESIGN rule 9). Polars' min/max_horizontal skip nulls, so
    `min(width, height) >= 200` would pass a row with no height; NumPy's `np.minimum`, which DataComp's
    basic filter uses, gives NaN there and the row fails."""
    import polars as pl

    return pl.when(pl.any_horizontal(*(x.is_null() for x in xs))).then(None).otherwise(out)


@function("abs", inputs=[Input("x", "number")], output="same")
def abs_(ctx: LowerContext, x):
    """Absolute value."""
    return x.abs()


@function("log", inputs=[Input("x", "number")], output="float")
def log(ctx: LowerContext, x):
    """Natural logarithm."""
    return x.cast(_float()).log()


@function("sqrt", inputs=[Input("x", "number")], output="float")
def sqrt(ctx: LowerContext, x):
    """Square root."""
    return x.cast(_float()).sqrt()


class RoundParams(Params):
    digits: int = Field(default=0, ge=0, le=15, description="decimal places to keep")


@function("round", inputs=[Input("x", "number")], params=RoundParams, output="same")
def round_(ctx: LowerContext, x):
    """Round to `digits` decimal places."""
    return x.round(ctx.params.digits)


@function("lower", inputs=[Input("text", "str")], output="str")
def lower(ctx: LowerContext, text):
    """The text in lower case."""
    return text.str.to_lowercase()


_UNSUPPORTED_REGEX = re.compile(r"\(\?<?[=!]|\\[1-9]")


class MatchesParams(Params):
    pattern: str = Field(description="a regular expression (Python `re` syntax, no look-around or back-references)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        nested = regex_cost.nesting_problem(value)
        if nested is not None:
            raise PydanticCustomError("regex_too_large", "this pattern is too large to run: {why}", {"why": nested})
        try:
            re.compile(value)
        except re.error as err:
            raise PydanticCustomError("invalid_regex", "invalid regular expression: {error}", {"error": str(err)})
        if _UNSUPPORTED_REGEX.search(value):
            raise PydanticCustomError(
                "invalid_regex",
                "look-around and back-references are not supported (patterns run on Polars' regex engine)",
            )
        too_large = regex_cost.size_problem(value)
        if too_large is not None:
            raise PydanticCustomError("regex_too_large", "this pattern is too large to run: {why}", {"why": too_large})
        return value


@function("matches", inputs=[Input("text", "str")], params=MatchesParams, output="bool")
def matches(ctx: LowerContext, text):
    """Whether the text contains a match of the regular expression."""
    return text.str.contains(ctx.params.pattern)


class AssetParams(Params):
    name: str = Field(min_length=1, description="the name the asset was registered under (`cbdsl pool add-asset`)")


@function("asset", params=AssetParams, output="asset")
def asset(ctx: LowerContext):
    """A named file registered into the pool (an id list, a target corpus); used as `id in asset("name")`."""
    raise NotImplementedError("assets are resolved by the planner against the pool, not lowered as expressions")


# --- statistics -------------------------------------------------------------------


def _float():
    import polars as pl

    return pl.Float64


def _masked(ctx: LowerContext, x):
    """x where `among` holds, null elsewhere (for statistics that give each row its own value)."""
    import polars as pl

    return x if ctx.among is None else pl.when(ctx.among).then(x)


# A statistic with an ``aggregate`` is two parts (see :attr:`~cbdsl.compiler.signatures.Entry.aggregate`): what
# it aggregates over the population (:mod:`cbdsl.compiler.aggregates`; `per` groups and `among` are the
# lowering's business) and the row-local ``lower`` that combines those values with each row's x through
# ``ctx.values``. In one query the values are aggregates broadcast to every row; the executor computes them
# first, exactly, and passes literals, so the filters become row-local and go into the scan
# (tests/benchmarks/README.md, fix 4).


class QuantileParams(Params):
    q: float = Field(ge=0, le=1, description="the quantile, a fraction from 0 to 1 (30% is 0.30)")
    method: Literal["linear", "lower", "higher", "nearest", "midpoint"] = Field(
        default="linear", description="how to interpolate between two rows"
    )


def _quantile(p: QuantileParams) -> dict:
    return {"q": Quantile(p.q, p.method)}


@statistic("quantile", inputs=[Input("x", "number")], params=QuantileParams, output="float", aggregate=_quantile)
def quantile(ctx: LowerContext, x):
    """The q-quantile of x over the population (`filter clip >= quantile(clip, 0.7)`)."""
    return ctx.values["q"]


def _mean(p: Params) -> dict:
    return {"mean": Mean()}


@statistic("mean", inputs=[Input("x", "number")], output="float", aggregate=_mean)
def mean(ctx: LowerContext, x):
    """Mean of x over the population."""
    return ctx.values["mean"]


class StdParams(Params):
    ddof: int = Field(default=1, ge=0, description="delta degrees of freedom (1: sample standard deviation)")


def _std(p: StdParams) -> dict:
    return {"std": Std(p.ddof)}


@statistic("std", inputs=[Input("x", "number")], params=StdParams, output="float", aggregate=_std)
def std(ctx: LowerContext, x):
    """Standard deviation of x over the population."""
    return ctx.values["std"]


class RankParams(Params):
    descending: bool = Field(default=False, description="rank 1 is the largest value when true")


@statistic("rank", inputs=[Input("x", "number")], params=RankParams, output="float")
def rank(ctx: LowerContext, x):
    """Rank of each row's x in the population (1 is the smallest; ties share the average rank)."""
    out = _masked(ctx, x).rank("average", descending=ctx.params.descending)  # every row's value: no aggregate
    return out if ctx.per is None else out.over(ctx.per)


def _mean_std(p: Params) -> dict:
    return {"mean": Mean(), "std": Std()}


@statistic("zscore", inputs=[Input("x", "number")], output="float", aggregate=_mean_std)
def zscore(ctx: LowerContext, x):
    """(x - mean) / std, with mean and std over the population."""
    return (x - ctx.values["mean"]) / ctx.values["std"]


def _min_max(p: Params) -> dict:
    return {"min": Minimum(), "max": Maximum()}


@statistic("minmax", inputs=[Input("x", "number")], output="float", aggregate=_min_max)
def minmax(ctx: LowerContext, x):
    """x scaled to [0, 1] by the population's min and max."""
    lo, hi = ctx.values["min"], ctx.values["max"]
    return (x - lo) / (hi - lo)


class TopParams(Params):
    frac: float = Field(gt=0, le=1, description="the fraction of the population to keep (30% is 0.30)")


def _threshold(p: TopParams) -> dict:
    return {"threshold": Threshold(p.frac)}


@statistic("top", inputs=[Input("x", "number")], params=TopParams, output="bool", aggregate=_threshold)
def top(ctx: LowerContext, x):
    """True for rows whose x is at least DataComp's threshold for the top `frac` (ties kept).

    As DataComp's ``get_threshold`` (``-np.sort(-x)[int(n * frac)]``): sort the
    population's values in descending order, missing values (null, NaN) last
    but counted in ``n``, and take the one at index ``floor(n * frac)`` (the
    last one if that is past the end); keep ``x >= threshold``. A missing value
    is never kept, and when the index falls on one nothing is kept, as in
    DataComp (``x >= NaN`` is false). Rows outside ``among`` are not kept.
    """
    keep = x >= ctx.values["threshold"]
    if ctx.among is not None:
        keep = keep & ctx.among
    return keep.fill_null(False)
