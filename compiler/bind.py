"""Call binding: each call, ``select`` and ``dedup`` to its registry entry, with its arguments bound and checked.

Positional arguments fill the entry's inputs, then its parameters; keywords
go by name. Inputs are typed against what the entry expects (a column name
where it groups); parameters must be constants and are validated through the
entry's pydantic model (defaults filled in, each validation error worded for
people); a parameter naming a pool asset meets rule 8
(:mod:`cbdsl.compiler.rule8`). ``per`` and ``among`` belong to statistics. A
call to nothing known (a pending scorer, a strategy used as a function, a
typo) gets one error and its arguments are still resolved, so their own
mistakes show.

The functions take :func:`cbdsl.compiler.infer.infer` as ``infer``: an
argument is an expression, and an expression may hold a call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cbdsl.compiler import names, rule8
from cbdsl.compiler import types as T
from cbdsl.compiler.signatures import PENDING_OUTPUTS, Entry, Input, format_value
from cbdsl.compiler.state import Infer, State
from cbdsl.compiler.typed import Resolution
from cbdsl.compiler.types import BOOL, UNKNOWN, Type
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import did_you_mean


@dataclass
class _Bound:
    """A call's arguments by the name of the input or parameter they fill."""

    inputs: dict[str, list[ast.Node]] = field(default_factory=dict)
    params: dict[str, ast.Node] = field(default_factory=dict)
    unknown_keyword: bool = False  # a misspelled keyword: a 'missing argument' would only repeat it


def call(st: State, infer: Infer, node: ast.Call) -> Type:
    """Resolve a call in an expression to its entry and bind it; its output type."""
    name = node.func.name
    entry = st.registry.get(name)
    if entry is not None:
        return _bind(st, infer, entry, node, node.args, node.kwargs, node.per, node.among, st.ids[node])
    _loose(st, infer, node.args, node.kwargs, node.per, node.among)
    if name in st.pending:
        users = st.methods_using.get(name, ())
        hints = [f"methods that use it: {', '.join(users)}"] if users else []
        hints.append("until it lands, use the scorers that exist or a precomputed column of the pool")
        st.error("E103", f"`{name}` is not available yet: it comes with the scorer library (pending)",
                 node.func, label="pending scorer", hints=hints)
        out = T.parse_type(PENDING_OUTPUTS.get(name, "unknown"))
        st.calls[st.ids[node]] = Resolution("pending", name, out)
        return out
    elif st.registry.get(name, "select") or st.registry.get(name, "dedup"):
        space = "select" if st.registry.get(name, "select") else "dedup"
        example = st.registry.get(name, space).signature()  # type: ignore[union-attr]
        st.error("E109", f"`{name}` is a {'select strategy' if space == 'select' else 'dedup method'}, "
                 "not a function", node.func, label=f"only in a `{space}` clause",
                 hints=(f"use it as its own clause: `{example}`",))
    elif name in st.lets or name in st.column_types:
        what = "a `let`" if name in st.lets else "a column"
        if name in st.lets:
            st.used_lets.add(name)
        st.error("E109", f"`{name}` is {what}, not a function", node.func, label="a value, not a function",
                 hints=(f"write `{name}` without parentheses",))
    else:
        st.error("E102", f"unknown function or scorer `{name}`", node.func, label="not a function or scorer",
                 hints=list(did_you_mean(name, _callable_ids(st)))
                 + ["`cbdsl methods` lists the methods and the scorers they use"])
    return UNKNOWN


def _callable_ids(st: State) -> list[str]:
    return list(st.registry.ids("expr")) + sorted(st.pending)


def _loose(st: State, infer: Infer, args: Sequence[ast.Node], kwargs: Sequence[ast.Keyword],
           per: ast.Ident | None, among: ast.Node | None) -> None:
    """Resolve what is inside a call that could not be bound, so its own mistakes still show."""
    for arg in args:
        infer(st, arg)
    for kw in kwargs:
        infer(st, kw.value)
    if per is not None:
        names.lookup(st, per.name, per)
    if among is not None:
        infer(st, among)


