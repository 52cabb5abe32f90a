"""Lowering: plan expressions and steps -> Polars expressions and lazy frames.

Native Polars expressions wherever one exists (filters, arithmetic,
quantiles, ranks, per-group windows); the registry entry of each function or
statistic builds its own expression (``Entry.lower``). What Polars cannot do
(dedup grouping, quotas, k-center, stable hashing) is left to the executor,
which calls :mod:`cbdsl.pipelines.engine.kernels` on whole columns.

:func:`lower` returns a :class:`Lowered` program: the filter-stage lazy frame
in two phases (before and after the expensive scores, see
:mod:`cbdsl.compiler.rules.predicate_ordering`) and the tail steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from cbdsl.compiler.aggregates import Aggregation
from cbdsl.compiler.ir import (
    Apply, AssetIds, BudgetStep, Col, DedupStep, Derive, FilterStep, Lit, MixStep, Op, Plan, Score, SelectStep, Stat,
)
from cbdsl.compiler.text_classes import PY_SPACE
from cbdsl.compiler.types import BOOL, FLOAT, INT, UNKNOWN, Type, numeric_result, parse_type
from cbdsl.compiler.signatures import LowerContext, Registry

HASH = "#hash"  # the stable id hash column (kernels.hash_strings), every tie is broken by it

_ARITH = {"+": "__add__", "-": "__sub__", "*": "__mul__"}
_COMPARE = {"<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__", "==": "__eq__", "!=": "__ne__"}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}  # c OP x  is  x FLIPPED[OP] c
# An integer count W against a number c, as "W >= m" and whether to negate it.
_AT_LEAST: dict[str, Callable[[float], tuple[int, bool]]] = {
    ">=": lambda c: (math.ceil(c), False),
    ">": lambda c: (math.floor(c) + 1, False),
    "<": lambda c: (math.ceil(c), True),
    "<=": lambda c: (math.floor(c) + 1, True),
}
_MAX_WORDS_REGEX = 64  # past this the regex's repetition outgrows the count it replaces
_NUMERIC_OUTPUTS = frozenset({"float", "same", "join"})  # outputs that may be NaN: made null by _no_nan
_CHEAP = frozenset({BOOL, INT, FLOAT})  # column types a scan decodes and a predicate tests cheaply


@dataclass
class ExprLowering:
    """Turns plan expressions into Polars expressions for one pool.

    ``pool`` lets a lowering read a model asset (a tokenizer); :func:`cbdsl.pipelines.engine.execute.execute` sets it
    to the pool it runs against when the caller of :func:`lower` did not."""

    schema: Mapping[str, str]
    registry: Registry
    asset_ids: Callable[[str], list[str]] = field(default=lambda name: [])
    pool: Any = None
    #: Statistics computed before the filter stage (:meth:`Lowered.with_statistics`): column -> a frame of
    #: the aggregates, one row, or one per ``per`` group (the group column first).
    statistics: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    #: Columns lowered in place, as the expression of the row-local step that computes them (a derive, or a
    #: statistic in :attr:`statistics`), so that a predicate reads pool columns only (:meth:`Lowered.in_scan`).
    inline: Mapping[str, Derive | Stat] = field(default_factory=dict)

    def __call__(self, e) -> pl.Expr:
        match e:
            case Col(name=n) if n in self.inline:
                step = self.inline[n]
                return self(step.expr) if isinstance(step, Derive) else self._statistic(step)
            case Col(name=n):
                return _no_nan(pl.col(n)) if parse_type(self.schema.get(n, "any")) == FLOAT else pl.col(n)
            case Lit(value=v):
                return pl.lit(v)
            case Apply(fn=fn, args=args, params=params):
                entry = self.registry.get(fn, "expr")
                ctx = LowerContext(
                    params=entry.params.model_validate(params),
                    arg_types=tuple(self._type(a) for a in args),
                    arg_columns=tuple(a.name if isinstance(a, Col) else None for a in args),
                    schema=self.schema,
                    pool=self.pool,
                )
                out = entry.lower(ctx, *(self(a) for a in args))
                return _no_nan(out) if entry.output in _NUMERIC_OUTPUTS and self.static_type(e) != INT else out
            case Op(name=name, args=args):
                return self._op(name, args)
        raise TypeError(f"cannot lower {type(e).__name__}")

    def _type(self, e):
        if isinstance(e, Col) and e.name in self.schema:
            return parse_type(self.schema[e.name])
        return None

    def static_type(self, e) -> Type:
        """The type of ``e`` where the pool's schema decides it (unknown otherwise: a derived column, a score).

        Why: an integer is never NaN, so its value needs no :func:`_no_nan`, whose ``fill_nan`` Polars expands
        into a conditional over every row (the most of DataComp's size filters' cost)."""
        match e:
            case Col(name=n):
                return parse_type(self.schema[n]) if n in self.schema and n not in self.inline else UNKNOWN
            case Lit(value=v):
                return INT if isinstance(v, int) and not isinstance(v, bool) else (FLOAT if isinstance(v, float)
                                                                                   else UNKNOWN)
            case Apply(fn=fn, args=args):
                entry = self.registry.get(fn, "expr")
                types = tuple(self.static_type(a) for a in args)
                if entry is None or any(t.is_unknown for t in types):
                    return UNKNOWN
                return entry.output_type(types)
            case Op(name=name, args=args) if name in _ARITH or name == "neg":
                types = [self.static_type(a) for a in args]
                return types[0] if name == "neg" else numeric_result(types[0], types[1], name)
        return UNKNOWN

    def _op(self, name: str, args) -> pl.Expr:
        if name in ("in", "not in"):
            value, container = args
            if isinstance(container, AssetIds):
                items = [str(v) for v in self.asset_ids(container.name)]
                lhs = self(value).cast(pl.String)
            else:
                items = container.value
                lhs = self(value)
            if items and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
                # 1 in [1.0] and 1.0 in [1]: compare numbers as numbers, whatever their width
                out = lhs.cast(pl.Float64).is_in(pl.Series(items, dtype=pl.Float64).implode())
            else:
                dtype = pl.String if all(isinstance(v, str) for v in items) else None
                out = lhs.is_in(pl.Series(items, dtype=dtype).implode())
            return out if name == "in" else ~out
        if name in _AT_LEAST and (fast := self._words_test(name, *args)) is not None:
            return fast
        lowered = [self(a) for a in args]
        if name in _ARITH or name == "neg":
            out = -lowered[0] if name == "neg" else getattr(lowered[0], _ARITH[name])(lowered[1])
            return out if self.static_type(Op(name=name, args=args)) == INT else _no_nan(out)
        if name == "not":
            return ~lowered[0]
        if name == "and":
            return lowered[0] & lowered[1]
        if name == "or":
            return lowered[0] | lowered[1]
        if name == "/":
            return _no_nan(lowered[0].cast(pl.Float64) / lowered[1].cast(pl.Float64))
        return getattr(lowered[0], _COMPARE[name])(lowered[1])

    def _words_test(self, name: str, left, right) -> pl.Expr | None:
        """``words(x) OP c`` (either side) as one regex test; None when the comparison is not of that shape.

        Why: ``words`` counts every run of non-space (Polars pays per match), while
        ``words(x) >= m`` only asks whether ``m`` runs exist: exactly
        ``x.str.contains("W(?:S+W+){m-2}S+W")`` for ``m >= 2``, ``W`` for 1, true for ``m <= 0``,
        where S is Python's whitespace (:data:`~cbdsl.compiler.text_classes.PY_SPACE`) and W any
        other character: the same classes and the same nulls as the count.
        DataComp's ``words(text) > 2`` on 12.8M captions: 7-10 s of CPU as a
        count over three profiles (tests/benchmarks/README.md, fix 1), 1.0 s as one search.
        """
        if isinstance(left, Lit):
            left, right, name = right, left, _FLIPPED[name]
        if not (isinstance(left, Apply) and left.fn == "words" and len(left.args) == 1
                and left.params.get("split", "whitespace") == "whitespace"
                and isinstance(right, Lit) and isinstance(right.value, (int, float))
                and not isinstance(right.value, bool) and math.isfinite(right.value)):
            return None
        at_least, negate = _AT_LEAST[name](right.value)
        if at_least > _MAX_WORDS_REGEX:
            return None
        text = self(left.args[0])
        word, space = f"[^{PY_SPACE}]", f"[{PY_SPACE}]"
        if at_least <= 0:
            test = pl.when(text.is_not_null()).then(pl.lit(True))
        elif at_least == 1:
            test = text.str.contains(word)
        else:
            test = text.str.contains(f"{word}(?:{space}+{word}+){{{at_least - 2}}}{space}+{word}")
        return ~test if negate else test

    def stat(self, s: Stat) -> pl.Expr:
        """A statistic's column: its aggregates over the population (per group with ``per``), or the values the
        executor computed first (:attr:`statistics`), combined with each row by the statistic's lowering."""
        return self._statistic(s).alias(s.column)

    def _statistic(self, s: Stat) -> pl.Expr:
        entry = self.registry.get(s.stat, "expr")
        ctx, x = self._stat_context(s, entry)
        if entry.aggregate is not None:
            known = self.statistics.get(s.column)
            if known is None:
                exprs = self.aggregation(s).exprs()
                values = {k: v if s.per is None else v.over(s.per) for k, v in exprs.items()}
            else:
                # the raw column, as over() and group_by() see it (a NaN group is not the null group); a derived
                # one inlined, as in_scan lowers it
                per = self(Col(name=s.per)) if s.per in self.inline else pl.col(s.per) if s.per else None
                values = {k: _value_of(known, k, s.per, per) for k in known.columns if k != s.per}
            ctx = replace(ctx, values=values)
        out = entry.lower(ctx, x)
        return _no_nan(out) if entry.output in _NUMERIC_OUTPUTS else out

    def aggregation(self, s: Stat) -> Aggregation:
        """The statistic's aggregates, its population's values (``x`` where ``among`` holds) and ``per``: what
        the executor computes first (:mod:`cbdsl.pipelines.engine.exact`)."""
        entry = self.registry.get(s.stat, "expr")
        ctx, x = self._stat_context(s, entry)
        return Aggregation(x=x, among=ctx.among, per=s.per, aggregates=entry.aggregate(ctx.params))

    def _stat_context(self, s: Stat, entry) -> tuple[LowerContext, pl.Expr]:
        ctx = LowerContext(
            params=entry.params.model_validate(s.params),
            arg_types=(self._type(s.arg),),
            schema=self.schema,
            per=s.per,
            among=self(s.among) if s.among is not None else None,
            pool=self.pool,
        )
        return ctx, self(s.arg)


