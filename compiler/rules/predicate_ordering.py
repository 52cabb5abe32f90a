"""Cheap before expensive: row-local filters that need no model run before the model scorers.

A filter may run ``early`` (before the expensive score steps, so a model
scores only rows that can survive) when

1. it reads no column that an expensive score produces, directly or through
   derived columns, and
2. no statistic of the plan reads such a column: a statistic is computed over
   the whole filter-stage population, so its input must exist for every row.

Then dropping rows early cannot change any value that a surviving row sees,
and the conjunction of all filters is the same set. Filters are also ordered
by cost class, cheap first (the conjunction does not depend on order).
"""

from __future__ import annotations

from cbdsl.compiler.ir import FilterStep, Plan, Score, Stat, costliest

_ORDER = {"metadata": 0, "cpu_model": 1, "gpu_model": 2}


def _expensive_columns(plan: Plan) -> set[str]:
    """Columns produced by expensive scores, closed over the steps that read them."""
    out = {s.column for s in plan.of(Score) if s.cost != "metadata"}
    changed = True
    while changed:
        changed = False
        for s in plan.steps:
            w = s.writes
            if w and w not in out and s.reads & out:
                out.add(w)
                changed = True
    return out


def order_predicates(plan: Plan) -> Plan:
    expensive = _expensive_columns(plan)
    stats_need_all = any(s.reads & expensive for s in plan.of(Stat))
    cost_of: dict[str, str] = {}
    for s in plan.steps:  # a derived column costs what its inputs cost (steps are in dependency order)
        if s.writes:
            cost_of[s.writes] = costliest(s.cost, *(cost_of.get(c, "metadata") for c in s.reads))

    def cost(f: FilterStep) -> str:
        return costliest(*(cost_of.get(c, "metadata") for c in f.reads))

    filters = [
        f.model_copy(update={"early": bool(expensive) and not stats_need_all and not (f.reads & expensive),
                             "cost": cost(f)})
        for f in plan.of(FilterStep)
    ]
    filters.sort(key=lambda f: _ORDER[f.cost])  # stable: clause order within a cost class
    it = iter(filters)
    steps = tuple(next(it) if isinstance(s, FilterStep) else s for s in plan.steps)
    return plan.model_copy(update={"steps": steps})
