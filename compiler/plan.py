"""The logical plan: typed AST -> a DAG of typed steps.

The plan has its own small expression IR (:class:`PExpr`), so that the
optimizer rules and the lowering never look back at spans or the resolver's
maps: every name is already a column (of the pool, or produced by a step),
every call a registry entry with validated parameters.

Steps, in the stage order DESIGN.md fixes (scores -> filters -> dedup -> mix ->
budget/select)::

    scan -> score* -> derive* -> stat* -> filter* -> dedup? -> mix? -> budget? -> select

Columns produced by steps are named by their canonical text
(``quantile(clip, 0.3) per source``), which cannot collide with a pool
column or a ``let`` name and reads well in ``cbdsl explain``.

Statistics are computed over the filter-stage population (the pool as it
enters the filter stage) wherever they appear, in a filter, a ``let`` or a
``select`` expression: that is DataComp's CLIP-score semantics, and it makes
the filters order-independent.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from cbdsl.dsl import ast
from cbdsl.dsl.format import format_clause, format_expr

PLAN_VERSION = 1

CostClass = Literal["metadata", "cpu_model", "gpu_model"]
_COST_ORDER = {"metadata": 0, "cpu_model": 1, "gpu_model": 2}


def costliest(*costs: CostClass) -> CostClass:
    return max(costs, key=_COST_ORDER.__getitem__, default="metadata")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- plan expressions ---------------------------------------------------------------


class Col(_Frozen):
    """A column: of the pool, or produced by a step of the plan."""

    op: Literal["col"] = "col"
    name: str


class Lit(_Frozen):
    op: Literal["lit"] = "lit"
    value: int | float | str | bool | None | list[int | float | str | bool]


class Apply(_Frozen):
    """A row-local registry function or metadata scorer, lowered inline.

    ``extra`` names pool columns the lowering reads besides its arguments (the
    image scorers read ``width``/``height`` when the pool has them).
    """

    op: Literal["apply"] = "apply"
    fn: str
    args: tuple[PExpr, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)
    extra: tuple[str, ...] = ()


class Op(_Frozen):
    """An operator: arithmetic, comparison, boolean, ``in``."""

    op: Literal["op"] = "op"
    name: Literal["+", "-", "*", "/", "neg", "and", "or", "not",
                  "<", "<=", ">", ">=", "==", "!=", "in", "not in"]
    args: tuple[PExpr, ...]


class AssetIds(_Frozen):
    """The ids listed in a pool asset (``id in asset("icons-133k")``)."""

    op: Literal["asset"] = "asset"
    name: str


PExpr = Annotated[Union[Col, Lit, Apply, Op, AssetIds], Field(discriminator="op")]
Apply.model_rebuild()
Op.model_rebuild()


def pexpr_text(e: BaseModel) -> str:
    """A plan expression in the policy language's own notation (for explain and column names)."""
    match e:
        case Col(name=n):
            return n if n.isidentifier() else f"[{n}]"
        case Lit(value=v):
            return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")
        case AssetIds(name=n):
            return f'asset("{n}")'
        case Apply(fn=fn, args=args, params=params):
            parts = [pexpr_text(a) for a in args] + [f"{k}={json.dumps(v)}" for k, v in params.items()]
            return f"{fn}({', '.join(parts)})"
        case Op(name=name, args=args):
            if name == "neg":
                return f"-({pexpr_text(args[0])})"
            if name == "not":
                return f"not ({pexpr_text(args[0])})"
            return f"({pexpr_text(args[0])} {name} {pexpr_text(args[1])})"
    raise TypeError(type(e).__name__)


def columns_of(e: BaseModel) -> set[str]:
    """Every column an expression reads."""
    if isinstance(e, Col):
        return {e.name}
    if isinstance(e, (Apply, Op)):
        out = set().union(*(columns_of(a) for a in e.args)) if e.args else set()
        return out | set(getattr(e, "extra", ()))
    return set()


# --- steps ----------------------------------------------------------------------------


class _Step(_Frozen):
    cost: CostClass = "metadata"

    @property
    def reads(self) -> set[str]:
        return set()

    @property
    def writes(self) -> str | None:
        return None


class Scan(_Step):
    """Read these pool columns (projection pruning keeps only what the plan uses)."""

    step: Literal["scan"] = "scan"
    columns: tuple[str, ...]
    id_column: str = "id"

    @property
    def writes(self) -> str | None:
        return None