def _value_of(table: pl.DataFrame, name: str, per: str | None, group: pl.Expr | None) -> pl.Expr:
    """An aggregate computed first, as a literal (one row), or per group as a lookup of the row's ``per`` value
    ``group`` (``replace_strict`` keys null, NaN and -0.0 as ``group_by`` and ``over`` group them)."""
    column = table.get_column(name)
    if per is None:
        return pl.lit(column[0], dtype=column.dtype)
    return group.replace_strict(table.get_column(per), column, default=None, return_dtype=column.dtype)


def _conjunction(predicates: list[pl.Expr]) -> pl.Expr | None:
    out = None
    for p in predicates:
        out = p if out is None else out & p
    return out


def _no_nan(e: pl.Expr) -> pl.Expr:
    """NaN as null (DESIGN rule 9): a missing value then fails every comparison, ``in`` and filter,
    sorts last, and is skipped by every statistic, as Polars does for nulls. Polars alone would
    treat NaN as the largest number (``NaN >= x`` is true). A no-op on integers; numbers only."""
    return e.fill_nan(None)


@dataclass
class Lowered:
    """A plan made runnable: filter-stage lazy frames and the tail steps."""

    plan: Plan
    exprs: ExprLowering
    early_compute: list[Any]  # score/derive/stat steps that need no expensive score
    late_compute: list[Any]
    early_filters: list[FilterStep]
    late_filters: list[FilterStep]
    dedup: DedupStep | None
    mix: MixStep | None
    budget: BudgetStep | None
    select: SelectStep

    def compute(self, frame: pl.LazyFrame, steps, score_columns: Callable[[pl.LazyFrame, list[Score]], pl.LazyFrame]):
        """Add computed columns in dependency order; consecutive row-local steps batch into one with_columns."""
        batch: list[pl.Expr] = []
        pending_scores: list[Score] = []
        for step in steps:
            if isinstance(step, Score):
                if batch:
                    frame, batch = frame.with_columns(batch), []
                pending_scores.append(step)
                continue
            if pending_scores:
                frame, pending_scores = score_columns(frame, pending_scores), []
            if isinstance(step, Derive):
                # a derived column may read one computed in the same batch: flush first
                if any(c in {b.meta.output_name() for b in batch} for c in step.reads):
                    frame, batch = frame.with_columns(batch), []
                batch.append(self.exprs(step.expr).alias(step.column))
            elif isinstance(step, Stat):
                if any(c in {b.meta.output_name() for b in batch} for c in step.reads):
                    frame, batch = frame.with_columns(batch), []
                batch.append(self.exprs.stat(step))
        if batch:
            frame = frame.with_columns(batch)
        if pending_scores:
            frame = score_columns(frame, pending_scores)
        return frame

    def first_statistics(self) -> list[Stat]:
        """The statistics the executor may compute before the filter stage (DESIGN rule 1 makes each one's
        population the pool as it enters the stage, which no filter changes): those with an aggregate
        (:attr:`~cbdsl.compiler.signatures.Entry.aggregate`): all but `rank`. One over a model score too: the
        score is over every row anyway (the optimizer moves no filter before it) and cached once computed."""
        return [s for s in self.plan.of(Stat) if self.exprs.registry.get(s.stat, "expr").aggregate is not None]

    def with_statistics(self, values: Mapping[str, pl.DataFrame]) -> Lowered:
        """The same program with these statistics' aggregates known (column -> the frame
        :meth:`ExprLowering.aggregates` gave): their columns become row-local, so Polars can push the filters
        that read them into the scan."""
        exprs = replace(self.exprs, statistics={**self.exprs.statistics, **values})
        return replace(self, exprs=exprs)

    def in_scan(self, filters: list[FilterStep]) -> tuple[pl.Expr | None, pl.Expr | None] | None:
        """The filters as predicates over pool columns, for the scan: every derived column and every statistic
        computed first lowered in place; None when a filter reads a score or a statistic computed in the query.

        Two predicates (either may be None): the filters that read numbers and booleans only, cheap to decode
        and test on every row, and the others (strings), to test on the rows that pass the first. DataComp's
        filter on 12.8M rows: the captions of about a fifth of them (tests/benchmarks/README.md, fix 4)."""
        if not filters:
            return None
        inline: dict[str, Derive | Stat] = {}
        for step in self.plan.producers(set().union(*(f.reads for f in filters))):
            if not (isinstance(step, Derive) or (isinstance(step, Stat) and step.column in self.exprs.statistics)):
                return None
            inline[step.column] = step
        exprs = replace(self.exprs, inline=inline)
        numeric, other = [], []
        for f in filters:
            steps = self.plan.producers(f.reads)
            pool_columns = f.reads.union(*(s.reads for s in steps)) - {s.column for s in steps}
            cheap = all(parse_type(self.exprs.schema.get(c, "any")) in _CHEAP for c in pool_columns)
            (numeric if cheap else other).append(exprs(f.predicate).fill_null(False))
        return _conjunction(numeric), _conjunction(other)

    def predicate(self, filters: list[FilterStep]) -> pl.Expr | None:
        if not filters:
            return None
        out = self.exprs(filters[0].predicate).fill_null(False)
        for f in filters[1:]:
            out = out & self.exprs(f.predicate).fill_null(False)
        return out


