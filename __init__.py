"""cbdsl: a declarative language for data-curation policies.

The public API is one function per compiler stage (PRQL's staging): each is
pure, can be called on its own, and has a CLI command that shows its output.

    parse(text)               text   -> Policy (AST)               cbdsl parse
    format_policy(policy)     Policy -> canonical text             cbdsl fmt
    check(policy, schema)     Policy -> diagnostics                cbdsl check
    resolve(policy, schema)   Policy -> TypedPolicy (typed AST)    cbdsl check

Names are imported lazily (PEP 562) so that ``cbdsl check`` starts fast.
"""

from __future__ import annotations

import importlib

from cbdsl.version import __version__

_EXPORTS = {
    "Policy": "cbdsl.dsl.ast",
    "Diagnostic": "cbdsl.dsl.diagnostics",
    "PolicyError": "cbdsl.dsl.diagnostics",
    "Source": "cbdsl.dsl.diagnostics",
    "parse": "cbdsl.dsl.parser",
    "format_policy": "cbdsl.dsl.format",
    "check": "cbdsl.stages",
    "check_source": "cbdsl.stages",
    "resolve": "cbdsl.stages",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cbdsl' has no attribute {name!r}")
