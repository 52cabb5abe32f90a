"""cbdsl: a declarative language for data-curation policies.

The public API is one function per compiler stage (PRQL's staging): each can
be called on its own, and has a CLI command or a golden test that shows its
output. ``compile`` only chains the stages up to the optimized plan.

    stage                          in -> out                  lives in                     shown by
    parse(text, name)              text -> Policy (AST)       dsl/parser.py                cbdsl parse
    format_policy(policy)          Policy -> canonical text   dsl/format.py                cbdsl fmt
    check(policy, schema)          Policy -> diagnostics      compiler/check.py            cbdsl check
    resolve(policy, schema)        Policy -> TypedPolicy      compiler/resolve.py          golden/typed
    plan(typed, id_column)         TypedPolicy -> Plan        compiler/plan.py             golden/plan
    optimize(plan, rules=RULES)    Plan -> Plan               compiler/rules/              golden/optimized
    lower(plan, schema)            Plan -> Lowered (Polars)   compiler/lower.py            golden/lowered
    execute(lowered, pool)         Lowered -> RunResult       pipelines/engine/execute.py  cbdsl run
    compile(text, name, pool)      text -> Compiled           stages.py                    cbdsl compile

(``golden/`` is ``tests/golden/``; ``cbdsl compile`` and ``cbdsl explain`` print
the optimized plan. ``check_source(text, name, schema)`` is ``cbdsl check``'s
boundary: parse and check, never raising.) The compiler takes the scorer
registry and the method catalogue as arguments, as sqlglot's
``optimize(expression, schema=...)`` takes its schema; ``cbdsl/stages.py`` is the
one place that hands it cbdsl's own, and the stages here are its functions.
``schema=None`` defers the column checks until a pool is known.

    >>> import cbdsl
    >>> typed = cbdsl.resolve(cbdsl.parse("filter x > 1 + 1"), {"id": "str", "x": "float"})
    >>> [s.step for s in cbdsl.optimize(cbdsl.plan(typed)).steps]
    ['scan', 'filter', 'select']

Names are imported lazily (PEP 562) so that ``cbdsl check`` starts fast.
"""

from __future__ import annotations

import importlib

from cbdsl.version import __version__

#: Public name -> (module, attribute).
_EXPORTS = {
    "Policy": ("cbdsl.dsl.ast", "Policy"),
    "Diagnostic": ("cbdsl.dsl.diagnostics", "Diagnostic"),
    "PolicyError": ("cbdsl.dsl.diagnostics", "PolicyError"),
    "Source": ("cbdsl.dsl.diagnostics", "Source"),
    "TypedPolicy": ("cbdsl.compiler.typed", "TypedPolicy"),
    "Plan": ("cbdsl.compiler.ir", "Plan"),
    "RULES": ("cbdsl.compiler.rules", "RULES"),
    "Lowered": ("cbdsl.compiler.lower", "Lowered"),
    "RunResult": ("cbdsl.pipelines.engine.execute", "RunResult"),
    "Compiled": ("cbdsl.stages", "Compiled"),
    "parse": ("cbdsl.dsl.parser", "parse"),
    "format_policy": ("cbdsl.dsl.format", "format_policy"),
    "check": ("cbdsl.stages", "check"),
    "check_source": ("cbdsl.stages", "check_source"),
    "resolve": ("cbdsl.stages", "resolve"),
    "plan": ("cbdsl.stages", "plan"),
    "optimize": ("cbdsl.compiler.rules", "optimize"),
    "lower": ("cbdsl.stages", "lower"),
    "execute": ("cbdsl.pipelines.engine.execute", "execute"),
    "compile": ("cbdsl.stages", "compile_source"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'cbdsl' has no attribute {name!r}")
