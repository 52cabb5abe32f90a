"""The plan's intermediate representation: expressions, steps and the plan, as frozen pydantic models.

The plan has its own small expression IR (``Col``, ``Lit``, ``Apply``,
``Op``, ``AssetIds``), so that the optimizer rules and the lowering never
look back at spans or the resolver's maps: every name is already a column
(of the pool, or produced by a step), every call a registry entry with
validated parameters.

Steps, in the stage order DESIGN.md fixes (scores -> filters -> dedup -> mix ->
budget/select)::

    scan -> score* -> derive* -> stat* -> filter* -> dedup? -> mix? -> budget? -> select

Columns produced by steps are named by their canonical text
(``quantile(clip, 0.3) per source``), which cannot collide with a pool
column or a ``let`` name and reads well in ``cbdsl explain``.
"""


from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

PLAN_VERSION = 1

CostClass = Literal["metadata", "cpu_model", "gpu_model"]
_COST_ORDER = {"metadata": 0, "cpu_model": 1, "gpu_model": 2}


def costliest(*costs: CostClass) -> CostClass:
    return max(costs, key=_COST_ORDER.__getitem__, default="metadata")


class _Frozen(BaseModel):
    # defer_build: `cbdsl check` imports the plan's models with the stages but never validates one
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


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
    strategy: str  # a select strategy of the registry (``random`` when the policy has no `select`)
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

    def producers(self, columns: set[str]) -> list:
        """The steps that compute ``columns``, with those they read in turn, in plan (dependency) order;
        pool columns need none."""
        writers = {s.writes: s for s in self.steps if s.writes}
        needed: set[str] = set()
        frontier = set(columns)
        while frontier:
            column = frontier.pop()
            if column in writers and column not in needed:
                needed.add(column)
                frontier |= writers[column].reads
        return [s for s in self.steps if s.writes in needed]

    @property
    def scan(self) -> Scan:
        return self.of(Scan)[0]

    @property
    def required_scorers(self) -> list[dict[str, Any]]:
        return [{"scorer": s.scorer, "params": s.params, "column": s.column, "cost": s.cost} for s in self.of(Score)]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


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
