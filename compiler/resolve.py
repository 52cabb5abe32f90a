"""Name resolution and type checking: AST -> typed AST (:class:`TypedPolicy`).

Every bare name becomes a column of the pool or a ``let``; every call a
registry entry (scorer, function, statistic, select strategy, dedup method)
with its arguments bound, its parameters validated through the entry's
pydantic model, and its output type known. Each ``let`` gets a type, in
dependency order.

All mistakes are collected, not just the first, and none cascades: a name
that got an error has type ``unknown`` afterwards, which is compatible with
everything. The clause rules that need no types (repeats, cite/adapt, mix
weights, budget amounts) are in :mod:`cbdsl.compiler.check`, which also holds
the user-facing entry points (its :func:`~cbdsl.compiler.check.resolve` runs both and raises on errors).

With no pool schema (``schema=None``), every unknown bare name is taken as a
column of unknown type and one note (N001) says the column checks wait for a
pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from cbdsl.compiler import types as T
from cbdsl.compiler.signatures import PENDING_OUTPUTS, Entry, Params, Registry, format_value
from cbdsl.compiler.types import BOOL, EMBEDDING, FLOAT, INT, STR, UNKNOWN, Type
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, Source, did_you_mean, sort_key
from cbdsl.dsl.format import format_clause, format_expr

ResolutionKind = Literal["column", "let", "scorer", "function", "statistic", "select", "dedup", "pending"]


@dataclass(frozen=True)
class Resolution:
    """What a name or call resolved to.

    ``kind`` says which table; ``id`` is the column name, the ``let`` name or
    the registry entry id (``pending`` for a scorer the catalogue names but
    the registry does not have yet); ``type`` is the value's type.
    """

    kind: ResolutionKind
    id: str
    type: Type


@dataclass(frozen=True, eq=False)
class TypedPolicy:
    """The typed AST the planner builds on.

    The policy itself stays as parsed; what resolution learned sits beside it
    in maps keyed by a node's id (:data:`~cbdsl.dsl.ast.NodeId`, its path in
    ``policy``; ``ids`` finds the id of a node), never by its span, so a tree
    built in code or mutated without re-parsing resolves like a parsed one:

    - ``names``: every :class:`~cbdsl.dsl.ast.Name`, and every grouping
      :class:`~cbdsl.dsl.ast.Ident` (``per COL``, ``mix by COL``), to a column or ``let``;
    - ``calls``: every :class:`~cbdsl.dsl.ast.Call` to its registry entry, plus
      each ``select`` (keyed by its strategy ident) and ``dedup`` (its call);
    - ``types``: the type of every expression node;
    - ``params``: the validated parameter model (defaults filled in) of every
      call, strategy and dedup method, keyed like ``calls``.

    ``lets`` maps each ``let`` name to its type and ``let_order`` lists them
    dependencies first. ``columns`` holds the pool columns the policy reads
    (type ``unknown`` when no schema was given). ``mix_weights`` are the
    normalized mix shares by group (``None`` is the ``*`` group).
    ``diagnostics`` keeps the warnings and notes. Use :meth:`lookup`,
    :meth:`type_of` and :meth:`params_of` with nodes of ``policy`` (the
    resolved tree: the one given, or its copy when it reused a node object at
    two places, see :class:`~cbdsl.dsl.ast.NodeIds`) rather than the maps.
    """

    policy: ast.Policy
    schema: Mapping[str, str] | None
    lets: Mapping[str, Type]
    let_order: tuple[str, ...]
    names: Mapping[ast.NodeId, Resolution]
    calls: Mapping[ast.NodeId, Resolution]
    types: Mapping[ast.NodeId, Type]
    params: Mapping[ast.NodeId, Params]
    ids: ast.NodeIds
    columns: Mapping[str, Type]
    mix_weights: Mapping[str | None, float] | None = None
    cited: tuple[str, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()

    def id_of(self, node: ast.Node) -> ast.NodeId | None:
        """The id of a node of ``policy`` (None for a node of another tree)."""
        return self.ids.get(node)

    def lookup(self, node: ast.Node) -> Resolution | None:
        """What a Name, Ident, Call, Select or Dedup resolved to."""
        if isinstance(node, ast.Select):
            return self._at(self.calls, node.strategy)
        if isinstance(node, ast.Dedup):
            return self._at(self.calls, node.method)
        if isinstance(node, ast.Call):
            return self._at(self.calls, node)
        return self._at(self.names, node)

    def type_of(self, node: ast.Node) -> Type:
        """The type of an expression node (``unknown`` if it has none)."""
        t = self._at(self.types, node)
        return UNKNOWN if t is None else t

    def params_of(self, node: ast.Node) -> Params | None:
        """The validated parameters of a Call, Select or Dedup."""
        if isinstance(node, ast.Select):
            return self._at(self.params, node.strategy)
        if isinstance(node, ast.Dedup):
            return self._at(self.params, node.method)
        return self._at(self.params, node)

    def _at(self, table: Mapping[ast.NodeId, Any], node: ast.Node) -> Any:
        nid = self.ids.get(node)
        return table.get(nid) if nid is not None else None

    def let_value(self, name: str) -> ast.Expr:
        """The expression a ``let`` name stands for."""
        for clause in self.policy.of_kind(ast.Let):
            if clause.name.name == name:
                return clause.value
        raise KeyError(name)


def typed_text(typed: TypedPolicy) -> str:
    """The typed AST as text: each clause, then its expression nodes (indented by depth) with their type
    and what they resolved to; then the lets, the columns read, the mix shares and the warnings.

    Why: a readable, deterministic form of the resolve stage (its golden, ``tests/golden/typed/``); it
    reads the maps only through :meth:`TypedPolicy.lookup`, ``type_of`` and ``params_of``, and prints no
    spans, so it does not change with how nodes are keyed."""
    def resolved(node: ast.Node) -> str:
        res = typed.lookup(node)
        if res is None:
            return ""
        params = typed.params_of(node)
        shown = ", ".join(f"{k}={format_value(v)}" for k, v in params.model_dump(mode="json").items()) \
            if params is not None else ""
        return f"  {res.kind} {res.id}" + (f"({shown})" if shown else "")

    lines: list[str] = []
    for clause in typed.policy.clauses:
        strategy = resolved(clause) if isinstance(clause, ast.Select) else ""  # no node of its own below
        lines.append(format_clause(clause, comments=False) + strategy)
        roots = {ast.Let: ("value",), ast.Filter: ("condition",), ast.Dedup: ("method",), ast.Mix: ("by",),
                 ast.Budget: ("of",), ast.Select: ("args", "kwargs")}.get(type(clause), ())
        children = [c for f in roots for c in (getattr(clause, f) if isinstance(getattr(clause, f), tuple)
                                                else (getattr(clause, f),)) if c is not None]
        work: list[tuple[ast.Node, int, str]] = [(c, 1, "") for c in reversed(children)]
        while work:  # an explicit stack: expressions may nest deeply
            node, depth, label = work.pop()
            if isinstance(node, ast.Keyword):
                work.append((node.value, depth, f"{node.name.name}="))
                continue
            if isinstance(node, ast.Ident):  # a grouping column or let (`per`, `mix by`)
                res = typed.lookup(node)
                if res is not None:
                    lines.append(f"{'  ' * depth}{label}{node.name}  : {res.type}{resolved(node)}")
                continue
            lines.append(f"{'  ' * depth}{label}{format_expr(node)}  : {typed.type_of(node)}{resolved(node)}")
            work.extend((c, depth + 1, "") for c in reversed(list(node.children())))
    lines.append("lets: " + ", ".join(f"{n}: {typed.lets[n]}" for n in typed.let_order))
    lines.append("columns: " + ", ".join(f"{c}: {t}" for c, t in sorted(typed.columns.items())))
    if typed.mix_weights is not None:
        lines.append("mix shares: " + ", ".join(f"{'*' if k is None else k} {w!r}"
                                                 for k, w in typed.mix_weights.items()))
    lines.extend(f"{d.severity} {d.code}: {d.message}" for d in typed.diagnostics)
    return "\n".join(line.rstrip() for line in lines) + "\n"


# --- helpers --------------------------------------------------------------------


def constant(node: ast.Node) -> tuple[bool, Any]:
    """``(True, value)`` for a literal (a percentage as its fraction), else ``(False, None)``."""
    if isinstance(node, (ast.Number, ast.String, ast.Bool)):
        return True, node.value
    if isinstance(node, ast.Percent):
        return True, node.fraction
    if isinstance(node, ast.Unary) and node.op == "-" and isinstance(node.operand, (ast.Number, ast.Percent)):
        ok, value = constant(node.operand)
        return ok, -value
    if isinstance(node, ast.ListExpr):
        items = [constant(i) for i in node.items]
        if all(ok for ok, _ in items):
            return True, [v for _, v in items]
    return False, None


def show(node: ast.Node, source: Source | None = None) -> str:
    """A short quote of an expression for messages: its own text when short, else `words(...)`."""
    if source is not None:
        text = source_text(node, source)
        if text and len(text) <= 40 and "\n" not in text:
            return f"`{text}`"
    if isinstance(node, ast.Unary) and isinstance(node.operand, (ast.Number, ast.Percent)):
        return f"`-{show(node.operand).strip('`')}`"
    if isinstance(node, ast.Name):
        return f"`{node.name}`"
    if isinstance(node, ast.Call):
        return f"`{node.func.name}(...)`"
    if isinstance(node, ast.Number):
        return f"`{node.value}`"
    if isinstance(node, ast.Percent):
        return f"`{node.value}%`"
    if isinstance(node, ast.String):
        return f'`"{node.value}"`'
    if isinstance(node, ast.Bool):
        return "`true`" if node.value else "`false`"
    if isinstance(node, ast.ListExpr):
        return "the list"
    return "this expression"


def source_text(node: ast.Node, source: Source) -> str:
    """The exact text of a node (its span) in the source it was parsed from."""
    data = source.text.encode("utf-8")
    return data[node.span.start:node.span.end].decode("utf-8", errors="replace")


def mix_weights(mix: ast.Mix) -> dict[str | None, float] | None:
    """The mix's shares normalized to sum to 1 (``None`` is ``*``); None when they cannot be."""
    weights: dict[str | None, float] = {}
    for entry in mix.entries:
        w = entry.weight.fraction if isinstance(entry.weight, ast.Percent) else float(entry.weight.value)
        weights.setdefault(entry.key_text, w)
    total = sum(weights.values())
    if not weights or not 0 < total < math.inf or any(w <= 0 for w in weights.values()):
        return None
    return {k: w / total for k, w in weights.items()}