def select(st: State, infer: Infer, clause: ast.Select) -> None:
    """Resolve a `select` clause's strategy and bind its arguments."""
    name = clause.strategy.name
    entry = st.registry.get(name, "select")
    if entry is None:
        hints = list(did_you_mean(name, st.registry.ids("select")))
        if st.registry.get(name) is not None or name in st.pending:
            hints.append(f"`{name}` computes a score; to select by it write `select top {name}(...)`")
        hints.append("the strategies are " + ", ".join(f"`{s}`" for s in st.registry.ids("select")))
        st.error("E110", f"unknown select strategy `{name}`", clause.strategy, label="not a strategy", hints=hints)
        _loose(st, infer, clause.args, clause.kwargs, None, None)
        return
    _bind(st, infer, entry, clause, clause.args, clause.kwargs, None, None, st.ids[clause.strategy])


def dedup(st: State, infer: Infer, clause: ast.Dedup) -> None:
    """Resolve a `dedup` clause's method and bind its arguments."""
    method = clause.method
    name = method.func.name
    entry = st.registry.get(name, "dedup")
    if entry is None:
        hints = list(did_you_mean(name, st.registry.ids("dedup")))
        hints.append("the methods are " + ", ".join(f"`{s}`" for s in st.registry.ids("dedup")))
        st.error("E111", f"unknown dedup method `{name}`", method.func, label="not a dedup method", hints=hints)
        _loose(st, infer, method.args, method.kwargs, method.per, method.among)
        return
    _bind(st, infer, entry, method, method.args, method.kwargs, method.per, method.among, st.ids[method])


def _bind(st: State, infer: Infer, entry: Entry, node: ast.Node, args: Sequence[ast.Node],
          kwargs: Sequence[ast.Keyword], per: ast.Ident | None, among: ast.Node | None, key: ast.NodeId) -> Type:
    """Bind a call's arguments to an entry, check them, and record the resolution."""
    _per_among(st, infer, entry, per, among)
    bound = _bind_arguments(st, infer, entry, node, args, kwargs)
    arg_types = _check_inputs(st, infer, entry, node, bound)
    _check_params(st, infer, entry, node, bound, key)
    out = entry.output_type(arg_types)
    st.calls[key] = Resolution(entry.kind, entry.id, out)
    return out


def _statistics(st: State) -> str:
    return ", ".join(f"`{e.id}`" for e in st.registry.entries("expr") if e.is_statistic)


def _per_among(st: State, infer: Infer, entry: Entry, per: ast.Ident | None, among: ast.Node | None) -> None:
    if per is not None:
        if entry.is_statistic:
            names.group(st, per, "per")
        else:
            names.lookup(st, per.name, per)
            st.error("E215", f"`per` groups a statistic, but {entry.display} is a {_kind_words(entry)}", per,
                     label="`per` has nothing to group",
                     hints=(f"the statistics are {_statistics(st)}; e.g. `quantile(clip, 0.3) per source`",))
    if among is not None:
        t = infer(st, among)
        if not entry.is_statistic:
            st.error("E216", f"`among` restricts a statistic, but {entry.display} is a {_kind_words(entry)}",
                     among, label="`among` has nothing to restrict",
                     hints=(f"the statistics are {_statistics(st)}; "
                        "e.g. `quantile(clip, 0.7) among (words(text) > 2)`",))
        elif not t.is_unknown and t != BOOL:
            st.error("E217", f"`among` needs a condition, but {st.show(among)} is {T.describe(t)}", among,
                     label="not true/false",
                     hints=("`among` takes only the next atom: put the whole condition in parentheses, "
                            "e.g. `among (words(text) > 2)`",))


