"""The local executor: a lowered plan against a pool -> an exact, deterministic selection.

The filter stage is one Polars lazy query (two phases when the optimizer
moved cheap filters before expensive scores). The tail runs on the
survivors: the dedup method, then the mix quotas and the budget (with the
kernels of :mod:`cbdsl.pipelines.engine.kernels`, on whole columns), then
the select strategy within each mix group. Dedup methods and select
strategies are registry entries: the engine calls their ``run`` with a
:class:`~cbdsl.scorers.api.DedupContext` or a
:class:`~cbdsl.scorers.api.SelectContext` and never branches on their id.

Determinism: every ordering ends with the stable id hash (``#hash``) and the
id itself, every random choice is a seeded function of the id hash, and no
step depends on thread scheduling, so the same policy, pool and scores give
the same selection byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from cbdsl.compiler.ir import (
    Apply, BudgetStep, Col, DedupStep, Derive, FilterStep, MixStep, Scan, Score, SelectStep, Stat,
    pexpr_text,
)
from cbdsl.compiler.lower import HASH, Lowered
from cbdsl.pipelines.engine.exact import InMemory, Parts, aggregate
from cbdsl.pipelines.engine.kernels import hashing
from cbdsl.pipelines.engine.kernels.quotas import allocate_quotas
from cbdsl.pipelines.engine.scores import provide
from cbdsl.scorers.api import DedupContext, RunError, SelectContext, in_pick_order

KEY = "#key"  # per-row selection key: lower is better
GROUP = "#group"
SCORE = "#score"
TOKENS = "#tokens"
DEDUP_ARG = "#dedup{}"
SELECT_ARG = "#select{}"


@dataclass
class FunnelRow:
    clause: str
    rows_in: int
    rows_out: int
    passed_alone: int  # rows of the whole filter-stage population that pass this clause alone


@dataclass
class RunResult:
    selection: pl.DataFrame  # id, group, score, rank (rank 1 is the first pick)
    pool_rows: int
    survivors: int
    after_dedup: int
    quotas: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> available, quota, shortfall
    warnings: list[str] = field(default_factory=list)
    funnel: list[FunnelRow] | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    frame: pl.DataFrame | None = None  # explain: the filter-stage population with one flag column per filter
    deduped_ids: pl.Series | None = None  # the ids that survived dedup (explain shows them)
    missing: dict[str, int] = field(default_factory=dict)  # explain: score -> rows without a value (null or NaN)

    def selection_hash(self) -> str:
        """sha256 over the selected ids in rank order (what `submit` records and `reproduce` compares)."""
        import hashlib

        ids = self.selection.get_column(self.selection.columns[0])
        text = ids.cast(pl.String).str.join("\n").item() + "\n" if len(ids) else ""  # one pass in Polars
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


ScoreProvider = Any  # callable(frame: pl.LazyFrame, steps: list[Score]) -> pl.LazyFrame


def model_scores(low: Lowered, pool) -> ScoreProvider:
    """The score provider of a run: cached model scores, population scorers over the whole pool."""
    definitions = {s.writes: s for s in low.plan.steps if s.writes}

    def population(step: Score) -> pl.LazyFrame:
        """The whole pool with every computed column the step's inputs need (dependencies first)."""
        deps = low.plan.producers(step.reads)
        frame = pool.scan(list(low.plan.scan.columns)).with_columns(_hash_column(low.plan.scan.id_column))
        return low.compute(frame, deps, provider)

    def provider(frame: pl.LazyFrame, steps: list[Score]) -> pl.LazyFrame:
        return provide(frame, steps, pool, low.exprs, definitions=definitions, population=population,
                       registry=low.exprs.registry)

    return provider


def _hash_column(id_column: str) -> pl.Expr:
    return pl.col(id_column).cast(pl.String).map_batches(
        lambda s: pl.Series(HASH, hashing.hash_strings(s), dtype=pl.UInt64), return_dtype=pl.UInt64
    ).alias(HASH)


