"""Names and ``let``s: every bare name is a column of the pool or a ``let``, and each ``let`` is typed in order.

Lets are collected once (a second definition, E105, or a column's name,
E106, is left out), then typed dependencies first; a cycle is reported once
(E104) and its members are ``unknown``. A name is looked up in the lets, then
in the schema (with no schema, any name is a column of unknown type, and
one note, N001, says so). A ``let`` nobody uses is W003.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

from cbdsl.compiler import types as T
from cbdsl.compiler.state import Infer, State
from cbdsl.compiler.typed import Resolution
from cbdsl.compiler.types import UNKNOWN, Type
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import did_you_mean

# --- lets -------------------------------------------------------------------------


def collect_lets(st: State) -> None:
    """Record each `let` of the policy by its name, once; report those that cannot be one."""
    for clause in st.policy.of_kind(ast.Let):
        name = clause.name.name
        if name in st.lets:
            line = st.line_of(st.lets[name])
            where = f" on line {line}" if line else ""
            st.error("E105", f"`{name}` is defined twice", clause.name, label="defined again here",
                     hints=(f"the first `let {name}` is{where} above; rename one of them or delete one",))
            continue
        if st.schema is not None and name in st.schema:
            # Left out of the lets, so the name keeps meaning the column: one error, no follow-ups.
            st.error("E106", f"`let {name}` has the name of a column of the pool", clause.name,
                     label="a column already has this name",
                     hints=(f"names are never shadowed: give the `let` its own name, e.g. `{name}_2`",))
            continue
        st.lets[name] = clause


def let_dependencies(value: ast.Expr, lets: Container[str]) -> list[str]:
    """The `let`s an expression names (a Name or the Ident of `per`), once each, in order."""
    deps = []
    for node in value.walk():
        if isinstance(node, ast.Name) and node.name in lets:
            deps.append(node.name)
        elif isinstance(node, ast.Call) and node.per is not None and node.per.name in lets:
            deps.append(node.per.name)
    return list(dict.fromkeys(deps))


def type_lets(st: State, infer: Infer) -> None:
    """Type every `let`, dependencies first; report each cycle once (its members are `unknown`)."""
    graph = {name: let_dependencies(clause.value, st.lets) for name, clause in st.lets.items()}
    position = {name: i for i, name in enumerate(st.lets)}
    for component in _strongly_connected(graph):  # dependencies come first
        component.sort(key=position.__getitem__)
        cyclic = len(component) > 1 or component[0] in graph[component[0]]
        if cyclic:
            _report_cycle(st, graph, component)
            for name in component:
                st.let_types[name] = UNKNOWN
        for name in component:
            t = infer(st, st.lets[name].value)
            if not cyclic:
                st.let_types[name] = t
            st.let_order.append(name)


def _report_cycle(st: State, graph: Mapping[str, Sequence[str]], component: list[str]) -> None:
    members = set(component)
    start = component[0]  # the first in source order
    path = _cycle_path(graph, start, members)
    hints = ["break the cycle: define one of these names from columns and scorers only"]
    if len(path) == 2:
        hints.append(f"if `{start}` is also a column, the `let` hides it: give the `let` its own name")
    if len(path) > 10:
        path = path[:5] + ["..."] + path[-3:]
    st.error("E104", f"`{start}` is defined in terms of itself: " + " -> ".join(path),
             st.lets[start].name, label="this `let` depends on itself", hints=hints)


def unused_lets(st: State) -> None:
    """W003 for each `let` no clause or `let` uses."""
    for name, clause in st.lets.items():
        if name not in st.used_lets:
            st.error("W003", f"`{name}` is defined but never used", clause.name, label="never used",
                     hints=("use it in a filter, dedup, mix, budget or select, or delete it",), severity="warning")


# --- names ------------------------------------------------------------------------


def lookup(st: State, name: str, node: ast.Node) -> Type:
    """Resolve a bare name (a Name, or the Ident of `per`/`mix by`) and record it."""
    key = st.ids[node]
    if name in st.lets:
        st.used_lets.add(name)
        t = st.let_types.get(name, UNKNOWN)  # lets are typed dependencies first, so a referenced one is known
        st.names[key] = Resolution("let", name, t)
        return t
    if st.schema is None:
        if name not in st.columns:
            st.deferred.append(name)
        st.columns[name] = UNKNOWN
        st.names[key] = Resolution("column", name, UNKNOWN)
        return UNKNOWN
    if name in st.column_types:
        t = st.column_types[name]
        st.columns[name] = t
        st.names[key] = Resolution("column", name, t)
        return t
    _unknown_name(st, name, node)
    return UNKNOWN


def _unknown_name(st: State, name: str, node: ast.Node) -> None:
    assert st.schema is not None
    hints = list(did_you_mean(name, list(st.schema) + list(st.lets)))
    entry = st.registry.get(name)
    if entry is not None or name in st.pending:
        hints.append(f"`{name}` is a {entry.kind if entry else 'scorer'}: call it with parentheses, "
                     f"`{entry.signature() if entry else name + '()'}`")
    columns = sorted(st.schema)
    if columns and len(columns) <= 12:
        hints.append("the pool's columns are " + ", ".join(f"`{c}`" for c in columns))
    else:
        hints.append("`cbdsl pool info` lists the pool's columns")
    st.error("E101", f"unknown name `{name}`: it is neither a column of the pool nor a `let`", node,
             label="not a column or `let`", hints=hints)


def group(st: State, ident: ast.Ident, where: str) -> Type:
    """Resolve the column or `let` of `per` or `mix by`, which must have groups."""
    t = lookup(st, ident.name, ident)
    if not T.groupable(t):
        st.error("E218", f"cannot group by `{ident.name}` (`{where}`): it is {T.describe(t)}", ident,
                 label="has no groups", hints=("group by a column of strings or whole numbers, such as `source`",))
    return t


def deferred_note(st: State) -> None:
    """N001: with no schema, which names were taken as columns of unknown type."""
    if st.schema is not None or not st.deferred:
        return
    pools = st.policy.of_kind(ast.PoolClause)
    names = ", ".join(f"`{n}`" for n in st.deferred[:8]) + (", ..." if len(st.deferred) > 8 else "")
    verb = "is taken as a column" if len(st.deferred) == 1 else "are taken as columns"
    st.error("N001", f"column checks were deferred because no pool schema is known: {names} "
             f"{verb} of unknown type", pools[0] if pools else None,
             hints=("check against the pool to verify them: `cbdsl check --pool DIR policy.cur`",), severity="note")


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
