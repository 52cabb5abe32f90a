"""Design rule 8 at check time: a policy reads only the pool and the scorers.

So it names a pool of the pool roots, never a directory (E114); no parameter
names an evaluation set or ground truth of the pool (E112); and ``asset()``
names an asset the pool has (E113). The asset checks run only when the pool
is known. :func:`looks_like_path` is also how the pool roots and the sandbox
tell a pool's name from a path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cbdsl.compiler import types as T
from cbdsl.compiler.signatures import format_value
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, did_you_mean


def looks_like_path(pool: str) -> bool:
    """Whether a pool given as text is a directory path (``/data/x``, ``./x``, ``~/x``) rather than a name."""
    return "/" in pool or "\\" in pool or pool.startswith((".", "~"))


def pool_clause_errors(clause: ast.PoolClause) -> list[Diagnostic]:
    """E114 when the `pool` clause gives a path: only the person running a policy may give a directory."""
    name = clause.name.value
    if not looks_like_path(name):
        return []
    return [Diagnostic("E114", f"`pool` names a pool, never a directory: {format_value(name)} is a path",
                       clause.name.span, "error",
                       ("name a pool of the pool roots ($CBDSL_POOLS, ~/.cbdsl/pools), e.g. "
                        '`pool "demo"`; `cbdsl pool info NAME` shows one',
                        "to run on a pool directory, give it when you run: `cbdsl run policy.cur --pool DIR`"),
                       "a path")]


def asset_errors(entry_id: str, values: Mapping[str, Any], given: Mapping[str, ast.Node],
                 assets: Mapping[str, str]) -> list[Diagnostic]:
    """E112 for each constant parameter that names an evaluation set or ground truth; E113 when `asset()`
    names an asset the pool (``assets``: name -> kind) does not have. ``given``: each parameter's node."""
    diags = []
    for name, value in values.items():
        if not isinstance(value, str):
            continue
        kind = assets.get(value)
        if kind in T.BENCHMARK_KINDS:
            diags.append(Diagnostic("E112", f"`{value}` is the pool's `{kind}` asset: {T.BENCHMARK_WHY}",
                                    given[name].span, "error", (T.BENCHMARK_FIX,), "not readable by a policy"))
        elif kind is None and entry_id == "asset":
            readable = sorted(a for a, k in assets.items() if k not in T.BENCHMARK_KINDS)
            listing = ("its assets are " + ", ".join(f"`{a}`" for a in readable[:12])) if readable \
                else "it has no assets a policy may name"
            diags.append(Diagnostic("E113", f"the pool has no asset `{value}`", given[name].span, "error",
                                    (*did_you_mean(value, readable), listing,
                                     "register a file with `cbdsl pool add-asset POOL NAME FILE`"),
                                    "unknown asset"))
    return diags
