"""The clause rules: the checks on clauses that need no types.

Clauses that cannot repeat (E301), ``cite``/``adapt`` against the method
catalogue (E107, W002), mix groups and weights (E302-E304, W001: weights are
normalized, :func:`mix_weights`), budget amounts (E305, E306). Each rule is a
pure function of the policy; :func:`cbdsl.compiler.check.analyze` runs them
beside the resolver (:mod:`cbdsl.compiler.resolve`), which checks names and
types.
"""

from __future__ import annotations

import math

from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, Source, did_you_mean

#: Clauses a policy may hold at most once.
SINGLE_CLAUSES: tuple[str, ...] = ("policy", "pool", "budget", "select", "mix")

#: How far mix weights may sum from 1 before they are normalized with a warning.
MIX_TOLERANCE = 1e-6


def clause_rules(policy: ast.Policy, *, source: Source | None = None, method_ids: tuple[str, ...] = ()
                 ) -> list[Diagnostic]:
    """The checks on clauses that need no types (``method_ids``: the catalogue's, for ``cite`` and ``adapt``)."""
    diags: list[Diagnostic] = []
    diags += _repeats(policy, source)
    diags += _citations(policy, method_ids)
    for mix in policy.of_kind(ast.Mix):
        diags += _mix(mix, source)
    for budget in policy.of_kind(ast.Budget):
        diags += _budget(budget)
    return diags


def _line(node: ast.Node, source: Source | None) -> str:
    return f" on line {source.line_col(node.span.start)[0]}" if source is not None else ""


def _repeats(policy: ast.Policy, source: Source | None) -> list[Diagnostic]:
    diags = []
    first: dict[str, ast.Clause] = {}
    for clause in policy.clauses:
        if clause.kind not in SINGLE_CLAUSES:
            continue
        if clause.kind not in first:
            first[clause.kind] = clause
            continue
        keyword = ast.Span.at(start=clause.span.start, end=clause.span.start + len(clause.kind), source=clause.span.source)
        extra = {
            "mix": "a policy mixes by one column; put every group in one `mix`",
            "select": "a policy has one selection strategy",
            "budget": "a policy has one budget: rows, a percentage of the pool, or tokens",
        }.get(clause.kind)
        diags.append(Diagnostic(
            "E301", f"`{clause.kind}` is given twice; a policy has at most one `{clause.kind}` clause", keyword,
            "error",
            (f"the first `{clause.kind}` is{_line(first[clause.kind], source)} above; keep one of them",)
            + ((extra,) if extra else ()),
            "second one here",
        ))
    return diags


def _citations(policy: ast.Policy, method_ids: tuple[str, ...]) -> list[Diagnostic]:
    diags = []
    known = set(method_ids)
    cited = {i.name for c in policy.of_kind(ast.Cite) for i in c.methods}
    for clause in policy.of_kind(ast.Cite):
        for ident in clause.methods:
            if ident.name not in known:
                diags.append(Diagnostic(
                    "E107", f"unknown method `{ident.name}`: it is not in the method catalogue", ident.span, "error",
                    did_you_mean(ident.name, method_ids) + ("`cbdsl methods` lists the catalogue",),
                    "not a catalogue id",
                ))
    for clause in policy.of_kind(ast.Adapt):
        method = clause.method.name
        if method not in known:
            diags.append(Diagnostic(
                "E107", f"cannot adapt unknown method `{method}`: it is not in the method catalogue", clause.method.span,
                "error", did_you_mean(method, method_ids) + ("`cbdsl methods` lists the catalogue",),
                "not a catalogue id",
            ))
        elif method not in cited:
            diags.append(Diagnostic(
                "W002", f"`{method}` is adapted but not cited", clause.method.span, "warning",
                (f"add `cite {method}` so the scaffold checks and the ledger see the method",), "not cited",
            ))
    return diags


def _weight(entry: ast.MixEntry) -> float:
    w = entry.weight
    return w.fraction if isinstance(w, ast.Percent) else float(w.value)


