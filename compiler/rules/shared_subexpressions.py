"""Shared sub-expressions: compute each statistic, score and repeated function once.

The planner emits one statistic or score step per occurrence; steps with the
same definition write the same column (named by canonical text), so keeping
the first is safe. A row-local function call (``words(text)``) that occurs in
two or more places is hoisted into one derived column. Neither changes any
value: the expressions are pure.
"""

from __future__ import annotations

import json
from collections import Counter

from pydantic import BaseModel

from cbdsl.compiler.ir import Apply, Col, Derive, Op, Plan, Score, Stat, map_step_exprs, order_computed, pexpr_text


def _key(e: BaseModel) -> str:
    return json.dumps(e.model_dump(mode="json"), sort_keys=True)


def _applies(e: BaseModel):
    if isinstance(e, Apply):
        yield e
    for a in getattr(e, "args", ()) or ():
        yield from _applies(a)


def share_subexpressions(plan: Plan) -> Plan:
    seen: set[str] = set()
    steps = []
    for s in plan.steps:
        if isinstance(s, (Stat, Score)):
            key = _key(s)
            if key in seen:
                continue
            seen.add(key)
        steps.append(s)

    counts: Counter[str] = Counter()
    for s in steps:
        exprs = [getattr(s, f, None) for f in ("expr", "arg", "predicate", "among", "of")]
        exprs += list(getattr(s, "args", ()) or ())
        for e in exprs:
            if e is not None:
                counts.update({_key(a) for a in _applies(e)})
    hoist = {k for k, n in counts.items() if n >= 2}
    if not hoist:
        return plan.model_copy(update={"steps": tuple(steps)})

    derived: dict[str, Derive] = {}

    def replace(e: BaseModel) -> BaseModel:
        """Top-down: the outermost repeated call is hoisted whole; calls inside it are hoisted in its definition."""
        if isinstance(e, Apply) and _key(e) in hoist:
            name = pexpr_text(e)
            if name not in derived:
                inner = e.model_copy(update={"args": tuple(replace(a) for a in e.args)})
                derived[name] = Derive(column=name, expr=inner)
            return Col(name=name)
        if isinstance(e, (Apply, Op)):
            return e.model_copy(update={"args": tuple(replace(a) for a in e.args)})
        return e

    steps = [map_step_exprs(s, replace) for s in steps]
    steps = [steps[0], *derived.values(), *steps[1:]]
    return order_computed(plan.model_copy(update={"steps": tuple(steps)}))
