"""Constant folding: operators over literals become literals.

Safe because the folded operators are pure and total over the literal values
the language has (division by a literal zero is left alone, so the run-time
semantics of Polars decide it). ``x and true`` is ``x``; ``x or false`` is ``x``.

>>> from cbdsl.compiler.ir import Op, Lit, Col, pexpr_text
>>> pexpr_text(fold(Op(name="*", args=(Lit(value=32), Lit(value=32)))))
'1024'
>>> pexpr_text(fold(Op(name="and", args=(Col(name="ok"), Lit(value=True)))))
'ok'
"""

from __future__ import annotations

import operator

from pydantic import BaseModel

from cbdsl.compiler.ir import Lit, Op, Plan, map_pexpr, map_step_exprs

_BINARY = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fold_node(e: BaseModel) -> BaseModel:
    if not isinstance(e, Op):
        return e
    args = e.args
    lits = [a.value for a in args if isinstance(a, Lit)]
    if e.name == "neg" and len(lits) == 1 and _numeric(lits[0]):
        return Lit(value=-lits[0])
    if e.name == "not" and len(lits) == 1 and isinstance(lits[0], bool):
        return Lit(value=not lits[0])
    if e.name in ("and", "or"):
        unit, zero = (True, False) if e.name == "and" else (False, True)
        for i, a in enumerate(args):
            if isinstance(a, Lit) and a.value is unit:
                return args[1 - i]
            if isinstance(a, Lit) and a.value is zero:
                return Lit(value=zero)
        return e
    if len(lits) == 2 and e.name in _BINARY:
        a, b = lits
        if e.name in "+-*/" and not (_numeric(a) and _numeric(b)):
            return e
        if e.name == "/" and b == 0:
            return e
        if e.name in ("<", "<=", ">", ">=") and not (_numeric(a) and _numeric(b) or type(a) is type(b)):
            return e
        return Lit(value=_BINARY[e.name](a, b))
    if e.name in ("in", "not in") and len(lits) == 2 and isinstance(lits[1], list):
        inside = lits[0] in lits[1]
        return Lit(value=inside if e.name == "in" else not inside)
    return e


def fold(e: BaseModel) -> BaseModel:
    return map_pexpr(e, _fold_node)


def fold_constants(plan: Plan) -> Plan:
    """Fold constant sub-expressions in every step."""
    return plan.model_copy(update={"steps": tuple(map_step_exprs(s, fold) for s in plan.steps)})