def execute(low: Lowered, pool, *, score_columns: ScoreProvider | None = None, explain: bool = False,
            examples: int = 3, statistics: bool = True) -> RunResult:
    """Run a lowered plan against ``pool`` (a :class:`~cbdsl.pipelines.data.pool.Pool`).

    ``statistics=False`` leaves every statistic a column of the one filter query instead of computing it first
    (:func:`statistics_first`): the same selection, slower, and with sums in thread order; what the tests compare
    runs with."""
    if low.exprs.pool is None:
        low.exprs.pool = pool  # a lowering may read a model asset of the pool (token_count's tokenizer)
    plan = low.plan
    scan = plan.scan
    if score_columns is None:
        score_columns = model_scores(low, pool)
    id_col = scan.id_column
    frame = pool.scan(list(scan.columns))
    if statistics:  # explain too: the same values, so the same selection as a run
        low = statistics_first(low, pool, score_columns)
    if not explain:
        return run_tail(low, pool, query(low, frame, score_columns).collect())
    # explain: every row is kept and hashed: the funnel's dropped examples are ordered by the hash
    frame = low.compute(frame.with_columns(_hash_column(id_col)), [*low.early_compute, *low.late_compute],
                        score_columns)
    filters = [*low.early_filters, *low.late_filters]
    flags = [low.exprs(f.predicate).fill_null(False).alias(f"#f{i}") for i, f in enumerate(filters)]
    full = frame.with_columns([*flags, *_tail_columns(low)]).collect()
    funnel, thresholds, dropped = _funnel(full, filters, plan, examples, id_col)
    keep = pl.all_horizontal([pl.col(f"#f{i}") for i in range(len(filters))]) if filters else pl.lit(True)
    return replace(run_tail(low, pool, full.filter(keep)), funnel=funnel, thresholds=thresholds,
                   examples=dropped, frame=full, missing=_missing(full, plan, pool.schema))


def run_tail(low: Lowered, pool, survivors: pl.DataFrame) -> RunResult:
    """The tail on the filter stage's survivors (in pool order, with the id hash and :func:`_tail_columns`):
    dedup, mix quotas, budget, select. Both engines end here, on one machine, where every survivor meets."""
    survivors = survivors.select(tail_inputs(low))
    deduped = dedup(survivors, low, pool) if low.dedup is not None else survivors
    return select_from(low, pool, deduped, survivors.height)


def select_from(low: Lowered, pool, deduped: pl.DataFrame, survivors: int) -> RunResult:
    """The tail after dedup: mix quotas, budget, select over ``deduped`` (in :func:`dedup`'s order) of the
    ``survivors`` rows that passed the filters."""
    id_col = low.plan.scan.id_column
    warnings: list[str] = []
    selection, quotas = _select(deduped, low, pool.card.rows, id_col, warnings, pool)
    return RunResult(selection=selection, pool_rows=pool.card.rows, survivors=survivors,
                     after_dedup=deduped.height, quotas=quotas, warnings=warnings,
                     deduped_ids=deduped.get_column(id_col))


def tail_inputs(low: Lowered) -> list[str]:
    """The survivors' columns the tail reads: the id, its hash and :func:`_tail_columns`."""
    return [low.plan.scan.id_column, HASH, *(e.meta.output_name() for e in _tail_columns(low))]


Population = Any  # callable(low, columns: list[str], steps: list) -> exact.Parts: the pool's columns with the steps'


def statistics_first(low: Lowered, pool, score_columns: ScoreProvider, pieces: Population | None = None) -> Lowered:
    """``low`` with the aggregates of its :meth:`~cbdsl.compiler.lower.Lowered.first_statistics` computed, each
    over the whole pool from the columns it reads only (``top``'s threshold: one scan of the score column).

    Why first: a statistic in the filter query is a column of the same lazy query (a full sort and a gather
    for ``top``), so no filter can go into the parquet scan and every scanned column of every row is decoded
    and held. With the values as literals the filters are row-local: Polars pushes them into the scan and
    decodes the other columns of the survivors only (tests/test_statistics_first.py).

    Why exactly (:mod:`.exact`): a float sum depends on its order (Polars' streaming engine adds a mean's
    morsels in whatever order its threads finish), so a ``mean`` would change in its last bits with the
    threads, the shards or the engine, and a row at the threshold would pass on one run and not the next
    (DESIGN rule 7). Sums of integers and counts of order keys do not: every engine and every cut of the
    pool gives the same bits.

    ``pieces(low, columns, steps)`` holds the pool's ``columns`` with the ``steps``' columns added, in pieces
    (default: one local query, one piece; the Ray engine's: a piece a block, where it lies, :mod:`.on_ray`)."""
    if pieces is None:
        def pieces(low: Lowered, columns: list[str], steps: list) -> Parts:
            return InMemory([low.compute(pool.scan(columns), steps, score_columns).collect()])

    for stat in low.first_statistics():
        deps = low.plan.producers(stat.reads)
        computed = {d.writes for d in deps}
        columns = {*stat.reads, *(c for d in deps for c in d.reads)} - computed
        if not columns or any(isinstance(d, Score) for d in deps):  # a model score is looked up by id
            columns.add(low.plan.scan.id_column)
        table = aggregate(low.exprs.aggregation(stat), pieces(low, sorted(columns), deps))
        low = low.with_statistics({stat.column: table})
    return low


