"""The compiler's stages with cbdsl's scorer registry and method catalogue wired in: the one place that does it.

``compiler/`` takes the registry and the catalogue as arguments, the way
sqlglot's ``optimize(expression, schema=...)`` gets its schema, so a stage
can be run against any registry (a test's, a plugin's). Everything above the
compiler (the engine, the loop, the research tools, the CLI and the public
API in ``cbdsl/__init__.py``) calls the stages through this module:

    parse(text, name)                   text        -> Policy (AST)
    check_source(text, name, schema)    text        -> (Policy, diagnostics)
    check / analyze(policy, schema)     Policy      -> diagnostics (and the typed policy)
    resolve(policy, schema)             Policy      -> TypedPolicy (raises PolicyError)
    plan(typed, id_column)              TypedPolicy -> Plan
    optimize(plan)                      Plan        -> Plan (the rules, in order)
    lower(plan, schema, asset_ids)      Plan        -> Lowered (Polars expressions)
    compile_source(text, name, pool)    text        -> Compiled (the chain, and its artifact)

Light on purpose: ``cbdsl check`` imports it, so it imports neither Polars
nor NumPy (the lowering imports Polars, and is loaded when first called).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbdsl.compiler import check as checking
from cbdsl.compiler import plan as planning
from cbdsl.compiler.ir import Plan
from cbdsl.compiler.typed import TypedPolicy
from cbdsl.compiler.rules import optimize
from cbdsl.compiler.signatures import Methods, Registry
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, PolicyError, Source
from cbdsl.dsl.format import canonical_hash, canonical_text
from cbdsl.dsl.parser import parse
from cbdsl.scaffolds import catalogue
from cbdsl.scorers.registry import registry
from cbdsl.version import __version__

__all__ = ["ARTIFACT_VERSION", "Compiled", "analyze", "check", "check_source", "compile_source", "lower", "methods",
           "optimize", "parse", "plan", "registry", "resolve"]

#: The version of the compiled artifact's JSON layout.
ARTIFACT_VERSION = 1


def methods() -> Methods:
    """The method catalogue as the checker sees it (the catalogue caches what it reads)."""
    return Methods(ids=catalogue.method_ids(), scorers=catalogue.scorer_ids(), users=catalogue.scorer_users())


def _context(given_registry: Registry | None, given_methods: Methods | None) -> dict[str, Any]:
    """The registry and catalogue a stage runs against: the caller's, else cbdsl's."""
    return {"registry": _registry(given_registry), "methods": given_methods if given_methods is not None else methods()}


def _registry(given: Registry | None) -> Registry:
    return given if given is not None else registry()


def check_source(text: str, name: str = "<policy>", schema: Mapping[str, str] | None = None,
                 assets: Mapping[str, str] | None = None, *, registry: Registry | None = None,
                 methods: Methods | None = None) -> tuple[ast.Policy | None, list[Diagnostic]]:
    """:func:`cbdsl.compiler.check.check_source`: parse and check text, never raising."""
    return checking.check_source(text, name, schema, assets, **_context(registry, methods))


def check(policy: ast.Policy, schema: Mapping[str, str] | None = None, *, source: Source | None = None,
          assets: Mapping[str, str] | None = None, registry: Registry | None = None,
          methods: Methods | None = None) -> list[Diagnostic]:
    """:func:`cbdsl.compiler.check.check`: every diagnostic of a parsed policy, sorted."""
    return checking.check(policy, schema, source=source, assets=assets, **_context(registry, methods))


def analyze(policy: ast.Policy, schema: Mapping[str, str] | None = None, *, source: Source | None = None,
            assets: Mapping[str, str] | None = None, registry: Registry | None = None,
            methods: Methods | None = None) -> tuple[TypedPolicy, list[Diagnostic]]:
    """:func:`cbdsl.compiler.check.analyze`: the typed policy and every diagnostic."""
    return checking.analyze(policy, schema, source=source, assets=assets, **_context(registry, methods))


def resolve(policy: ast.Policy, schema: Mapping[str, str] | None = None, *, source: Source | None = None,
            assets: Mapping[str, str] | None = None, registry: Registry | None = None,
            methods: Methods | None = None) -> TypedPolicy:
    """:func:`cbdsl.compiler.check.resolve`: the typed policy, or PolicyError with every error."""
    return checking.resolve(policy, schema, source=source, assets=assets, **_context(registry, methods))


def plan(typed: TypedPolicy, id_column: str = "id", *, registry: Registry | None = None) -> Plan:
    """:func:`cbdsl.compiler.plan.plan`: the logical plan, unoptimized (``registry``: the one it was resolved
    against)."""
    return planning.plan(typed, id_column, registry=_registry(registry))


def lower(plan: Plan, schema: Mapping[str, str], asset_ids: Callable[[str], list[str]] | None = None,
          pool: Any = None, *, registry: Registry | None = None):
    """:func:`cbdsl.compiler.lower.lower`: the plan as Polars expressions (imports Polars)."""
    from cbdsl.compiler import lower as lowering  # Polars: off the `cbdsl check` path

    return lowering.lower(plan, schema, asset_ids, pool, registry=_registry(registry))


@dataclass(frozen=True)
class Compiled:
    policy: ast.Policy
    typed: TypedPolicy
    plan: Plan  # optimized
    artifact: dict[str, Any]
    warnings: tuple  # Diagnostic warnings and notes


def compile_source(text: str, name: str = "<policy>", pool=None, *, registry: Registry | None = None,
                   methods: Methods | None = None) -> Compiled:
    """Parse, resolve (against the pool's schema when a pool is given), plan and optimize, as PRQL's ``compile``
    chains its stages; the result carries the compiled artifact (JSON: the canonical text, the AST, the plan, the
    scorers and columns the run needs, and the hashes of policy, pool and catalogue)."""
    schema = pool.schema if pool is not None else None
    assets = {a: info.kind for a, info in pool.card.assets.items()} if pool is not None else None
    context = _context(registry, methods)
    policy, diags = check_source(text, name, schema, assets, **context)
    if policy is None or any(d.is_error for d in diags):
        raise PolicyError(diags, Source(text, name))
    typed = resolve(policy, schema, source=Source(text, name), assets=assets, **context)
    id_column = pool.id_column if pool is not None else "id"
    optimized = optimize(plan(typed, id_column=id_column, registry=context["registry"]))
    artifact = {
        "artifact_version": ARTIFACT_VERSION,
        "cbdsl_version": __version__,
        "source": name,
        "canonical_text": canonical_text(policy),
        "policy_hash": canonical_hash(policy),
        "source_sha256": source_sha256(text),
        "ast": json.loads(policy.model_dump_json()),
        "plan": optimized.model_dump(mode="json"),
        "required": {
            "scorers": optimized.required_scorers,
            "columns": list(optimized.scan.columns),
        },
        "pool": None if pool is None else {
            "name": pool.name, "path": str(Path(pool.path).resolve()), "content_hash": pool.content_hash,
            "assets": {a: pool.card.assets[a].sha256 for a in _assets(optimized) if a in pool.card.assets},
        },
        "catalogue_hash": catalogue.catalogue_hash(),
    }
    return Compiled(policy, typed, optimized, artifact, tuple(d for d in diags if not d.is_error))


def source_sha256(text: str) -> str:
    """The sha256 of a policy's text as compiled (what makes an artifact stale when the file changes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _assets(plan: Plan) -> list[str]:
    """Names the plan may read as pool assets: ``asset("...")`` and every string parameter of a scorer or
    function (``checkpoint="my-clip"``, ``tokenizer="gpt2-tok"``); the caller keeps those the pool has."""
    names: list[str] = []

    def strings(params: dict) -> None:
        for v in params.values():
            names.extend(x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str))

    def visit(e) -> None:
        if getattr(e, "op", None) == "asset":
            names.append(e.name)
        strings(getattr(e, "params", None) or {})
        for a in getattr(e, "args", ()) or ():
            visit(a)

    for s in plan.steps:
        strings(getattr(s, "params", None) or {})
        for field in ("expr", "arg", "predicate", "among", "of"):
            value = getattr(s, field, None)
            if value is not None:
                visit(value)
        for a in getattr(s, "args", ()) or ():
            visit(a)
    return sorted(set(names))