class Score(_Step):
    """A model scorer's output column, from the score cache or computed."""

    step: Literal["score"] = "score"
    column: str
    scorer: str
    args: tuple[PExpr, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def reads(self) -> set[str]:
        return set().union(*(columns_of(a) for a in self.args)) if self.args else set()

    @property
    def writes(self) -> str | None:
        return self.column


class Derive(_Step):
    """A row-local column: a ``let``, or a shared sub-expression."""

    step: Literal["derive"] = "derive"
    column: str
    expr: PExpr

    @property
    def reads(self) -> set[str]:
        return columns_of(self.expr)

    @property
    def writes(self) -> str | None:
        return self.column


class Stat(_Step):
    """A group statistic over the filter-stage population, broadcast to each row."""

    step: Literal["stat"] = "stat"
    column: str
    stat: str
    arg: PExpr
    params: dict[str, Any] = Field(default_factory=dict)
    per: str | None = None
    among: PExpr | None = None

    @property
    def reads(self) -> set[str]:
        out = columns_of(self.arg) | (columns_of(self.among) if self.among is not None else set())
        return out | ({self.per} if self.per else set())

    @property
    def writes(self) -> str | None:
        return self.column


class FilterStep(_Step):
    """One ``filter`` clause. ``early`` filters run before the expensive scorers (see rules)."""

    step: Literal["filter"] = "filter"
    clause: str  # canonical text of the clause, for explain and the funnel
    predicate: PExpr
    early: bool = False

    @property
    def reads(self) -> set[str]:
        return columns_of(self.predicate)


class DedupStep(_Step):
    step: Literal["dedup"] = "dedup"
    clause: str
    method: str
    args: tuple[PExpr, ...]
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def reads(self) -> set[str]:
        return set().union(*(columns_of(a) for a in self.args))


class MixStep(_Step):
    """Shares of the budget per group of ``by``; key ``None`` is ``*`` (every group not listed)."""

    step: Literal["mix"] = "mix"
    clause: str
    by: str
    groups: tuple[str, ...]
    weights: tuple[float, ...]
    star: float | None = None

    @property
    def reads(self) -> set[str]:
        return {self.by}


class BudgetStep(_Step):
    step: Literal["budget"] = "budget"
    clause: str
    unit: Literal["rows", "percent", "tokens"]
    amount: float
    of: PExpr | None = None

    @property
    def reads(self) -> set[str]:
        return columns_of(self.of) if self.of is not None else set()


class SelectStep(_Step):
    step: Literal["select"] = "select"
    clause: str
    strategy: Literal["top", "bottom", "random", "weighted", "kcenter", "stratified", "all"]
    args: tuple[PExpr, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def reads(self) -> set[str]:
        return set().union(*(columns_of(a) for a in self.args)) if self.args else set()


Step = Annotated[
    Union[Scan, Score, Derive, Stat, FilterStep, DedupStep, MixStep, BudgetStep, SelectStep],
    Field(discriminator="step"),
]


class Plan(_Frozen):
    """The logical plan: steps in execution order, plus what the run needs."""

    version: int = PLAN_VERSION
    pool: str | None = None
    id_column: str = "id"
    steps: tuple[Step, ...]
    rules: tuple[str, ...] = ()  # the optimizer rules applied, in order

    def of(self, kind: type) -> list:
        return [s for s in self.steps if isinstance(s, kind)]

    @property
    def scan(self) -> Scan:
        return self.of(Scan)[0]

    @property
    def required_scorers(self) -> list[dict[str, Any]]:
        return [{"scorer": s.scorer, "params": s.params, "column": s.column, "cost": s.cost} for s in self.of(Score)]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


# --- planning ---------------------------------------------------------------------------


class _Planner:
    """Walks the typed AST once, emitting steps; one instance per :func:`plan` call."""

    def __init__(self, typed, id_column: str, registry):
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
                from cbdsl.compiler.rules.constant_folding import fold

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
        res = self.typed.names.get((ident.span.start, ident.span.end))
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
            if res.id == "stratified":
                name = s.args[0].name  # checked to be a column (E220)
                self.pool_columns.add(name) if name not in self.typed.lets else self.let(name)
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


def plan(typed, id_column: str = "id", *, registry=None) -> Plan:
    """Typed AST -> logical plan (unoptimized): one step per clause, scores, lets and statistics.

    ``registry``: the one the policy was resolved with (default: the process registry)."""
    if registry is None:
        from cbdsl.scorers.registry import registry as process_registry

        registry = process_registry()
    return order_computed(_Planner(typed, id_column, registry).build())


def order_computed(p: Plan) -> Plan:
    """Put score/derive/stat steps in dependency order (a let may read a statistic and vice versa)."""
    head = [s for s in p.steps if isinstance(s, Scan)]
    compute = [s for s in p.steps if isinstance(s, (Score, Derive, Stat))]
    rest = [s for s in p.steps if not isinstance(s, (Scan, Score, Derive, Stat))]
    available = set(head[0].columns)
    produced = {s.writes for s in compute}
    # Duplicates (the same statistic written twice) are fine here; a rule shares them.
    ordered: list = []
    pending = list(compute)
    while pending:
        for s in pending:
            if all(c in available or c not in produced for c in s.reads):
                ordered.append(s)
                available.add(s.writes)
                pending.remove(s)
                break
        else:  # pragma: no cover - resolve refuses cycles
            raise ValueError("cyclic derived columns: " + ", ".join(s.writes for s in pending))
    return p.model_copy(update={"steps": tuple(head + ordered + rest)})


def map_pexpr(e: BaseModel, fn) -> BaseModel:
    """Rebuild a plan expression bottom-up, replacing each node by ``fn(node)``."""
    if isinstance(e, (Apply, Op)):
        args = tuple(map_pexpr(a, fn) for a in e.args)
        e = e.model_copy(update={"args": args})
    return fn(e)


def map_step_exprs(step: BaseModel, fn) -> BaseModel:
    """Apply ``fn`` (a whole-expression rewrite) to every expression a step holds."""
    updates: dict[str, Any] = {}
    for field in ("expr", "arg", "predicate", "among", "of"):
        value = getattr(step, field, None)
        if value is not None:
            updates[field] = fn(value)
    if getattr(step, "args", None):
        updates["args"] = tuple(fn(a) for a in step.args)
    return step.model_copy(update=updates) if updates else step
