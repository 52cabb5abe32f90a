"""What a statistic aggregates over its population, declared once (:attr:`~cbdsl.compiler.signatures.Entry.aggregate`)
and read two ways.

In one Polars query each aggregate is an expression (:meth:`expr`: the single-query lowering and its
goldens). The executor computes it first, from the population in pieces combined exactly
(:mod:`cbdsl.pipelines.engine.exact`), so a value is the same bits whichever engine ran it and however the
pool was cut. For that each aggregate says what it needs from the whole population:

- an **order statistic** (:class:`Quantile`, :class:`Threshold`, :class:`Minimum`, :class:`Maximum`): the
  ranks of the elements it reads (:meth:`ranks`, from the population's size and its count of values), and
  its value from those elements (:meth:`value`). Elements are found by counting, never by sorting the whole
  population in one place.
- a **moment** (:class:`Mean`, :class:`Std`): the exact sums of the values and of their squares; the value
  is rounded once from them (:meth:`value`), so it does not depend on the order of the additions, as a float
  sum does (Polars' pairwise sum changes with the chunks and threads it runs on).

Missing values (null; NaN is null by DESIGN rule 9) are outside every aggregate but count in ``top``'s
population. Infinities are values: a mean over both signs of infinity is NaN, as in IEEE arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # `cbdsl check` declares aggregates without importing Polars
    import polars as pl


@dataclass(frozen=True)
class Quantile:
    """The ``q``-quantile with Polars' interpolation ``method``, computed as Polars (2.2) does: the position
    ``at = (valid - 1) * q`` among the values in order, its floor and ceiling (``nearest``: rounded half away
    from zero) the elements read, and between two of them ``(at - floor(at)) * (upper - lower) + lower``
    (``linear``) or ``(lower + upper) / 2`` (``midpoint``) (tests/test_exact_statistics.py checks these
    against Polars). Missing values play no part (Polars 2.1 added their count to ``at``, which changed the
    rounding of the fraction and so the last bits)."""

    q: float
    method: Literal["linear", "lower", "higher", "nearest", "midpoint"] = "linear"

    def expr(self, population: pl.Expr) -> pl.Expr:
        return population.quantile(self.q, interpolation=self.method)

    def ranks(self, size: int, valid: int) -> tuple[int, ...] | None:
        if valid == 0:
            return None
        at = (valid - 1) * self.q
        if self.method == "nearest":
            whole = math.floor(at)
            return (min(whole + (at - whole >= 0.5), valid - 1),)
        lower, upper = min(math.floor(at), valid - 1), min(math.ceil(at), valid - 1)
        return {"lower": (lower,), "higher": (upper,)}.get(self.method, (lower, upper))

    def value(self, size: int, valid: int, elements: tuple) -> Any:
        if len(elements) == 1:
            return float(elements[0])
        lower, upper = float(elements[0]), float(elements[1])
        if lower == upper:
            return lower
        if self.method == "midpoint":
            return (lower + upper) / 2.0
        at = (valid - 1) * self.q
        return (at - math.floor(at)) * (upper - lower) + lower


class _Element:
    """An order statistic whose value is the one element it reads."""

    def value(self, size: int, valid: int, elements: tuple) -> Any:
        return elements[0]


@dataclass(frozen=True)
class Threshold(_Element):
    """DataComp's ``get_threshold`` (``top``): the element at index ``floor(size * frac)`` of the descending
    population, missing values last but counted in ``size`` (the last index when past the end); none when
    that index falls on a missing value or the population is empty."""

    frac: float

    def expr(self, population: pl.Expr) -> pl.Expr:
        import polars as pl

        n = population.len()
        index = pl.max_horizontal(pl.min_horizontal((n * self.frac).floor(), n - 1), 0).cast(pl.UInt32)
        # slice, not gather: an empty population has no threshold and keeps nothing
        return population.sort(descending=True, nulls_last=True).slice(index, 1).first()

    def ranks(self, size: int, valid: int) -> tuple[int, ...] | None:
        if size == 0:
            return None
        index = max(min(math.floor(size * self.frac), size - 1), 0)
        return None if index >= valid else (valid - 1 - index,)


@dataclass(frozen=True)
class Minimum(_Element):
    """The smallest value."""

    def expr(self, population: pl.Expr) -> pl.Expr:
        return population.min()

    def ranks(self, size: int, valid: int) -> tuple[int, ...] | None:
        return (0,) if valid else None


@dataclass(frozen=True)
class Maximum(_Element):
    """The largest value."""

    def expr(self, population: pl.Expr) -> pl.Expr:
        return population.max()

    def ranks(self, size: int, valid: int) -> tuple[int, ...] | None:
        return (valid - 1,) if valid else None


@dataclass(frozen=True)
class Sums:
    """The exact sums of a population's finite values and of their squares, and its infinities."""

    valid: int
    total: Fraction
    squares: Fraction
    plus_inf: int = 0
    minus_inf: int = 0


@dataclass(frozen=True)
class Mean:
    """The mean: the exact sum over the count of values, rounded once to the nearest float."""

    def expr(self, population: pl.Expr) -> pl.Expr:
        return population.mean()

    def value(self, sums: Sums) -> float | None:
        if sums.valid == 0:
            return None
        if sums.plus_inf or sums.minus_inf:
            return math.nan if sums.plus_inf and sums.minus_inf else math.inf if sums.plus_inf else -math.inf
        return _to_float(sums.total / sums.valid)


@dataclass(frozen=True)
class Std:
    """The standard deviation with ``ddof`` delta degrees of freedom: the square root of the variance
    ``(squares - total**2 / valid) / (valid - ddof)``, computed exactly and rounded once before the root.
    None for ``valid <= ddof``, NaN over an infinity (as Polars)."""

    ddof: int = 1

    def expr(self, population: pl.Expr) -> pl.Expr:
        return population.std(ddof=self.ddof)

    def value(self, sums: Sums) -> float | None:
        if sums.valid <= self.ddof:
            return None
        if sums.plus_inf or sums.minus_inf:
            return math.nan
        variance = (sums.squares - sums.total * sums.total / sums.valid) / (sums.valid - self.ddof)
        return math.sqrt(_to_float(variance))


Order = Quantile | Threshold | Minimum | Maximum
Moment = Mean | Std
Aggregate = Order | Moment


def _to_float(x: Fraction) -> float:
    """``x`` rounded to the nearest float (Python rounds a Fraction correctly); past the largest, infinity."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


@dataclass(frozen=True)
class Aggregation:
    """One statistic's aggregates (name -> aggregate) over the values of ``x`` where ``among`` holds (every
    row when None), per group of ``per`` (a pool column) or over all rows."""

    x: pl.Expr
    among: pl.Expr | None
    per: str | None
    aggregates: dict[str, Aggregate]

    @property
    def population(self) -> pl.Expr:
        return self.x if self.among is None else self.x.filter(self.among)

    def exprs(self) -> dict[str, pl.Expr]:
        """The aggregates as Polars expressions, ungrouped (the lowering groups them by ``per``)."""
        return {name: a.expr(self.population) for name, a in self.aggregates.items()}
