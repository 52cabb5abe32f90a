"""cbdsl: a declarative language for data-curation policies.

The public API is one function per compiler stage (PRQL's staging): each can
be called on its own, takes its context as arguments (the pool's schema, the
scorer registry), and has a CLI command or a golden test that shows its output.
``compile`` only chains the stages up to the optimized plan.

    stage                                  in -> out                  lives in              shown by
    parse(text, name)                      text -> Policy (AST)       dsl/parser.py         cbdsl parse
    format_policy(policy)                  Policy -> canonical text   dsl/format.py         cbdsl fmt
    check(policy, schema)                  Policy -> diagnostics      compiler/check.py     cbdsl check
    resolve(policy, schema, *, registry)   Policy -> TypedPolicy      compiler/resolve.py   golden/typed
    plan(typed, *, id_column, registry)    TypedPolicy -> Plan        compiler/plan.py      golden/plan
    optimize(plan, rules=RULES)            Plan -> Plan               compiler/rules/       golden/optimized
    lower(plan, schema, *, registry)       Plan -> Lowered (Polars)   compiler/lower.py     golden/lowered
    execute(lowered, pool)                 Lowered -> RunResult       pipelines/execute.py  cbdsl run
    compile(text, name, pool, *, registry) text -> Compiled           compiler/artifact.py  cbdsl compile

(``golden/`` is ``tests/golden/``; ``cbdsl compile`` and ``cbdsl explain`` print
the optimized plan. ``check_source(text, name, schema)`` is ``cbdsl check``'s
boundary: parse and check, never raising.) The stages that take a context are
``cbdsl/stages.py``'s thin functions, where the defaults are wired once, as sqlglot's
``optimize(expression, schema=...)`` takes its context: ``schema=None`` defers
the column checks until a pool is known, and ``registry=None`` is the process
registry (every builtin and discovered scorer, :func:`cbdsl.scorers.registry.registry`).

    >>> import cbdsl
    >>> typed = cbdsl.resolve(cbdsl.parse("filter x > 1 + 1"), {"id": "str", "x": "float"})
    >>> [s.step for s in cbdsl.optimize(cbdsl.plan(typed)).steps]
    ['scan', 'filter', 'select']

Names are imported lazily (PEP 562) so that ``cbdsl check`` starts fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Policy": "cbdsl.dsl.ast",
    "Diagnostic": "cbdsl.dsl.diagnostics",
    "PolicyError": "cbdsl.dsl.diagnostics",
    "Source": "cbdsl.dsl.diagnostics",
    "TypedPolicy": "cbdsl.compiler.resolve",
    "Plan": "cbdsl.compiler.plan",
    "RULES": "cbdsl.compiler.rules",
    "Lowered": "cbdsl.compiler.lower",
    "RunResult": "cbdsl.pipelines.execute",
    "Compiled": "cbdsl.compiler.artifact",
    "parse": "cbdsl.dsl.parser",
    "format_policy": "cbdsl.dsl.format",
    "check": "cbdsl.compiler.check",
    "check_source": "cbdsl.compiler.check",
    "optimize": "cbdsl.compiler.rules",
    "execute": "cbdsl.pipelines.execute",
    "resolve": "cbdsl.stages",
    "plan": "cbdsl.stages",
    "lower": "cbdsl.stages",
    "compile": "cbdsl.stages",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cbdsl' has no attribute {name!r}")