def _bind_arguments(st: State, infer: Infer, entry: Entry, node: ast.Node, args: Sequence[ast.Node],
                    kwargs: Sequence[ast.Keyword]) -> _Bound:
    bound = _Bound()
    rest = list(args)
    for inp in entry.inputs:
        if inp.variadic:
            bound.inputs[inp.name], rest = rest, []
            break
        if rest:
            bound.inputs[inp.name] = [rest.pop(0)]
    if rest and not entry.variadic:
        for name in entry.param_names:
            if not rest:
                break
            bound.params[name] = rest.pop(0)
    if rest:
        most = len(args) - len(rest)
        st.error("E212", f"{entry.display} takes at most {_plural(most, 'positional argument')}, "
                 f"but {len(args)} are given", rest[0], label="one too many" if len(rest) == 1 else "too many",
                 hints=(f"it is called as `{entry.signature()}`",))
        for extra in rest:
            infer(st, extra)
    for kw in kwargs:
        name = kw.name.name
        if name in entry.input_names:
            target: dict = bound.inputs
        elif name in entry.param_names:
            target = bound.params
        else:
            st.error("E108", f"{entry.display} has no parameter `{name}`", kw.name, label="unknown parameter",
                     hints=list(did_you_mean(name, entry.input_names + entry.param_names))
                     + [f"it is called as `{entry.signature()}`"])
            infer(st, kw.value)
            bound.unknown_keyword = True
            continue
        if name in target and target[name]:
            st.error("E213", f"`{name}` is given twice to {entry.display}", kw, label="given again here",
                     hints=("pass each argument once, by position or by keyword",))
            infer(st, kw.value)
            continue
        target[name] = [kw.value] if target is bound.inputs else kw.value
    return bound


def _check_inputs(st: State, infer: Infer, entry: Entry, node: ast.Node, bound: _Bound) -> list[Type]:
    arg_types: list[Type] = []
    for inp in entry.inputs:
        values = bound.inputs.get(inp.name, [])
        if bound.unknown_keyword and len(values) < (inp.min_count if inp.variadic else 1):
            pass
        elif inp.variadic and len(values) < inp.min_count:
            st.error("E211", f"{entry.display} needs at least {_plural(inp.min_count, 'argument')}", node,
                     label=f"{len(values)} given", hints=(f"it is called as `{entry.signature()}`",))
        elif not inp.variadic and not values:
            st.error("E211", f"{entry.display} is missing its argument `{inp.name}`", node,
                     label=f"missing `{inp.name}`", hints=(f"it is called as `{entry.signature()}`",))
        for value in values:
            arg_types.append(_check_input(st, infer, entry, inp, value))
    return arg_types


def _check_input(st: State, infer: Infer, entry: Entry, inp: Input, value: ast.Node) -> Type:
    if inp.expect == "column":
        if not isinstance(value, ast.Name):
            infer(st, value)
            st.error("E220", f"{entry.display} needs a column name for `{inp.name}`, not an expression", value,
                     label="not a column name",
                     hints=(f"name the expression first: `let g = ...`, then `{entry.id}(g)`",))
            return UNKNOWN
        t = infer(st, value)
        if not T.groupable(t):
            st.error("E218", f"cannot group by {st.show(value)}: it is {T.describe(t)}", value, label="has no groups",
                     hints=("group by a column of strings or whole numbers, such as `source`",))
        return t
    t = infer(st, value)
    if not T.accepts(inp.expect, t):
        what = T.describe_expect(inp.expect)
        if entry.space == "select" and entry.id in ("top", "bottom"):
            message = f"{entry.display} ranks rows by a number, but {st.show(value)} is {T.describe(t)}"
        else:
            message = f"{entry.display} expects {what} for `{inp.name}`, but {st.show(value)} is {T.describe(t)}"
        st.error("E207", message, value, label=f"expected {what}",
                 hints=(f"it is called as `{entry.signature()}`",))
        return UNKNOWN
    return t


def _check_params(st: State, infer: Infer, entry: Entry, node: ast.Node, bound: _Bound, key: ast.NodeId) -> None:
    values: dict[str, Any] = {}
    not_constant: set[str] = set()
    for name, expr in bound.params.items():
        infer(st, expr)
        ok, value = constant(expr)
        if ok:
            values[name] = value
            continue
        not_constant.add(name)
        st.error("E210", f"parameter `{name}` of {entry.display} must be a constant (a number, percentage, "
                 "string or true/false), not an expression", expr, label="not a constant",
                 hints=(f"it is called as `{entry.signature()}`",))
    if st.assets is not None:
        st.diags.extend(rule8.asset_errors(entry.id, values, bound.params, st.assets))
    try:
        model = entry.params.model_validate(values)
    except ValidationError as err:
        for problem in err.errors():
            loc = problem.get("loc") or ()
            if loc and loc[0] in not_constant:
                continue
            _param_error(st, entry, node, bound, problem)
        return
    if not not_constant:
        st.params[key] = model