def lower(plan: Plan, schema: Mapping[str, str], asset_ids: Callable[[str], list[str]] | None = None,
          pool: Any = None, *, registry: Registry) -> Lowered:
    """Plan -> :class:`Lowered`: split the filter stage around the expensive scores.

    ``registry`` holds the lowering of every function and statistic (:func:`cbdsl.stages.lower` passes cbdsl's)."""
    exprs = ExprLowering(schema=schema, registry=registry, asset_ids=asset_ids or (lambda name: []), pool=pool)
    filters = plan.of(FilterStep)
    early_filters = [f for f in filters if f.early]
    late_filters = [f for f in filters if not f.early]
    compute = [s for s in plan.steps if isinstance(s, (Score, Derive, Stat))]
    expensive: set[str] = {s.column for s in compute if isinstance(s, Score) and s.cost != "metadata"}
    for s in compute:  # closed over readers, in dependency order
        if s.reads & expensive:
            expensive.add(s.writes)
    early = [s for s in compute if s.writes not in expensive] if early_filters else []
    late = [s for s in compute if s not in early]
    dedups, mixes, budgets = plan.of(DedupStep), plan.of(MixStep), plan.of(BudgetStep)
    return Lowered(
        plan=plan, exprs=exprs, early_compute=early, late_compute=late,
        early_filters=early_filters, late_filters=late_filters,
        dedup=dedups[0] if dedups else None, mix=mixes[0] if mixes else None,
        budget=budgets[0] if budgets else None, select=plan.of(SelectStep)[0],
    )
