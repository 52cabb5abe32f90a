"""The stage functions that take a context (the pool's schema, the scorer registry), with its defaults.

Why a module of its own: the defaults are wired here, in one place, as sqlglot's
``optimize(expression, schema=...)`` takes its context, and ``cbdsl/__init__.py``
exports these names lazily so that ``cbdsl check`` does not pay for defining
them. The stages themselves live where the table in ``cbdsl/__init__.py`` says;
each function here only fills in the defaults and calls its stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: each stage is imported when called (`cbdsl.resolve` loads no Polars)
    from cbdsl.compiler.artifact import Compiled
    from cbdsl.compiler.lower import Lowered
    from cbdsl.compiler.plan import Plan
    from cbdsl.compiler.resolve import TypedPolicy
    from cbdsl.dsl.ast import Policy
    from cbdsl.dsl.diagnostics import Source
    from cbdsl.scorers.registry import Registry


def _registry(registry: Registry | None) -> Registry:
    """The registry a stage runs with: the one given, else the process registry."""
    if registry is not None:
        return registry
    from cbdsl.scorers.registry import registry as process_registry

    return process_registry()


def resolve(policy: Policy, schema: Mapping[str, str] | None = None, *, registry: Registry | None = None,
            source: Source | None = None, assets: Mapping[str, str] | None = None) -> TypedPolicy:
    """Policy -> TypedPolicy: every name a column of ``schema`` (column -> type), a ``let`` or an entry of
    ``registry``; raises :class:`PolicyError` with every error. ``assets`` (name -> kind) are the pool's."""
    from cbdsl.compiler.resolve import resolve as stage

    return stage(policy, schema, source=source, assets=assets, registry=_registry(registry))


def plan(typed: TypedPolicy, *, id_column: str = "id", registry: Registry | None = None) -> Plan:
    """TypedPolicy -> Plan (unoptimized): one step per clause, score, ``let`` and statistic."""
    from cbdsl.compiler.plan import plan as stage

    return stage(typed, id_column, registry=_registry(registry))


def lower(plan: Plan, schema: Mapping[str, str], *, asset_ids: Callable[[str], list[str]] | None = None,
          pool: Any = None, registry: Registry | None = None) -> Lowered:
    """Plan -> Lowered: Polars expressions against ``schema``; ``asset_ids(name)`` lists an id asset's ids."""
    from cbdsl.compiler.lower import lower as stage

    return stage(plan, schema, asset_ids, pool, registry=_registry(registry))


def compile(text: str, name: str = "<policy>", pool: Any = None, *,  # noqa: A001 - PRQL's name for the chain
            registry: Registry | None = None) -> Compiled:
    """text -> Compiled: parse, resolve (against ``pool``'s schema when given), plan and optimize, chained;
    raises :class:`PolicyError` with every diagnostic when the policy has errors."""
    from cbdsl.compiler.artifact import compile_source

    return compile_source(text, name, pool, registry=_registry(registry))
