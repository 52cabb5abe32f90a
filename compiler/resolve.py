"""Name resolution and type checking: AST -> typed AST (:class:`~cbdsl.compiler.typed.TypedPolicy`).

Every bare name becomes a column of the pool or a ``let``; every call a
registry entry (scorer, function, statistic, select strategy, dedup method)
with its arguments bound, its parameters validated through the entry's
pydantic model, and its output type known. Each ``let`` gets a type, in
dependency order.

All mistakes are collected, not just the first, and none cascades: a name
that got an error has type ``unknown`` afterwards, which is compatible with
everything. With no pool schema (``schema=None``), every unknown bare name is
taken as a column of unknown type and one note (N001) says the column checks
wait for a pool.

:func:`resolve_policy` is the pass, and the one entry point: it makes the
pass's :class:`~cbdsl.compiler.state.State`, types the lets
(:mod:`~cbdsl.compiler.names`), walks the clauses, and hands expressions to
:mod:`~cbdsl.compiler.infer` and calls, strategies and dedup methods to
:mod:`~cbdsl.compiler.bind`. The clause rules that need no types are
:mod:`cbdsl.compiler.clauses`; :mod:`cbdsl.compiler.check` runs both (its
:func:`~cbdsl.compiler.check.resolve` raises on errors).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from cbdsl.compiler import bind, names, rule8
from cbdsl.compiler import types as T
from cbdsl.compiler.clauses import mix_weights
from cbdsl.compiler.infer import infer
from cbdsl.compiler.signatures import Registry
from cbdsl.compiler.state import State
from cbdsl.compiler.typed import TypedPolicy
from cbdsl.compiler.types import BOOL, STR
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, Source, sort_key


def resolve_policy(
    policy: ast.Policy,
    schema: Mapping[str, str] | None,
    registry: Registry,
    pending: Iterable[str] = (),
    *,
    methods_using: Mapping[str, Sequence[str]] | None = None,
    source: Source | None = None,
    assets: Mapping[str, str] | None = None,
) -> tuple[TypedPolicy, list[Diagnostic]]:
    """One pass over a policy: the typed policy (with its warnings and notes) and every diagnostic, in the
    order found.

    ``pending``: the scorers the method catalogue names, of which those the registry lacks are pending
    (E103); ``methods_using``: the methods that use each; ``source``: the text, for quotes and line
    numbers; ``assets`` (name -> kind): the pool's, for rule 8 (None: no pool known)."""
    st = State(policy, schema, registry, pending, methods_using=methods_using, source=source, assets=assets)
    names.collect_lets(st)
    names.type_lets(st, infer)
    for clause in st.policy.clauses:
        _clause(st, clause)
    names.unused_lets(st)
    names.deferred_note(st)
    mixes = st.policy.of_kind(ast.Mix)
    cited = tuple(dict.fromkeys(i.name for c in st.policy.of_kind(ast.Cite) for i in c.methods))
    typed = TypedPolicy(
        policy=st.policy,
        schema=st.schema,
        lets=dict(st.let_types),
        let_order=tuple(st.let_order),
        names=st.names,
        calls=st.calls,
        types=st.types,
        params=st.params,
        ids=st.ids,
        columns=dict(st.columns),
        mix_weights=mix_weights(mixes[0]) if mixes else None,
        cited=cited,
        diagnostics=tuple(sorted((d for d in st.diags if not d.is_error), key=sort_key)),
    )
    return typed, st.diags


def _clause(st: State, clause: ast.Clause) -> None:
    if isinstance(clause, ast.Let):
        if st.lets.get(clause.name.name) is not clause:  # a second definition: still look inside
            infer(st, clause.value)
    elif isinstance(clause, ast.Filter):
        _filter(st, clause)
    elif isinstance(clause, ast.Select):
        bind.select(st, infer, clause)
    elif isinstance(clause, ast.Dedup):
        bind.dedup(st, infer, clause)
    elif isinstance(clause, ast.Mix):
        names.group(st, clause.by, "mix by")
    elif isinstance(clause, ast.PoolClause):
        st.diags.extend(rule8.pool_clause_errors(clause))
    elif isinstance(clause, ast.Budget) and clause.of is not None:
        t = infer(st, clause.of)
        if not t.is_unknown and not t.is_numeric:
            st.error("E307", f"a token budget sums a number per row, but {st.show(clause.of)} is {T.describe(t)}",
                     clause.of, label="not a number",
                     hints=("count the tokens, e.g. `budget 2_000_000 tokens of words(text)`",))


def _filter(st: State, clause: ast.Filter) -> None:
    cond = clause.condition
    t = infer(st, cond)
    if t.is_unknown or t == BOOL:
        return
    quoted = st.show(cond).strip("`")
    if t.is_numeric:
        hint = f"compare it to make a condition, e.g. `filter {quoted} > 2`"
    elif t == STR:
        hint = f"compare it (`filter {quoted} == \"coco\"`) or test a pattern (`filter matches({quoted}, \"...\")`)"
    else:
        hint = "a filter keeps the rows where its condition is true: write a comparison"
    st.error("E201", f"a filter condition must be true or false, but {st.show(cond)} is {T.describe(t)}", cond,
             label="not true/false", hints=(hint,))
