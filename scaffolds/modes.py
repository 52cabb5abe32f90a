"""Scaffold modes: rules on the policy AST, enforced by ``cbdsl submit``.

- ``open`` and ``guide``: no rule (``guide`` adds a strategy guide to PROTOCOL.md);
- ``cite``: every iteration after the baseline cites a catalogue method;
- ``adapt``: it also instantiates a cited method (uses one of its scorers or
  strategies in a clause that affects the selection) and says how it adapts
  it in an ``adapt`` clause.
"""

from __future__ import annotations

from cbdsl.dsl import ast


def _used_callables(policy: ast.Policy) -> set[str]:
    """Scorers, strategies and dedup methods used by clauses that affect the selection (through lets too)."""
    lets = {c.name.name: c.value for c in policy.of_kind(ast.Let)}
    used: set[str] = set()
    seen: set[str] = set()

    def visit(node: ast.Node) -> None:
        for n in node.walk():
            if isinstance(n, ast.Call):
                used.add(n.func.name)
            elif isinstance(n, ast.Name) and n.name in lets and n.name not in seen:
                seen.add(n.name)
                visit(lets[n.name])

    for clause in policy.clauses:
        if isinstance(clause, ast.Filter):
            visit(clause.condition)
        elif isinstance(clause, ast.Dedup):
            used.add(clause.method.func.name)
            visit(clause.method)
        elif isinstance(clause, ast.Select):
            used.add(clause.strategy.name)
            for a in (*clause.args, *(k.value for k in clause.kwargs)):
                visit(a)
        elif isinstance(clause, ast.Mix):
            if clause.by.name in lets:
                visit(lets[clause.by.name])
    return used


def _method_tools(method_id: str) -> set[str]:
    from cbdsl.scaffolds.catalogue import get_method
    from cbdsl.scorers.registry import registry

    method = get_method(method_id)
    tools = set(method.scorers) if method else set()
    tools |= {e.id for e in registry().entries() if e.method == method_id}
    return tools


def check_submission(scaffold: str, policy: ast.Policy, history: list) -> list[str]:
    """Why the scaffold refuses this policy (empty: accepted). ``history`` is the ledger's earlier entries."""
    if scaffold in ("open", "guide"):
        return []
    reasons: list[str] = []
    cited = [m.name for c in policy.of_kind(ast.Cite) for m in c.methods]
    if not cited:
        return ["it cites no method: add `cite ID` with a method of METHODS.md"]
    if scaffold == "cite":
        return []
    used = _used_callables(policy)
    instantiated = [m for m in cited if _method_tools(m) & used]
    if not instantiated:
        reasons.append(f"it cites {', '.join(cited)} but uses none of their scorers or strategies in a filter, "
                       "dedup, mix or select clause: instantiate the method you cite")
    adapted = {c.method.name for c in policy.of_kind(ast.Adapt)}
    if not adapted & set(cited):
        reasons.append("it does not say how it adapts the cited method: add `adapt ID \"how your use differs\"`")
    return reasons