def query(low: Lowered, frame: pl.LazyFrame, score_columns: ScoreProvider) -> pl.LazyFrame:
    """The lazy query a run collects: the filter stage over ``frame`` (the pool's scan of the plan's columns;
    the early filters before the expensive scores), then the id hash and the values the tail needs.

    Its ``explain()`` is the Polars plan of a policy (``tests/golden/lowered/``)."""
    if low.early_filters:
        frame = filter_phase(low, frame, low.early_compute, low.early_filters, score_columns)
        frame = low.compute(frame, low.late_compute, score_columns)
        if low.late_filters:
            frame = frame.filter(low.predicate(low.late_filters))
    else:
        frame = filter_phase(low, frame, low.late_compute, low.late_filters, score_columns)
    # The id hash only orders and breaks ties after the filters: hashing the survivors alone is the same
    # values for a fraction of the work (DataComp's basic ∩ CLIP: 2.1M of 12.8M ids).
    return frame.with_columns(_hash_column(low.plan.scan.id_column), *_tail_columns(low))


def filter_phase(low: Lowered, frame: pl.LazyFrame, compute: list, filters: list[FilterStep],
           score_columns: ScoreProvider) -> pl.LazyFrame:
    """The first phase of the filter stage: its computed columns, then its filters; or, when the filters read
    only pool columns through derives and statistics computed first (:func:`statistics_first`), the filters
    straight on the scan, which Polars pushes into the parquet reader: the numeric ones on every row, then,
    past a barrier that keeps them apart, the string ones on the numeric survivors only."""
    split = low.in_scan(filters)
    if split is None:
        frame = low.compute(frame, compute, score_columns)
        return frame.filter(low.predicate(filters)) if filters else frame
    numeric, other = split
    if numeric is not None:
        frame = frame.filter(numeric)
        if other is not None:  # Polars would push the string filters into the scan too, decoding every caption
            frame = frame.map_batches(lambda survivors: survivors, schema=frame.collect_schema())
    if other is not None:
        frame = frame.filter(other)
    return low.compute(frame, compute, score_columns)


def _missing(full: pl.DataFrame, plan, schema) -> dict[str, int]:
    """Rows of the filter-stage population without a value, per score: each model score and each
    float column of the pool the plan reads (DataComp's precomputed CLIP scores are pool columns).
    A missing value fails every filter (DESIGN rule 9), so a scorer that failed on rows shows here."""
    columns = [s.column for s in plan.of(Score)]
    columns += [c for c in plan.scan.columns if schema.get(c) == "float"]
    return {c: int(full[c].is_null().sum() + (full[c].is_nan().sum() if full[c].dtype.is_float() else 0))
            for c in columns if c in full.columns}


# --- filter-stage funnel (explain --run) ---------------------------------------------------


def _funnel(full: pl.DataFrame, filters: list[FilterStep], plan, examples: int, id_col: str):
    rows: list[FunnelRow] = []
    alive = pl.Series([True] * full.height)
    dropped: dict[str, list[dict]] = {}
    for i, f in enumerate(filters):
        flag = full[f"#f{i}"]
        before = int(alive.sum())
        alive = alive & flag
        rows.append(FunnelRow(clause=f.clause, rows_in=before, rows_out=int(alive.sum()),
                              passed_alone=int(flag.sum())))
        cols = [id_col, *sorted(c for c in f.reads if c in full.columns and c != id_col)]
        dropped[f.clause] = full.filter(~flag).sort(HASH).head(examples).select(cols).to_dicts()
    thresholds: dict[str, Any] = {}

    for s in plan.of(Stat):
        if s.column not in full.columns:
            continue
        if s.stat in ("quantile", "mean", "std", "top"):
            if s.stat == "top":
                continue
            if s.per:
                table = full.group_by(s.per).agg(pl.col(s.column).first()).sort(s.per)
                thresholds[s.column] = {str(k): v for k, v in table.iter_rows()}
            else:
                thresholds[s.column] = full[s.column][0] if full.height else None
    return rows, thresholds, dropped