def mix_weights(mix: ast.Mix) -> dict[str | None, float] | None:
    """The mix's shares normalized to sum to 1 (``None`` is ``*``); None when they cannot be."""
    weights: dict[str | None, float] = {}
    for entry in mix.entries:
        weights.setdefault(entry.key_text, _weight(entry))
    total = sum(weights.values())
    if not weights or not 0 < total < math.inf or any(w <= 0 for w in weights.values()):
        return None
    return {k: w / total for k, w in weights.items()}


def _mix(mix: ast.Mix, source: Source | None) -> list[Diagnostic]:
    if not mix.entries:
        return [Diagnostic("E304", "the mix lists no groups", mix.span, "error",
                           ("list the groups and their shares, with `*` for the rest: "
                            f"`mix by {mix.by.name} {{ coco: 0.5, *: 0.5 }}`",), "no groups")]
    diags = []
    seen: dict[str | None, ast.MixEntry] = {}
    for entry in mix.entries:
        key = entry.key_text
        if key in seen:
            what = "`*` (every group not listed)" if key is None else f"group `{key}`"
            diags.append(Diagnostic(
                "E303", f"{what} appears twice in the mix", entry.group.span, "error",
                (f"the first is{_line(seen[key], source)} above; give each group one weight",), "listed again",
            ))
        else:
            seen[key] = entry
        if not 0 < _weight(entry) < math.inf:
            diags.append(Diagnostic(
                "E302", "a mix weight must be a number greater than zero", entry.weight.span, "error",
                ("to leave a group out, drop it with a filter, e.g. "
                 f"`filter {mix.by.name} != \"{entry.key_text or 'name'}\"`",), "not positive",
            ))
    if diags:
        return diags
    total = sum(_weight(e) for e in mix.entries)
    if not math.isfinite(total):
        return [Diagnostic("E302", "the mix weights are too large to add up", mix.span, "error",
                           ("write the shares as fractions that sum to 1, e.g. `coco: 0.5, *: 0.5`",), "too large")]
    if abs(total - 1) > MIX_TOLERANCE:
        normalized = mix_weights(mix) or {}
        items = [f"{'*' if k is None else k}: {w:.4g}" for k, w in normalized.items()]
        shown = ", ".join(items[:10]) + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")
        diags.append(Diagnostic(
            "W001", f"the mix weights sum to {total:.6g}, not 1; they are normalized to {{ {shown} }}", mix.span,
            "warning", ("write the normalized weights to silence this warning",), "normalized",
        ))
    return diags


def _budget(budget: ast.Budget) -> list[Diagnostic]:
    value = budget.amount.value
    if not math.isfinite(value):
        return [Diagnostic("E305", "the budget is too large to be a number", budget.amount.span, "error",
                           ("a policy without `budget` keeps every row that passes the filters",), "too large")]
    if budget.unit == "percent":
        if not 0 < value <= 100:
            return [Diagnostic("E306", f"a percentage budget must be greater than 0% and at most 100%, got {value}%",
                               budget.amount.span, "error",
                               ("a percentage budget is a share of the pool, e.g. `budget 1.5%`",), "out of range")]
        return []
    what = "row" if budget.unit == "rows" else "token"
    if value <= 0:
        return [Diagnostic("E305", f"a {what} budget must be greater than zero, got {value}", budget.amount.span,
                           "error", ("a policy without `budget` keeps every row that passes the filters",),
                           "not positive")]
    if not float(value).is_integer():
        hints: tuple[str, ...] = ()
        if budget.unit == "rows" and value < 1:
            hints = (f"for a share of the pool, write `budget {value * 100:g}%`",)
        elif budget.unit == "rows":
            hints = (f"write a whole number of rows, e.g. `budget {round(value)}`",)
        return [Diagnostic("E305", f"a {what} budget counts whole {what}s, got {value}", budget.amount.span,
                           "error", hints, "not a whole number")]
    return []