def looks_like_path(pool: str) -> bool:
    """Whether a pool given as text is a directory path (``/data/x``, ``./x``, ``~/x``) rather than a name."""
    return "/" in pool or "\\" in pool or pool.startswith((".", "~"))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return format_value(value)


# --- the resolver ----------------------------------------------------------------


@dataclass
class _Bound:
    inputs: dict[str, list[ast.Node]] = field(default_factory=dict)
    params: dict[str, ast.Node] = field(default_factory=dict)
    unknown_keyword: bool = False  # a misspelled keyword: a 'missing argument' would only repeat it


class Resolver:
    """One pass over a policy: resolves names and calls, infers types, collects diagnostics."""

    def __init__(
        self,
        policy: ast.Policy,
        schema: Mapping[str, str] | None,
        registry: Registry,
        pending: Iterable[str] = (),
        *,
        methods_using: Mapping[str, Sequence[str]] | None = None,
        source: Source | None = None,
        assets: Mapping[str, str] | None = None,
    ):
        self.ids = ast.NodeIds(policy)  # annotations are keyed by node id, never by span
        self.policy: ast.Policy = self.ids.root  # type: ignore[assignment]
        self.assets = dict(assets) if assets is not None else None  # name -> kind; None: no pool known
        self.schema = dict(schema) if schema is not None else None
        self.column_types = {k: T.parse_type(v) for k, v in schema.items()} if schema is not None else {}
        self.registry = registry
        self._pending_named = frozenset(pending)
        self._pending: frozenset[str] | None = None
        self.methods_using = methods_using or {}
        self.source = source
        self.diags: list[Diagnostic] = []
        self.lets: dict[str, ast.Let] = {}
        self.let_types: dict[str, Type] = {}
        self.let_order: list[str] = []
        self.cyclic: set[str] = set()
        self.used_lets: set[str] = set()
        self.columns: dict[str, Type] = {}
        self.deferred: list[str] = []
        self.names: dict[ast.NodeId, Resolution] = {}
        self.calls: dict[ast.NodeId, Resolution] = {}
        self.types: dict[ast.NodeId, Type] = {}
        self.params: dict[ast.NodeId, Params] = {}

    # -- diagnostics ------------------------------------------------------------

    @property
    def pending(self) -> frozenset[str]:
        """Catalogue scorers the registry lacks (computed on first need: it imports every scorer module)."""
        if self._pending is None:
            self._pending = self._pending_named - self.registry.all_ids()
        return self._pending
    def error(self, code: str, message: str, node: ast.Node | ast.Span | None, label: str = "",
              hints: Iterable[str] = (), severity: str = "error") -> None:
        span = node.span if isinstance(node, ast.Node) else node
        self.diags.append(Diagnostic(code, message, span, severity, tuple(hints), label))  # type: ignore[arg-type]

    def show(self, node: ast.Node) -> str:
        return show(node, self.source)

    def line_of(self, node: ast.Node) -> int | None:
        return self.source.line_col(node.span.start)[0] if self.source is not None else None

    # -- the pass ---------------------------------------------------------------
    def run(self) -> TypedPolicy:
        self._collect_lets()
        self._type_lets()
        for clause in self.policy.clauses:
            self._clause(clause)
        self._unused_lets()
        self._deferred_note()
        mixes = self.policy.of_kind(ast.Mix)
        cited = tuple(dict.fromkeys(i.name for c in self.policy.of_kind(ast.Cite) for i in c.methods))
        return TypedPolicy(
            policy=self.policy,
            schema=self.schema,
            lets=dict(self.let_types),
            let_order=tuple(self.let_order),
            names=self.names,
            calls=self.calls,
            types=self.types,
            params=self.params,
            ids=self.ids,
            columns=dict(self.columns),
            mix_weights=mix_weights(mixes[0]) if mixes else None,
            cited=cited,
            diagnostics=tuple(sorted((d for d in self.diags if not d.is_error), key=sort_key)),
        )

    def _clause(self, clause: ast.Clause) -> None:
        if isinstance(clause, ast.Let):
            if self.lets.get(clause.name.name) is not clause:  # a second definition: still look inside
                self.infer(clause.value)
        elif isinstance(clause, ast.Filter):
            self._filter(clause)
        elif isinstance(clause, ast.Select):
            self._select(clause)
        elif isinstance(clause, ast.Dedup):
            self._dedup(clause)
        elif isinstance(clause, ast.Mix):
            self._group(clause.by, "mix by")
        elif isinstance(clause, ast.PoolClause):
            self._pool_clause(clause)
        elif isinstance(clause, ast.Budget) and clause.of is not None:
            t = self.infer(clause.of)
            if not t.is_unknown and not t.is_numeric:
                self.error("E307", f"a token budget sums a number per row, but {self.show(clause.of)} is {T.describe(t)}",
                           clause.of, label="not a number",
                           hints=("count the tokens, e.g. `budget 2_000_000 tokens of words(text)`",))

    def _pool_clause(self, clause: ast.PoolClause) -> None:
        """Rule 8: a policy names a pool of the pool roots; only the person running it may give a directory."""
        name = clause.name.value
        if not looks_like_path(name):
            return
        self.error("E114", f"`pool` names a pool, never a directory: {format_value(name)} is a path", clause.name,
                   label="a path", hints=("name a pool of the pool roots ($CBDSL_POOLS, ~/.cbdsl/pools), e.g. "
                                          '`pool "demo"`; `cbdsl pool info NAME` shows one',
                                          "to run on a pool directory, give it when you run: "
                                          "`cbdsl run policy.cur --pool DIR`"))

    def _assets_named(self, entry: Entry, bound: _Bound, values: Mapping[str, Any]) -> None:
        """Rule 8 at check time: no parameter names an evaluation set or ground truth, and `asset()` names
        an asset the pool has (only when the pool is known)."""
        if self.assets is None:
            return
        for name, value in values.items():
            if not isinstance(value, str):
                continue
            kind = self.assets.get(value)
            if kind in T.BENCHMARK_KINDS:
                self.error("E112", f"`{value}` is the pool's `{kind}` asset: {T.BENCHMARK_WHY}", bound.params[name],
                           label="not readable by a policy", hints=(T.BENCHMARK_FIX,))
            elif kind is None and entry.id == "asset":
                readable = sorted(a for a, k in self.assets.items() if k not in T.BENCHMARK_KINDS)
                listing = ("its assets are " + ", ".join(f"`{a}`" for a in readable[:12])) if readable \
                    else "it has no assets a policy may name"
                self.error("E113", f"the pool has no asset `{value}`", bound.params[name], label="unknown asset",
                           hints=(*did_you_mean(value, readable), listing,
                                  "register a file with `cbdsl pool add-asset POOL NAME FILE`"))

    def _filter(self, clause: ast.Filter) -> None:
        cond = clause.condition
        t = self.infer(cond)
        if t.is_unknown or t == BOOL:
            return
        quoted = self.show(cond).strip("`")
        if t.is_numeric:
            hint = f"compare it to make a condition, e.g. `filter {quoted} > 2`"
        elif t == STR:
            hint = f"compare it (`filter {quoted} == \"coco\"`) or test a pattern (`filter matches({quoted}, \"...\")`)"
        else:
            hint = "a filter keeps the rows where its condition is true: write a comparison"
        self.error("E201", f"a filter condition must be true or false, but {self.show(cond)} is {T.describe(t)}", cond,
                   label="not true/false", hints=(hint,))

    # -- lets -------------------------------------------------------------------
    def _collect_lets(self) -> None:
        for clause in self.policy.of_kind(ast.Let):
            name = clause.name.name
            if name in self.lets:
                line = self.line_of(self.lets[name])
                where = f" on line {line}" if line else ""
                self.error("E105", f"`{name}` is defined twice", clause.name, label="defined again here",
                           hints=(f"the first `let {name}` is{where} above; rename one of them or delete one",))
                continue
            if self.schema is not None and name in self.schema:
                # Left out of the lets, so the name keeps meaning the column: one error, no follow-ups.
                self.error("E106", f"`let {name}` has the name of a column of the pool", clause.name,
                           label="a column already has this name",
                           hints=(f"names are never shadowed: give the `let` its own name, e.g. `{name}_2`",))
                continue
            self.lets[name] = clause

    def _let_deps(self, clause: ast.Let) -> list[str]:
        deps = []
        for node in clause.value.walk():
            if isinstance(node, ast.Name) and node.name in self.lets:
                deps.append(node.name)
            elif isinstance(node, ast.Call) and node.per is not None and node.per.name in self.lets:
                deps.append(node.per.name)
        return list(dict.fromkeys(deps))

    def _type_lets(self) -> None:
        """Type every `let`, dependencies first; report each cycle once (its members are `unknown`)."""
        graph = {name: self._let_deps(clause) for name, clause in self.lets.items()}
        position = {name: i for i, name in enumerate(self.lets)}
        for component in _strongly_connected(graph):  # dependencies come first
            component.sort(key=position.__getitem__)
            cyclic = len(component) > 1 or component[0] in graph[component[0]]
            if cyclic:
                self._report_cycle(graph, component)
                for name in component:
                    self.let_types[name] = UNKNOWN
            for name in component:
                t = self.infer(self.lets[name].value)
                if not cyclic:
                    self.let_types[name] = t
                self.let_order.append(name)

    def _report_cycle(self, graph: Mapping[str, Sequence[str]], component: list[str]) -> None:
        members = set(component)
        self.cyclic |= members
        start = component[0]  # the first in source order
        path = _cycle_path(graph, start, members)
        hints = ["break the cycle: define one of these names from columns and scorers only"]
        if len(path) == 2:
            hints.append(f"if `{start}` is also a column, the `let` hides it: give the `let` its own name")
        if len(path) > 10:
            path = path[:5] + ["..."] + path[-3:]
        self.error("E104", f"`{start}` is defined in terms of itself: " + " -> ".join(path),
                   self.lets[start].name, label="this `let` depends on itself", hints=hints)

    def _let_type(self, name: str) -> Type:
        # Lets are typed dependencies first (_type_lets), so a referenced let is already known.
        return self.let_types.get(name, UNKNOWN)

    def _unused_lets(self) -> None:
        for name, clause in self.lets.items():
            if name not in self.used_lets:
                self.error("W003", f"`{name}` is defined but never used", clause.name, label="never used",
                           hints=("use it in a filter, dedup, mix, budget or select, or delete it",), severity="warning")

    # -- names ------------------------------------------------------------------
    def _lookup_name(self, name: str, node: ast.Node) -> Type:
        """Resolve a bare name (a Name, or the Ident of `per`/`mix by`) and record it."""
        key = self.ids[node]
        if name in self.lets:
            self.used_lets.add(name)
            t = self._let_type(name)
            self.names[key] = Resolution("let", name, t)
            return t
        if self.schema is None:
            if name not in self.columns:
                self.deferred.append(name)
            self.columns[name] = UNKNOWN
            self.names[key] = Resolution("column", name, UNKNOWN)
            return UNKNOWN
        if name in self.column_types:
            t = self.column_types[name]
            self.columns[name] = t
            self.names[key] = Resolution("column", name, t)
            return t
        self._unknown_name(name, node)
        return UNKNOWN

    def _unknown_name(self, name: str, node: ast.Node) -> None:
        assert self.schema is not None
        hints = list(did_you_mean(name, list(self.schema) + list(self.lets)))
        entry = self.registry.get(name)
        if entry is not None or name in self.pending:
            hints.append(f"`{name}` is a {entry.kind if entry else 'scorer'}: call it with parentheses, "
                         f"`{entry.signature() if entry else name + '()'}`")
        columns = sorted(self.schema)
        if columns and len(columns) <= 12:
            hints.append("the pool's columns are " + ", ".join(f"`{c}`" for c in columns))
        else:
            hints.append("`cbdsl pool info` lists the pool's columns")
        self.error("E101", f"unknown name `{name}`: it is neither a column of the pool nor a `let`", node,
                   label="not a column or `let`", hints=hints)

    def _group(self, ident: ast.Ident, where: str) -> Type:
        t = self._lookup_name(ident.name, ident)
        if not T.groupable(t):
            self.error("E218", f"cannot group by `{ident.name}` (`{where}`): it is {T.describe(t)}", ident,
                       label="has no groups", hints=("group by a column of strings or whole numbers, such as `source`",))
        return t

    def _deferred_note(self) -> None:
        if self.schema is not None or not self.deferred:
            return
        pools = self.policy.of_kind(ast.PoolClause)
        names = ", ".join(f"`{n}`" for n in self.deferred[:8]) + (", ..." if len(self.deferred) > 8 else "")
        verb = "is taken as a column" if len(self.deferred) == 1 else "are taken as columns"
        self.error("N001", f"column checks were deferred because no pool schema is known: {names} "
                   f"{verb} of unknown type", pools[0] if pools else None,
                   hints=("check against the pool to verify them: `cbdsl check --pool DIR policy.cur`",), severity="note")

    # -- expressions ------------------------------------------------------------
    def infer(self, node: ast.Node) -> Type:
        t = self._infer(node)
        self.types[self.ids[node]] = t
        return t

    def _infer(self, node: ast.Node) -> Type:
        if isinstance(node, ast.Number):
            return INT if isinstance(node.value, int) else FLOAT
        if isinstance(node, ast.Percent):
            return FLOAT
        if isinstance(node, ast.String):
            return STR
        if isinstance(node, ast.Bool):
            return BOOL
        if isinstance(node, ast.Name):
            return self._lookup_name(node.name, node)
        if isinstance(node, ast.ListExpr):
            return self._list(node)
        if isinstance(node, ast.Unary):
            return self._unary(node)
        if isinstance(node, ast.Binary):
            return self._binary(node)
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise TypeError(f"not an expression node: {type(node).__name__}")

    def _list(self, node: ast.ListExpr) -> Type:
        item = UNKNOWN
        reported = False
        for element in node.items:
            t = self.infer(element)
            joined = T.join(item, t)
            if joined is None:
                if not reported:
                    self.error("E219", f"list items must all be the same kind: {self.show(element)} is {T.describe(t)}, "
                               f"the items before it are {T.describe(item)}", element, label="a different kind",
                               hints=("write all strings (`[\"coco\", \"vg\"]`) or all numbers (`[1, 2]`)",))
                    reported = True
                continue
            item = joined
        return T.list_of(UNKNOWN if reported else item)

    def _unary(self, node: ast.Unary) -> Type:
        t = self.infer(node.operand)
        if node.op == "not":
            self._need_bool(node.operand, t, "`not`")
            return BOOL
        if t == EMBEDDING:
            self._embedding_misuse(node.operand, "cannot be negated")
            return UNKNOWN
        if not t.is_unknown and not t.is_numeric:
            self.error("E202", f"`-` needs a number, but {self.show(node.operand)} is {T.describe(t)}", node.operand,
                       label="not a number", hints=(_ARITHMETIC_HINT.get(t.name, "arithmetic works on numbers only"),))
            return UNKNOWN
        return t

    def _need_bool(self, node: ast.Node, t: Type, op: str) -> None:
        if t.is_unknown or t == BOOL:
            return
        hint = ("compare it to make a condition, e.g. `... > 2`" if t.is_numeric
                else 'compare it to make a condition, e.g. `... == "coco"`' if t == STR
                else "an embedding is not a condition: compare a score computed from it")
        self.error("E203", f"{op} needs true/false, but {self.show(node)} is {T.describe(t)}", node,
                   label="not true/false", hints=(hint,))

    def _embedding_misuse(self, node: ast.Node, what: str) -> None:
        self.error("E206", f"{self.show(node)} is an embedding: it {what}", node, label="an embedding",
                   hints=("embeddings go to `select kcenter(...)`, `dedup semantic(...)` or a scorer that takes one; "
                          "to compare, use a score computed from it",))

    def _binary(self, node: ast.Binary) -> Type:
        lt, rt = self.infer(node.left), self.infer(node.right)
        if node.op in ("and", "or"):
            self._need_bool(node.left, lt, f"`{node.op}`")
            self._need_bool(node.right, rt, f"`{node.op}`")
            return BOOL
        ok = True
        for side, t in ((node.left, lt), (node.right, rt)):
            if t == EMBEDDING:
                self._embedding_misuse(side, "has no arithmetic")
                ok = False
            elif not t.is_unknown and not t.is_numeric:
                hint = _ARITHMETIC_HINT.get(t.name, "arithmetic works on numbers only")
                self.error("E202", f"`{node.op}` needs numbers, but {self.show(side)} is {T.describe(t)}", side,
                           label="not a number", hints=(hint,))
                ok = False
        return T.numeric_result(lt, rt, node.op) if ok else UNKNOWN

    def _compare(self, node: ast.Compare) -> Type:
        operand_types = [self.infer(o) for o in node.operands]
        for i, op in enumerate(node.ops):
            a, b = node.operands[i], node.operands[i + 1]
            ta, tb = operand_types[i], operand_types[i + 1]
            if op in ("in", "not in"):
                self._membership(op, a, ta, b, tb)
                continue
            if ta == EMBEDDING or tb == EMBEDDING:
                self._embedding_misuse(a if ta == EMBEDDING else b, "cannot be compared")
                continue
            fits = T.comparable(ta, tb) if op in ("==", "!=") else T.orderable(ta, tb)
            if fits:
                continue
            if op not in ("==", "!=") and T.comparable(ta, tb):
                message = f"`{op}` orders numbers or strings, but {self.show(a)} is {T.describe(ta)}"
                hints = ("true/false values can only be compared with `==` or `!=`",)
            else:
                message = f"cannot compare {self.show(a)} ({T.describe(ta)}) with {self.show(b)} ({T.describe(tb)})"
                hints = ("compare strings with strings (`source == \"coco\"`) and numbers with numbers "
                         "(`len(source) > 3`)",)
            self.error("E204", message, a.span.cover(b.span), label="these cannot be compared", hints=hints)
        return BOOL

    def _membership(self, op: str, a: ast.Node, ta: Type, b: ast.Node, tb: Type) -> None:
        if ta == EMBEDDING:
            self._embedding_misuse(a, f"cannot be tested with `{op}`")
            return
        if tb.is_unknown or tb.name == "asset":
            return
        if tb.name != "list":
            self.error("E205", f"`{op}` needs a list on the right, but {self.show(b)} is {T.describe(tb)}", b,
                       label="not a list", hints=('write a list: `source in ["coco", "vg"]`',))
            return
        item = tb.item or UNKNOWN
        if not T.comparable(ta, item):
            hints = ["the list's items must be the same kind as the left side"]
            if ta.name == "list":
                hints.append(f"to test whether a list contains a value, put the value on the left: `\"a\" {op} {self.show(a).strip('`')}`")
            self.error("E205", f"{self.show(a)} is {T.describe(ta)}, but the list on the right holds {T.describe_plural(item)}",
                       b, label="items of another kind", hints=hints)

    # -- calls ------------------------------------------------------------------
    def _callable_ids(self) -> list[str]:
        return list(self.registry.ids("expr")) + sorted(self.pending)

    def _call(self, node: ast.Call) -> Type:
        name = node.func.name
        entry = self.registry.get(name)
        if entry is not None:
            return self._bind(entry, node, node.args, node.kwargs, node.per, node.among, self.ids[node])
        self._loose(node.args, node.kwargs, node.per, node.among)
        if name in self.pending:
            users = self.methods_using.get(name, ())
            hints = [f"methods that use it: {', '.join(users)}"] if users else []
            hints.append("until it lands, use the scorers that exist or a precomputed column of the pool")
            self.error("E103", f"`{name}` is not available yet: it comes with the scorer library (pending)",
                       node.func, label="pending scorer", hints=hints)
            out = T.parse_type(PENDING_OUTPUTS.get(name, "unknown"))
            self.calls[self.ids[node]] = Resolution("pending", name, out)
            return out
        elif self.registry.get(name, "select") or self.registry.get(name, "dedup"):
            space = "select" if self.registry.get(name, "select") else "dedup"
            example = self.registry.get(name, space).signature()  # type: ignore[union-attr]
            self.error("E109", f"`{name}` is a {'select strategy' if space == 'select' else 'dedup method'}, "
                       "not a function", node.func, label=f"only in a `{space}` clause",
                       hints=(f"use it as its own clause: `{example}`",))
        elif name in self.lets or name in self.column_types:
            what = "a `let`" if name in self.lets else "a column"
            if name in self.lets:
                self.used_lets.add(name)
            self.error("E109", f"`{name}` is {what}, not a function", node.func, label="a value, not a function",
                       hints=(f"write `{name}` without parentheses",))
        else:
            self.error("E102", f"unknown function or scorer `{name}`", node.func, label="not a function or scorer",
                       hints=list(did_you_mean(name, self._callable_ids()))
                       + ["`cbdsl methods` lists the methods and the scorers they use"])
        return UNKNOWN

    def _loose(self, args, kwargs, per, among) -> None:
        """Resolve what is inside a call that could not be bound, so its own mistakes still show."""
        for arg in args:
            self.infer(arg)
        for kw in kwargs:
            self.infer(kw.value)
        if per is not None:
            self._lookup_name(per.name, per)
        if among is not None:
            self.infer(among)

    def _select(self, clause: ast.Select) -> None:
        name = clause.strategy.name
        entry = self.registry.get(name, "select")
        if entry is None:
            hints = list(did_you_mean(name, self.registry.ids("select")))
            if self.registry.get(name) is not None or name in self.pending:
                hints.append(f"`{name}` computes a score; to select by it write `select top {name}(...)`")
            hints.append("the strategies are " + ", ".join(f"`{s}`" for s in self.registry.ids("select")))
            self.error("E110", f"unknown select strategy `{name}`", clause.strategy, label="not a strategy", hints=hints)
            self._loose(clause.args, clause.kwargs, None, None)
            return
        self._bind(entry, clause, clause.args, clause.kwargs, None, None, self.ids[clause.strategy])

    def _dedup(self, clause: ast.Dedup) -> None:
        call = clause.method
        name = call.func.name
        entry = self.registry.get(name, "dedup")
        if entry is None:
            hints = list(did_you_mean(name, self.registry.ids("dedup")))
            hints.append("the methods are " + ", ".join(f"`{s}`" for s in self.registry.ids("dedup")))
            self.error("E111", f"unknown dedup method `{name}`", call.func, label="not a dedup method", hints=hints)
            self._loose(call.args, call.kwargs, call.per, call.among)
            return
        self._bind(entry, call, call.args, call.kwargs, call.per, call.among, self.ids[call])

    def _bind(self, entry: Entry, node: ast.Node, args: Sequence[ast.Node], kwargs: Sequence[ast.Keyword],
              per: ast.Ident | None, among: ast.Node | None, key: ast.NodeId) -> Type:
        """Bind a call's arguments to an entry, check them, and record the resolution."""
        self._per_among(entry, per, among)
        bound = self._bind_arguments(entry, node, args, kwargs)
        arg_types = self._check_inputs(entry, node, bound)
        self._check_params(entry, node, bound, key)
        out = entry.output_type(arg_types)
        self.calls[key] = Resolution(entry.kind, entry.id, out)
        return out

    def _statistics(self) -> str:
        return ", ".join(f"`{e.id}`" for e in self.registry.entries("expr") if e.is_statistic)

    def _per_among(self, entry: Entry, per: ast.Ident | None, among: ast.Node | None) -> None:
        if per is not None:
            if entry.is_statistic:
                self._group(per, "per")
            else:
                self._lookup_name(per.name, per)
                self.error("E215", f"`per` groups a statistic, but {entry.display} is a {_kind_words(entry)}", per,
                           label="`per` has nothing to group",
                           hints=(f"the statistics are {self._statistics()}; e.g. `quantile(clip, 0.3) per source`",))
        if among is not None:
            t = self.infer(among)
            if not entry.is_statistic:
                self.error("E216", f"`among` restricts a statistic, but {entry.display} is a {_kind_words(entry)}",
                           among, label="`among` has nothing to restrict",
                           hints=(f"the statistics are {self._statistics()}; e.g. `quantile(clip, 0.7) among (words(text) > 2)`",))
            elif not t.is_unknown and t != BOOL:
                self.error("E217", f"`among` needs a condition, but {self.show(among)} is {T.describe(t)}", among,
                           label="not true/false",
                           hints=("`among` takes only the next atom: put the whole condition in parentheses, "
                                  "e.g. `among (words(text) > 2)`",))

    def _bind_arguments(self, entry: Entry, node: ast.Node, args: Sequence[ast.Node],
                        kwargs: Sequence[ast.Keyword]) -> _Bound:
        bound = _Bound()
        rest = list(args)
        for inp in entry.inputs:
            if inp.variadic:
                bound.inputs[inp.name], rest = rest, []
                break
            if rest:
                bound.inputs[inp.name] = [rest.pop(0)]
        if rest and not entry.variadic:
            for name in entry.param_names:
                if not rest:
                    break
                bound.params[name] = rest.pop(0)
        if rest:
            most = len(args) - len(rest)
            self.error("E212", f"{entry.display} takes at most {_plural(most, 'positional argument')}, "
                       f"but {len(args)} are given", rest[0], label="one too many" if len(rest) == 1 else "too many",
                       hints=(f"it is called as `{entry.signature()}`",))
            for extra in rest:
                self.infer(extra)
        for kw in kwargs:
            name = kw.name.name
            if name in entry.input_names:
                target: dict = bound.inputs
            elif name in entry.param_names:
                target = bound.params
            else:
                self.error("E108", f"{entry.display} has no parameter `{name}`", kw.name, label="unknown parameter",
                           hints=list(did_you_mean(name, entry.input_names + entry.param_names))
                           + [f"it is called as `{entry.signature()}`"])
                self.infer(kw.value)
                bound.unknown_keyword = True
                continue
            if name in target and target[name]:
                self.error("E213", f"`{name}` is given twice to {entry.display}", kw, label="given again here",
                           hints=("pass each argument once, by position or by keyword",))
                self.infer(kw.value)
                continue
            target[name] = [kw.value] if target is bound.inputs else kw.value
        return bound

    def _check_inputs(self, entry: Entry, node: ast.Node, bound: _Bound) -> list[Type]:
        arg_types: list[Type] = []
        for inp in entry.inputs:
            values = bound.inputs.get(inp.name, [])
            if bound.unknown_keyword and len(values) < (inp.min_count if inp.variadic else 1):
                pass
            elif inp.variadic and len(values) < inp.min_count:
                self.error("E211", f"{entry.display} needs at least {_plural(inp.min_count, 'argument')}", node,
                           label=f"{len(values)} given", hints=(f"it is called as `{entry.signature()}`",))
            elif not inp.variadic and not values:
                self.error("E211", f"{entry.display} is missing its argument `{inp.name}`", node,
                           label=f"missing `{inp.name}`", hints=(f"it is called as `{entry.signature()}`",))
            for value in values:
                arg_types.append(self._check_input(entry, inp, value))
        return arg_types

    def _check_input(self, entry: Entry, inp, value: ast.Node) -> Type:
        if inp.expect == "column":
            if not isinstance(value, ast.Name):
                self.infer(value)
                self.error("E220", f"{entry.display} needs a column name for `{inp.name}`, not an expression", value,
                           label="not a column name",
                           hints=(f"name the expression first: `let g = ...`, then `{entry.id}(g)`",))
                return UNKNOWN
            t = self.infer(value)
            if not T.groupable(t):
                self.error("E218", f"cannot group by {self.show(value)}: it is {T.describe(t)}", value, label="has no groups",
                           hints=("group by a column of strings or whole numbers, such as `source`",))
            return t
        t = self.infer(value)
        if not T.accepts(inp.expect, t):
            what = T.describe_expect(inp.expect)
            if entry.space == "select" and entry.id in ("top", "bottom"):
                message = f"{entry.display} ranks rows by a number, but {self.show(value)} is {T.describe(t)}"
            else:
                message = f"{entry.display} expects {what} for `{inp.name}`, but {self.show(value)} is {T.describe(t)}"
            self.error("E207", message, value, label=f"expected {what}",
                       hints=(f"it is called as `{entry.signature()}`",))
            return UNKNOWN
        return t

    def _check_params(self, entry: Entry, node: ast.Node, bound: _Bound, key: ast.NodeId) -> None:
        values: dict[str, Any] = {}
        not_constant: set[str] = set()
        for name, expr in bound.params.items():
            self.infer(expr)
            ok, value = constant(expr)
            if ok:
                values[name] = value
                continue
            not_constant.add(name)
            self.error("E210", f"parameter `{name}` of {entry.display} must be a constant (a number, percentage, "
                       "string or true/false), not an expression", expr, label="not a constant",
                       hints=(f"it is called as `{entry.signature()}`",))
        self._assets_named(entry, bound, values)
        try:
            model = entry.params.model_validate(values)
        except ValidationError as err:
            for problem in err.errors():
                loc = problem.get("loc") or ()
                if loc and loc[0] in not_constant:
                    continue
                self._param_error(entry, node, bound, problem)
            return
        if not not_constant:
            self.params[key] = model

    def _param_error(self, entry: Entry, node: ast.Node, bound: _Bound, problem: dict) -> None:
        loc = problem.get("loc") or ()
        name = str(loc[0]) if loc else None
        given = bound.params.get(name) if name else None
        where: ast.Node = given if given is not None else node
        kind = problem["type"]
        ctx = problem.get("ctx") or {}
        info = entry.params.model_fields.get(name) if name else None
        hints: list[str] = []
        if info is not None and info.description:
            hints.append(f"`{name}`: {info.description}")
        value_text = self.show(given) if given is not None else ""
        if kind == "missing":
            if bound.unknown_keyword:
                return
            self.error("E211", f"{entry.display} is missing its parameter `{name}`", node, label=f"missing `{name}`",
                       hints=[f"it is called as `{entry.signature()}`"] + hints)
            return
        if kind == "invalid_regex":
            self.error("E214", f"{problem['msg']}", where, label="not a valid pattern",
                       hints=["patterns use Python's `re` syntax; escape special characters with `\\\\`"])
            return
        if kind == "regex_too_large":
            self.error("E221", f"{problem['msg']}", where, label="too large",
                       hints=["repeat less (`\\w{20,}` rather than `\\w{2000}`), or split the test into several "
                              "`matches` joined with `and`"])
            return
        expected = _TYPE_WORDS.get(kind)
        if expected is not None:
            self.error("E208", f"parameter `{name}` of {entry.display} must be {expected}, got {value_text}", where,
                       label=f"expected {expected}", hints=hints + [f"it is called as `{entry.signature()}`"])
            return
        if kind == "literal_error":
            choices = entry.choices(name or "")
            given_value = problem.get("input")
            close = did_you_mean(str(given_value), [str(c) for c in choices]) if isinstance(given_value, str) else ()
            self.error("E209", f"parameter `{name}` of {entry.display} must be one of "
                       + ", ".join(format_value(c) for c in choices) + f", got {value_text}", where,
                       label="not an allowed value", hints=list(close) + hints)
            return
        bound_words = {
            "greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
            "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le"),
        }.get(kind)
        if bound_words is not None:
            words, ctx_key = bound_words
            limit = ctx.get(ctx_key)
            message = f"parameter `{name}` of {entry.display} must be {words} {_number_text(limit)}, got {value_text}"
            value = problem.get("input")
            if (kind in ("less_than_equal", "less_than") and limit == 1 and isinstance(given, ast.Number)
                    and isinstance(value, (int, float)) and 1 < value <= 100):
                hints.insert(0, f"it is a fraction: write `{_number_text(value)}%` or `{value / 100:g}`")
            self.error("E209", message, where, label="out of range", hints=hints)
            return
        message = problem.get("msg", "invalid value")
        if ctx.get("hint"):  # a validator's own fix (e.g. register a path as a pool asset) comes first
            hints.insert(0, str(ctx["hint"]))
        self.error("E209", f"invalid parameters for {entry.display}: {message}" if name is None
                   else f"parameter `{name}` of {entry.display}: {message}", where, label="invalid value",
                   hints=hints + [f"it is called as `{entry.signature()}`"])


_ARITHMETIC_HINT = {
    "str": "for text, measure it first: `len(text)` or `words(text)`",
    "bool": "true/false is not a number: combine conditions with `and`, `or`, `not`",
}

_TYPE_WORDS = {
    "int_type": "a whole number", "int_from_float": "a whole number", "int_parsing": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "bool_type": "`true` or `false`", "bool_parsing": "`true` or `false`", "list_type": "a list",
}


def _kind_words(entry: Entry) -> str:
    return {"select": "select strategy", "dedup": "dedup method"}.get(entry.kind, entry.kind)


def _strongly_connected(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative, so long `let` chains cannot overflow the stack)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _cycle_path(graph: Mapping[str, Sequence[str]], start: str, members: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected component."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start, start]