# --- tail ------------------------------------------------------------------------------------


def _tail_columns(low: Lowered) -> list[pl.Expr]:
    """The per-row values the tail needs, evaluated in the filter-stage query."""
    out: list[pl.Expr] = []
    if low.dedup is not None:
        out += [low.exprs(a).alias(DEDUP_ARG.format(i)) for i, a in enumerate(low.dedup.args)]
    if low.mix is not None:
        out.append(pl.col(low.mix.by).cast(pl.String).alias(GROUP))
    if low.budget is not None and low.budget.unit == "tokens":
        of = low.budget.of if low.budget.of is not None else Col(name="n_tokens")
        out.append(low.exprs(of).cast(pl.Float64).alias(TOKENS))
    s = low.select
    for i, a in enumerate(s.args):
        out.append(low.exprs(a).alias(SELECT_ARG.format(i)))
    return out


def _run_entry(low: Lowered, id: str, space: str):
    """The registry entry that runs the dedup method or select strategy ``id``."""
    entry = low.exprs.registry.get(id, space)
    if entry is None or entry.run is None:  # the checker knows every method; a plan from elsewhere may not
        raise RunError(f"{'dedup method' if space == 'dedup' else 'select strategy'} `{id}` has no implementation "
                       "to run", ("check the policy against this cbdsl (`cbdsl check POLICY`)",))
    return entry


def in_preference_order(frame: pl.DataFrame, low: Lowered) -> pl.DataFrame:
    """Rows ordered best-first by the select score (for dedup keepers), ties by id hash, then by ``frame``'s
    order (a stable sort)."""
    prefers = _run_entry(low, low.select.strategy, "select").prefers
    if prefers is None:
        return frame.sort(HASH, maintain_order=True)
    return frame.sort([SELECT_ARG.format(0), HASH], descending=[prefers == "high", False], nulls_last=True,
                      maintain_order=True)


def dedup(frame: pl.DataFrame, low: Lowered, pool) -> pl.DataFrame:
    """Keep one row per duplicate group: the best by the select score, ties by id hash (DESIGN 3); the keepers
    in preference order."""
    d: DedupStep = low.dedup
    method = _run_entry(low, d.method, "dedup")
    args = tuple(DEDUP_ARG.format(i) for i in range(len(d.args)))
    ctx = DedupContext(rows=in_preference_order(frame, low), args=args, id=low.plan.scan.id_column, hash=HASH,
                       params=method.params.model_validate(d.params), pool=pool)
    return method.run(ctx).drop(list(args))


def _budget_rows(low: Lowered, pool_rows: int) -> int | None:
    b = low.budget
    if b is None:
        return None
    if b.unit == "rows":
        return int(b.amount)
    if b.unit == "percent":  # exact decimal arithmetic: 1.15% of 3000 is 34.5, rounded half up to 35
        from fractions import Fraction

        share = Fraction(repr(b.amount)) * pool_rows / 100
        return int(math.floor(share + Fraction(1, 2)))
    return int(b.amount)  # tokens: the quota is in tokens


