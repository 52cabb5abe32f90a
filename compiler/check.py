"""`cbdsl check`: every semantic diagnostic of a policy, and the clause rules.

:func:`check_source` is the boundary the CLI calls: text in, the AST and all
diagnostics out (syntax errors when it does not parse; otherwise name, type
and clause diagnostics with warnings and notes), sorted by position. It never
raises for any input: a bug inside cbdsl becomes one E900 diagnostic.

:func:`clause_rules` holds the checks that need no types: clauses that
cannot repeat, ``cite``/``adapt`` against the method catalogue, mix weights
and keys, budget amounts. Names and types are :mod:`cbdsl.compiler.resolve`'s.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from cbdsl.compiler.resolve import Resolver, TypedPolicy, mix_weights
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, Source, did_you_mean, sort_key
from cbdsl.scorers.registry import Registry

#: Clauses a policy may hold at most once.
SINGLE_CLAUSES: tuple[str, ...] = ("policy", "pool", "budget", "select", "mix")

#: How far mix weights may sum from 1 before they are normalized with a warning.
MIX_TOLERANCE = 1e-6


def check_source(text: str, name: str = "<policy>", schema: Mapping[str, str] | None = None,
                 assets: Mapping[str, str] | None = None, *, registry: Registry | None = None,
                 ) -> tuple[ast.Policy | None, list[Diagnostic]]:
    """Parse and check policy text; return the AST (None if it does not parse) and every diagnostic.

    ``schema`` (column -> type) and ``assets`` (asset name -> kind) come from the pool card when a pool is
    known; without them the column and asset checks wait for one. ``registry``: the callables a policy may
    name (default: the process registry, :func:`cbdsl.scorers.registry.registry`)."""
    policy = None
    try:
        from cbdsl.dsl.parser import parse_diagnostics

        policy, diags = parse_diagnostics(text, name)
        if policy is None:
            return None, diags
        return policy, check(policy, schema, source=Source(text, name), assets=assets, registry=registry)
    except Exception as exc:  # the boundary: a bug in cbdsl must not reach the user as a traceback
        return policy, [internal_error(exc)]


def internal_error(exc: BaseException) -> Diagnostic:
    return Diagnostic(
        "E900",
        f"internal error: {type(exc).__name__}: {exc}; please report this with the policy file",
        None,
        "error",
        ("this is a bug in cbdsl, not in your policy; `cbdsl check --explain E900` says how to report it",),
    )


def check(policy: ast.Policy, schema: Mapping[str, str] | None = None, *, source: Source | None = None,
          assets: Mapping[str, str] | None = None, registry: Registry | None = None) -> list[Diagnostic]:
    """Every semantic diagnostic (errors, warnings, notes) of a parsed policy, sorted by position.

    ``source`` (the text the policy was parsed from) lets messages name lines
    ("the first `budget` is on line 3").
    """
    return analyze(policy, schema, source=source, assets=assets, registry=registry)[1]


def analyze(policy: ast.Policy, schema: Mapping[str, str] | None = None, *, source: Source | None = None,
            assets: Mapping[str, str] | None = None, registry: Registry | None = None,
            ) -> tuple[TypedPolicy, list[Diagnostic]]:
    """Resolve, type-check and apply the clause rules: the typed policy and every diagnostic, sorted."""
    from cbdsl.scaffolds.catalogue import method_ids, scorer_ids, scorer_users

    if registry is None:
        from cbdsl.scorers.registry import registry as process_registry

        registry = process_registry()
    resolver = Resolver(policy, schema, registry, scorer_ids(), methods_using=scorer_users(), source=source,
                        assets=assets)
    typed = resolver.run()
    diags = resolver.diags + clause_rules(policy, source=source, method_ids=method_ids())
    diags.sort(key=sort_key)
    typed = dataclasses.replace(typed, diagnostics=tuple(d for d in diags if not d.is_error))
    return typed, diags


# --- scaffold rules ----------------------------------------------------------------


def scaffold_warnings(policy: ast.Policy, scaffold: str, history) -> list[Diagnostic]:
    """The scaffold rules `cbdsl submit` would refuse on, as warnings, so no submission is spent to learn them.

    ``history`` is the run's scored iterations, ``(iteration, policy)`` in order.
    """
    from cbdsl.scaffolds.modes import RULES, check_policy

    return [Diagnostic(v.code, f"scaffold `{scaffold}`: {v.message}", v.span, "warning",
                       (v.fix, f"`cbdsl submit` refuses this: {RULES[v.code].title} "
                               f"(`cbdsl check --explain {v.code}`)"))
            for v in check_policy(scaffold, policy, history)]


def sandbox_scaffold_warnings(policy: ast.Policy, path: str) -> list[Diagnostic]:
    """:func:`scaffold_warnings` for a policy file inside a sandbox, against its ledger; [] outside one."""
    from pathlib import Path

    from cbdsl.pipelines.sandbox import SandboxError, find_root, load

    root = find_root(Path(path).resolve().parent if path != "-" else Path.cwd())
    if root is None:
        return []
    try:
        cfg = load(root)
    except SandboxError:
        return []  # `cbdsl submit` reports a broken cbdsl.toml; check is about the policy
    if cfg.scaffold in ("open", "guide"):
        return []
    history = []
    if (cfg.state / "ledger.sqlite").is_file():
        from cbdsl.pipelines.ledger import Ledger, LedgerError
        from cbdsl.scaffolds.modes import history_of

        try:
            ledger = Ledger(cfg.state / "ledger.sqlite")
            try:
                history = history_of(ledger.entries())
            finally:
                ledger.close()
        except LedgerError:
            return []  # a damaged ledger is `cbdsl verify`'s and `submit`'s to report; check is about the policy
    return scaffold_warnings(policy, cfg.scaffold, history)


# --- clause rules ------------------------------------------------------------------


def clause_rules(policy: ast.Policy, *, source: Source | None = None, method_ids: tuple[str, ...] | None = None
                 ) -> list[Diagnostic]:
    """The checks on clauses that need no types."""
    if method_ids is None:
        from cbdsl.scaffolds import catalogue

        method_ids = catalogue.method_ids()
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
