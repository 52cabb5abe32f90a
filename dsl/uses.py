"""Which callables a policy really uses: the scorers, strategies and dedup methods behind its selection.

The scaffolds ("does the policy instantiate the method it cites?") and the
diff ("does this change bring in a new method family?") ask the same
question, and a `let` that no selection clause reads must not answer it: a
policy cannot claim a method by naming it in a dead `let`. So uses are
collected from the clauses that shape the selection (filter, dedup, mix,
budget, select), following `let` names to their definitions.

A use is ``(id, space)``: the space tells a `top(x, 30%)` statistic from a
`select top x` strategy, as the registry does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cbdsl.dsl import ast

Use = tuple[str, str]  # (callable id, space: "expr" | "select" | "dedup")

#: Clauses whose content decides which rows are selected.
SELECTION_CLAUSES: tuple[type[ast.Clause], ...] = (ast.Filter, ast.Dedup, ast.Mix, ast.Budget, ast.Select)


def lets_of(policy: ast.Policy) -> dict[str, ast.Node]:
    """``let`` name -> its expression (the first definition, as the resolver keeps)."""
    out: dict[str, ast.Node] = {}
    for clause in policy.of_kind(ast.Let):
        out.setdefault(clause.name.name, clause.value)
    return out


def node_uses(node: ast.Node, lets: Mapping[str, ast.Node], seen: set[str] | None = None) -> set[Use]:
    """Uses inside ``node`` (a clause or an expression), following `let` names through ``lets``."""
    seen = set() if seen is None else seen
    found: set[Use] = set()
    if isinstance(node, ast.Dedup):
        found.add((node.method.func.name, "dedup"))
        for part in (*node.method.args, *node.method.kwargs):
            found |= node_uses(part, lets, seen)
        return found
    if isinstance(node, ast.Select):
        found.add((node.strategy.name, "select"))
    elif isinstance(node, ast.Mix):
        return node_uses(ast.Name(name=node.by.name), lets, seen)
    for n in node.walk():
        if isinstance(n, ast.Call):
            found.add((n.func.name, "expr"))
        elif isinstance(n, ast.Name) and n.name in lets and n.name not in seen:
            seen.add(n.name)
            found |= node_uses(lets[n.name], lets, seen)
    return found


def _selection_walk(policy: ast.Policy) -> tuple[set[Use], set[str]]:
    """(uses, `let` names read) of the clauses that shape the selection, lets followed once each."""
    lets = lets_of(policy)
    found: set[Use] = set()
    seen: set[str] = set()
    for clause in policy.clauses:
        if isinstance(clause, SELECTION_CLAUSES):
            found |= node_uses(clause, lets, seen)
    return found, seen


def policy_uses(policy: ast.Policy) -> set[Use]:
    """Every use of the clauses that shape the selection."""
    return _selection_walk(policy)[0]


def live_lets(policy: ast.Policy) -> set[str]:
    """`let` names that a selection clause reads, directly or through other lets."""
    return _selection_walk(policy)[1]


def inline(node: ast.Node, lets: Mapping[str, ast.Node], depth: int = 0) -> ast.Node:
    """``node`` with every `let` name replaced by its definition: renaming a `let` changes nothing."""
    if depth > len(lets):  # a cycle (E104): leave the names as they are
        return node

    def swap(n: ast.Node) -> ast.Node:
        if isinstance(n, ast.Name) and n.name in lets:
            return inline(lets[n.name], lets, depth + 1)
        return n

    return node.transform(swap)


def ids(uses: Iterable[Use]) -> set[str]:
    return {i for i, _space in uses}