def _select(frame: pl.DataFrame, low: Lowered, pool_rows: int, id_col: str, warnings: list[str], pool):
    """Mix quotas, budget, and the select strategy within each group -> the manifest."""
    s = low.select
    budget = _budget_rows(low, pool_rows)
    mix = low.mix
    if mix is not None:
        listed = set(mix.groups)
        group = pl.when(pl.col(GROUP).is_in(list(listed))).then(pl.col(GROUP))
        group = group.otherwise(pl.lit("*") if mix.star is not None else pl.lit(None))
        frame = frame.with_columns(group.alias(GROUP)).filter(pl.col(GROUP).is_not_null())
        names = [*mix.groups, *(["*"] if mix.star is not None else [])]
        weights = [*mix.weights, *([mix.star] if mix.star is not None else [])]
    else:
        frame = frame.with_columns(pl.lit("all").alias(GROUP))
        names, weights = ["all"], [1.0]

    counts = dict(frame.group_by(GROUP).len().iter_rows())
    available = np.array([counts.get(n, 0) for n in names], dtype=np.int64)
    tokens = low.budget is not None and low.budget.unit == "tokens"
    if tokens:
        supply = dict(frame.group_by(GROUP).agg(pl.col(TOKENS).sum()).iter_rows())
        available_units = np.array([int(supply.get(n, 0) or 0) for n in names], dtype=np.int64)
    else:
        available_units = available

    if budget is None:
        if mix is None:
            quota = available.copy()
        else:  # the largest selection that keeps the shares exactly
            w = np.asarray(weights, dtype=np.float64)
            total = int(min((available[i] / w[i]) for i in range(len(w)) if w[i] > 0)) if len(w) else 0
            quota = allocate_quotas(w, available, total).quota
        shortfall = np.zeros(len(names))
    else:
        try:
            alloc = allocate_quotas(np.asarray(weights, dtype=np.float64), available_units, budget)
        except ValueError:
            raise _shortfall(low, pool, int(available_units.sum()), budget, tokens) from None
        quota, shortfall = alloc.quota, alloc.shortfall
    quotas = {n: {"available": int(available[i]), "quota": int(quota[i]), "shortfall": float(shortfall[i])}
              for i, n in enumerate(names)}
    for i, n in enumerate(names):
        if shortfall[i] > 0:
            warnings.append(
                f"mix group `{n}` has {int(available_units[i])} {'tokens' if tokens else 'rows'}, "
                f"{shortfall[i]:.1f} short of its share; the others take the difference in proportion"
            )

    strategy = _run_entry(low, s.strategy, "select")
    params = strategy.params.model_validate(s.params)
    args = tuple(SELECT_ARG.format(i) for i in range(len(s.args)))
    picked = []
    for i, n in enumerate(names):
        ctx = SelectContext(rows=frame.filter(pl.col(GROUP) == n), args=args, params=params, id=id_col, hash=HASH,
                            pool=pool, quota=int(quota[i]), key=KEY, tokens=TOKENS if tokens else None)
        rows = strategy.run(ctx)
        if KEY not in rows.columns:  # a strategy's bug, said plainly rather than by Polars at the concat
            raise TypeError(f"select strategy `{s.strategy}` returned rows without the key column {KEY!r}")
        returned = rows.height
        if tokens:
            rows = rows.filter(pl.col(TOKENS).fill_null(0).cum_sum() <= int(quota[i]))
        else:
            rows = rows.head(int(quota[i]))
        short = _short_selection(s.strategy, n if mix is not None else None, rows, returned, int(quota[i]),
                                 int(available[i]), tokens)
        if short:
            warnings.append(short)
        picked.append(rows)
    chosen = pl.concat(picked) if picked else frame.head(0).with_columns(pl.lit(None, pl.Float64).alias(KEY))
    chosen = in_pick_order(chosen, KEY, HASH, id_col).with_row_index("rank", offset=1)
    score = pl.col(args[0]).cast(pl.Float64) if strategy.prefers is not None else pl.lit(None, pl.Float64)
    manifest = chosen.select(
        pl.col(id_col).cast(pl.String).alias(id_col),
        pl.when(pl.lit(mix is not None)).then(pl.col(GROUP)).otherwise(pl.lit(None, pl.String)).alias("group"),
        score.alias("score"),
        pl.col("rank").cast(pl.Int64),
    )
    return manifest.with_columns(_compact(manifest.get_column(id_col))), quotas


def _compact(ids: pl.Series) -> pl.Series:
    """The ids in one buffer, in rank order. Sorting by a random key leaves Polars' string views pointing
    all over the survivors' buffers, and every later pass over them (the export's uid decode, its hex
    check, the selection hash) then misses the cache; through Arrow they are copied into place."""
    return pl.Series(ids.name, ids.to_arrow(), dtype=ids.dtype) if ids.dtype == pl.String else ids


def _short_selection(strategy: str, group: str | None, rows: pl.DataFrame, returned: int, quota: int, available: int,
                     tokens: bool) -> str | None:
    """The warning for a strategy that stopped short of its group's quota while rows were left (`deita`, when
    no other row passes its threshold): the selection is then smaller than the budget, and the run says so.

    Short means: the strategy returned fewer rows than the group has, and every one of them fits the quota."""
    got = int(rows.get_column(TOKENS).fill_null(0).sum()) if tokens and rows.height else rows.height
    if returned >= available or rows.height < returned or got >= quota:
        return None
    unit = "tokens" if tokens else "rows"
    where = "" if group is None else f" in mix group `{group}`"
    return (f"select `{strategy}` took {got} {unit}{where}, {quota - got} short of the quota of {quota}: it "
            "accepts no other row, so the selection is smaller than the budget (loosen the strategy's "
            "parameters, say a higher `threshold`, or lower the budget)")


