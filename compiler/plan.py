"""Planning: typed AST -> the logical plan (:mod:`cbdsl.compiler.ir`), one step per clause, score, let and statistic.

Statistics are computed over the filter-stage population (the pool as it
enters the filter stage) wherever they appear, in a filter, a ``let`` or a
``select`` expression: that is DataComp's CLIP-score semantics, and it makes
the filters order-independent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cbdsl.compiler.ir import (
    Apply, AssetIds, BudgetStep, Col, DedupStep, Derive, FilterStep, Lit, MixStep, Op, Plan, Scan, Score,
    SelectStep, Stat, order_computed,
)
from cbdsl.compiler.rules.constant_folding import fold
from cbdsl.compiler.signatures import Registry
from cbdsl.dsl import ast
from cbdsl.dsl.format import format_clause, format_expr

class _Planner:
    """Walks the typed AST once, emitting steps; one instance per :func:`plan` call."""

    def __init__(self, typed, id_column: str, registry: Registry):
        self.typed = typed
        self.id_column = id_column
        self.registry = registry
        self.policy: ast.Policy = typed.policy
        self.computed: list = []  # score and stat steps, one per occurrence (rules share them)
        self.derives: dict[str, Derive | None] = {}
        self.pool_columns: set[str] = set()

    # expressions -------------------------------------------------------------
    def expr(self, e: ast.Node) -> BaseModel:
        t = self.typed
        match e:
            case ast.Number(value=v):
                return Lit(value=v)
            case ast.Percent():
                return Lit(value=e.fraction)
            case ast.String(value=v) | ast.Bool(value=v):
                return Lit(value=v)
            case ast.ListExpr(items=items):
                values = [fold(self.expr(i)) for i in items]
                if all(isinstance(v, Lit) for v in values):
                    return Lit(value=[v.value for v in values])
                raise ValueError("list items must be constants")  # resolve refuses non-constant items
            case ast.Name(name=n):
                res = t.lookup(e)
                if res is not None and res.kind == "let":
                    self.let(n)
                    return Col(name=n)
                self.pool_columns.add(n)
                return Col(name=n)
            case ast.Unary(op=op, operand=o):
                return Op(name="neg" if op == "-" else "not", args=(self.expr(o),))
            case ast.Binary(op=op, left=l, right=r):
                return Op(name=op, args=(self.expr(l), self.expr(r)))
            case ast.Compare(operands=operands, ops=ops):
                pairs = [Op(name=op, args=(self.expr(a), self.expr(b)))
                         for op, a, b in zip(ops, operands, operands[1:])]
                out = pairs[0]
                for p in pairs[1:]:
                    out = Op(name="and", args=(out, p))
                return out
            case ast.Call():
                return self.call(e)
        raise TypeError(f"cannot plan {type(e).__name__}")

    def call(self, c: ast.Call) -> BaseModel:
        res = self.typed.lookup(c)
        params = self._params(c)
        if res is None:
            raise ValueError(f"unresolved call {c.func.name}")
        if res.id == "asset":
            return AssetIds(name=params["name"])
        entry = self.registry.get(res.id, "expr")
        args = tuple(self.expr(a) for a in _inputs(entry, c.args))
        if res.kind == "statistic":
            among = self.expr(c.among) if c.among is not None else None
            if c.per is not None:
                self.pool_columns.add(c.per.name) if self._is_column(c.per) else self.let(c.per.name)
            column = format_expr(c)
            self.computed.append(Stat(column=column, stat=res.id, arg=args[0], params=params,
                                      per=c.per.name if c.per else None, among=among))
            return Col(name=column)
        if res.kind == "scorer" and entry.cost != "metadata":
            column = format_expr(c)
            self.computed.append(Score(column=column, scorer=res.id, args=args, params=params, cost=entry.cost))
            return Col(name=column)
        # a row-local call keeps only the parameters that differ from their defaults: `words(text)` and
        # `words(text, split="whitespace")` are one column, and adding a parameter to a function
        # leaves the plans (and derived column names) of policies that do not use it as they were
        model = self.typed.params_of(c)
        params = model.model_dump(mode="json", exclude_defaults=True) if model is not None else {}
        return Apply(fn=res.id, args=args, params=params, extra=self._extra(entry))

    def _extra(self, entry) -> tuple[str, ...]:
        """Pool columns an entry's lowering reads besides its arguments (see metadata.image_dimensions)."""
        schema = self.typed.schema or {}
        if any(i.expect == "image" for i in entry.inputs) and "width" in schema and "height" in schema:
            self.pool_columns.update(("width", "height"))
            return ("width", "height")
        return ()

    def _is_column(self, ident: ast.Ident) -> bool:
        res = self.typed.lookup(ident)
        return res is None or res.kind == "column"

    def _params(self, node: ast.Node) -> dict[str, Any]:
        model = self.typed.params_of(node)
        return model.model_dump(mode="json") if model is not None else {}

    def let(self, name: str) -> None:
        if name in self.derives:
            return
        self.derives[name] = None  # guards cycles (resolve already refused them)
        self.derives[name] = Derive(column=name, expr=self.expr(self.typed.let_value(name)))

    # clauses -------------------------------------------------------------------
    def build(self) -> Plan:
        policy = self.policy
        filters = [FilterStep(clause=format_clause(f, comments=False), predicate=self.expr(f.condition))
                   for f in policy.of_kind(ast.Filter)]
        tail: list = []
        for d in policy.of_kind(ast.Dedup):
            res = self.typed.lookup(d)
            entry = self.registry.get(res.id, "dedup")
            tail.append(DedupStep(clause=format_clause(d, comments=False), method=res.id,
                                  args=tuple(self.expr(a) for a in _inputs(entry, d.method.args)),
                                  params=self._params(d),
                                  cost=entry.cost))
        for m in policy.of_kind(ast.Mix):
            if self._is_column(m.by):
                self.pool_columns.add(m.by.name)
            else:
                self.let(m.by.name)
            weights = self.typed.mix_weights or {}
            named = [(k, w) for k, w in weights.items() if k is not None]
            tail.append(MixStep(clause=format_clause(m, comments=False), by=m.by.name,
                                groups=tuple(k for k, _ in named), weights=tuple(w for _, w in named),
                                star=weights.get(None)))
        for b in policy.of_kind(ast.Budget):
            amount = b.amount.value
            of = self.expr(b.of) if b.of is not None else None
            if b.unit == "tokens" and of is None:  # `budget N tokens` counts the pool's n_tokens column
                self.pool_columns.add("n_tokens")
                of = Col(name="n_tokens")
            tail.append(BudgetStep(clause=format_clause(b, comments=False), unit=b.unit, amount=amount, of=of))
        selects = policy.of_kind(ast.Select)
        if selects:
            s = selects[0]
            res = self.typed.lookup(s)
            entry = self.registry.get(res.id, "select")
            args = tuple(self.expr(a) for a in _inputs(entry, s.args))
            tail.append(SelectStep(clause=format_clause(s, comments=False), strategy=res.id, args=args,
                                   params=self._params(s), cost=entry.cost))
        else:
            tail.append(SelectStep(clause="(no select: random(seed=0))", strategy="random", params={"seed": 0}))
        self.pool_columns.add(self.id_column)
        derives = [d for d in self.derives.values() if d is not None]
        steps = [Scan(columns=tuple(sorted(self.pool_columns)), id_column=self.id_column),
                 *self.computed, *derives, *filters, *tail]
        pools = policy.of_kind(ast.PoolClause)
        return Plan(pool=pools[0].name.value if pools else None, id_column=self.id_column, steps=tuple(steps))


def _inputs(entry, args: tuple) -> tuple:
    """The positional arguments that are row inputs; the rest were bound to parameters by resolve."""
    if any(i.variadic for i in entry.inputs):
        return args
    return args[: len(entry.inputs)]


def plan(typed, id_column: str = "id", *, registry: Registry) -> Plan:
    """Typed AST -> logical plan (unoptimized): one step per clause, scores, lets and statistics.

    ``registry`` is the one the policy was resolved against (:func:`cbdsl.stages.plan` passes cbdsl's)."""
    return order_computed(_Planner(typed, id_column, registry).build())



