"""The typed AST: what resolution learned about a policy, keyed by node id, and its text form.

:class:`TypedPolicy` is the resolve stage's output and the planner's input;
:func:`typed_text` prints it for the stage's golden (``tests/golden/typed/``).
The pass that builds it is :func:`cbdsl.compiler.resolve.resolve_policy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cbdsl.compiler.signatures import Params, format_value
from cbdsl.compiler.types import UNKNOWN, Type
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic
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