def _shortfall(low: Lowered, pool, available: int, budget: int, tokens: bool) -> RunError:
    """A budget shortfall, naming the clauses that removed the most rows."""
    unit = "tokens" if tokens else "rows"
    counts = sorted(((r.rows_in - r.rows_out, r.clause, r.passed_alone) for r in _probe_funnel(low, pool)),
                    key=lambda c: -c[0])
    worst = [f"`{clause}` removed {removed} rows ({passed} of the pool pass it alone)"
             for removed, clause, passed in counts[:3] if removed > 0]
    message = (f"only {available} {unit} survive the policy, fewer than the budget of {budget}"
               + (": " + "; ".join(worst) if worst else ""))
    return RunError(message, ("loosen the filters that remove the most rows, lower the budget, "
                              "or run `cbdsl explain --run` to see the row funnel",))


def _probe_funnel(low: Lowered, pool) -> list[FunnelRow]:
    """The funnel of a run that fell short (``low`` has its statistics: the shortfall's own run computed them)."""
    scan = low.plan.scan
    frame = pool.scan(list(scan.columns)).with_columns(_hash_column(scan.id_column))
    frame = low.compute(frame, [*low.early_compute, *low.late_compute], model_scores(low, pool))
    filters = [*low.early_filters, *low.late_filters]
    if not filters:
        return []
    full = frame.with_columns([low.exprs(f.predicate).fill_null(False).alias(f"#f{i}")
                               for i, f in enumerate(filters)]).collect()
    rows, _t, _d = _funnel(full, filters, low.plan, 0, scan.id_column)
    return rows


def describe_step(step) -> str:
    """One line per plan step for `cbdsl compile` / `explain`."""
    match step:
        case Scan(columns=cols):
            return f"scan        {', '.join(cols)}"
        case Score():
            return f"score       {step.column}"
        case Derive():
            return f"derive      {step.column} = {pexpr_text(step.expr)}"
        case Stat():
            return f"statistic   {step.column}"
        case FilterStep():
            return f"filter      {step.clause}" + ("   [early]" if step.early else "")
        case DedupStep():
            return f"dedup       {step.clause}"
        case MixStep():
            return f"mix         {step.clause}"
        case BudgetStep():
            return f"budget      {step.clause}"
        case SelectStep():
            return f"select      {step.clause}"
    return type(step).__name__


def plan_text(plan) -> str:
    """The plan as `cbdsl compile` prints it (cost class and :func:`describe_step`), each step followed by
    what that line leaves out: the predicate of a filter, the call of a score, statistic, dedup or select
    (parameters filled in), the shares of a mix, what a token budget counts; then the rules applied.

    Why: a deterministic text of the plan stages that shows every rule's work, for their goldens
    (``tests/golden/plan/``, ``tests/golden/optimized/``) and the rule fixtures (``tests/fixtures/rules/``)."""
    def call(fn: str, args, params) -> str:
        return pexpr_text(Apply(fn=fn, args=tuple(args), params=params))

    lines = [f"plan of pool {plan.pool!r}, id column {plan.scan.id_column!r}"]
    for step in plan.steps:
        headline = describe_step(step)
        lines.append(f"  {step.cost:<10} {headline}")
        match step:
            case Score():
                detail = call(step.scorer, step.args, step.params)
            case Stat():
                detail = call(step.stat, (step.arg,), step.params) + (f" per {step.per}" if step.per else "") + (
                    f" among {pexpr_text(step.among)}" if step.among is not None else "")
            case FilterStep():
                detail = f"where {pexpr_text(step.predicate)}"
            case DedupStep():
                detail = call(step.method, step.args, step.params)
            case MixStep():
                shares = [*zip(step.groups, step.weights), *([("*", step.star)] if step.star is not None else [])]
                detail = f"by {step.by}: " + ", ".join(f"{g} {w!r}" for g, w in shares)
            case BudgetStep(of=of) if of is not None:
                detail = f"of {pexpr_text(of)}"
            case SelectStep():
                detail = call(step.strategy, step.args, step.params)
            case _:
                continue
        if detail not in headline:
            lines.append(f"  {'':<10} {'':<11} {detail}")
    lines.append(f"rules: {', '.join(plan.rules) or '(none)'}")
    return "\n".join(lines) + "\n"
