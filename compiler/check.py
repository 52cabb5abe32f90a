"""`cbdsl check`: every semantic diagnostic of a policy; the boundary of the resolve stage.

:func:`check_source` is the boundary the CLI calls: text in, the AST and all
diagnostics out (syntax errors when it does not parse; otherwise name, type
and clause diagnostics with warnings and notes), sorted by position. It never
raises for any input: a bug inside cbdsl becomes one E900 diagnostic.

:func:`analyze` runs the resolver (:mod:`cbdsl.compiler.resolve`: names,
types, calls) and the clause rules that need no types
(:mod:`cbdsl.compiler.clauses`); :func:`resolve` raises when either found an
error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from cbdsl.compiler.clauses import clause_rules
from cbdsl.compiler.resolve import resolve_policy
from cbdsl.compiler.signatures import Methods, Registry
from cbdsl.compiler.typed import TypedPolicy
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, PolicyError, Source, sort_key
from cbdsl.dsl.parser import parse_diagnostics


def check_source(text: str, name: str = "<policy>", schema: Mapping[str, str] | None = None,
                 assets: Mapping[str, str] | None = None, *, registry: Registry, methods: Methods
                 ) -> tuple[ast.Policy | None, list[Diagnostic]]:
    """Parse and check policy text; return the AST (None if it does not parse) and every diagnostic.

    ``schema`` (column -> type) and ``assets`` (asset name -> kind) come from the pool card when a pool is
    known; without them the column and asset checks wait for one."""
    policy = None
    try:
        policy, diags = parse_diagnostics(text, name)
        if policy is None:
            return None, diags
        return policy, check(policy, schema, source=Source(text, name), assets=assets, registry=registry,
                             methods=methods)
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
          assets: Mapping[str, str] | None = None, registry: Registry, methods: Methods) -> list[Diagnostic]:
    """Every semantic diagnostic (errors, warnings, notes) of a parsed policy, sorted by position.

    ``source`` (the text the policy was parsed from) lets messages name lines
    ("the first `budget` is on line 3").
    """
    return analyze(policy, schema, source=source, assets=assets, registry=registry, methods=methods)[1]


def analyze(policy: ast.Policy, schema: Mapping[str, str] | None = None, *, source: Source | None = None,
            assets: Mapping[str, str] | None = None, registry: Registry, methods: Methods
            ) -> tuple[TypedPolicy, list[Diagnostic]]:
    """Resolve, type-check and apply the clause rules: the typed policy and every diagnostic, sorted."""
    typed, found = resolve_policy(policy, schema, registry, methods.scorers, methods_using=methods.users,
                                  source=source, assets=assets)
    diags = found + clause_rules(policy, source=source, method_ids=methods.ids)
    diags.sort(key=sort_key)
    typed = dataclasses.replace(typed, diagnostics=tuple(d for d in diags if not d.is_error))
    return typed, diags


def resolve(policy: ast.Policy, schema: Mapping[str, str] | None = None, *, source: Source | None = None,
            assets: Mapping[str, str] | None = None, registry: Registry, methods: Methods) -> TypedPolicy:
    """Resolve and type-check a policy; raise :class:`PolicyError` with every error if there is one.

    ``assets`` (name -> kind, the pool card's) lets the checker refuse what rule 8 forbids."""
    typed, diags = analyze(policy, schema, source=source, assets=assets, registry=registry, methods=methods)
    errors = [d for d in diags if d.is_error]
    if errors:
        raise PolicyError(errors, source)
    return typed
