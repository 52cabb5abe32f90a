"""cbdsl: a declarative language for data-curation policies.

The public API is one function per compiler stage (PRQL's staging): each is
pure and can be called on its own, and the CLI exposes each of them.

    parse(text)        text   -> Policy (AST)          cbdsl parse
    fmt(policy)        Policy -> canonical text        cbdsl fmt
    check(policy)      Policy -> diagnostics           cbdsl check
"""

from __future__ import annotations

__version__ = "0.1.0"

from cbdsl.dsl.ast import Policy
from cbdsl.dsl.diagnostics import Diagnostic, PolicyError, Source
from cbdsl.dsl.parser import parse

__all__ = ["Diagnostic", "Policy", "PolicyError", "Source", "__version__", "parse"]