def _param_error(st: State, entry: Entry, node: ast.Node, bound: _Bound, problem: dict) -> None:
    loc = problem.get("loc") or ()
    name = str(loc[0]) if loc else None
    given = bound.params.get(name) if name else None
    where: ast.Node = given if given is not None else node
    kind = problem["type"]
    ctx = problem.get("ctx") or {}
    info = entry.params.model_fields.get(name) if name else None
    hints: list[str] = []
    if info is not None and info.description:
        hints.append(f"`{name}`: {info.description}")
    value_text = st.show(given) if given is not None else ""
    if kind == "missing":
        if bound.unknown_keyword:
            return
        st.error("E211", f"{entry.display} is missing its parameter `{name}`", node, label=f"missing `{name}`",
                 hints=[f"it is called as `{entry.signature()}`"] + hints)
        return
    if kind == "invalid_regex":
        st.error("E214", f"{problem['msg']}", where, label="not a valid pattern",
                 hints=["patterns use Python's `re` syntax; escape special characters with `\\\\`"])
        return
    if kind == "regex_too_large":
        st.error("E221", f"{problem['msg']}", where, label="too large",
                 hints=["repeat less (`\\w{20,}` rather than `\\w{2000}`), or split the test into several "
                        "`matches` joined with `and`"])
        return
    expected = _TYPE_WORDS.get(kind)
    if expected is not None:
        st.error("E208", f"parameter `{name}` of {entry.display} must be {expected}, got {value_text}", where,
                 label=f"expected {expected}", hints=hints + [f"it is called as `{entry.signature()}`"])
        return
    if kind == "literal_error":
        choices = entry.choices(name or "")
        given_value = problem.get("input")
        close = did_you_mean(str(given_value), [str(c) for c in choices]) if isinstance(given_value, str) else ()
        st.error("E209", f"parameter `{name}` of {entry.display} must be one of "
                 + ", ".join(format_value(c) for c in choices) + f", got {value_text}", where,
                 label="not an allowed value", hints=list(close) + hints)
        return
    bound_words = {
        "greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le"),
    }.get(kind)
    if bound_words is not None:
        words, ctx_key = bound_words
        limit = ctx.get(ctx_key)
        message = f"parameter `{name}` of {entry.display} must be {words} {_number_text(limit)}, got {value_text}"
        value = problem.get("input")
        if (kind in ("less_than_equal", "less_than") and limit == 1 and isinstance(given, ast.Number)
                and isinstance(value, (int, float)) and 1 < value <= 100):
            hints.insert(0, f"it is a fraction: write `{_number_text(value)}%` or `{value / 100:g}`")
        st.error("E209", message, where, label="out of range", hints=hints)
        return
    message = problem.get("msg", "invalid value")
    if ctx.get("hint"):  # a validator's own fix (e.g. register a path as a pool asset) comes first
        hints.insert(0, str(ctx["hint"]))
    st.error("E209", f"invalid parameters for {entry.display}: {message}" if name is None
             else f"parameter `{name}` of {entry.display}: {message}", where, label="invalid value",
             hints=hints + [f"it is called as `{entry.signature()}`"])


_TYPE_WORDS = {
    "int_type": "a whole number", "int_from_float": "a whole number", "int_parsing": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "bool_type": "`true` or `false`", "bool_parsing": "`true` or `false`", "list_type": "a list",
}


def _kind_words(entry: Entry) -> str:
    return {"select": "select strategy", "dedup": "dedup method"}.get(entry.kind, entry.kind)


def constant(node: ast.Node) -> tuple[bool, Any]:
    """``(True, value)`` for a literal (a percentage as its fraction), else ``(False, None)``."""
    if isinstance(node, (ast.Number, ast.String, ast.Bool)):
        return True, node.value
    if isinstance(node, ast.Percent):
        return True, node.fraction
    if isinstance(node, ast.Unary) and node.op == "-" and isinstance(node.operand, (ast.Number, ast.Percent)):
        ok, value = constant(node.operand)
        return ok, -value
    if isinstance(node, ast.ListExpr):
        items = [constant(i) for i in node.items]
        if all(ok for ok, _ in items):
            return True, [v for _, v in items]
    return False, None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return format_value(value)

