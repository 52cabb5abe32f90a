"""Type inference over expressions: literals, names, lists, operators and comparisons; calls go to :mod:`bind`.

:func:`infer` gives an expression its type and records it by node id. An
operand that is wrong gets one error and the result is ``unknown``, which is
compatible with everything, so a mistake never cascades.
"""

from __future__ import annotations

from cbdsl.compiler import bind, names
from cbdsl.compiler import types as T
from cbdsl.compiler.state import State
from cbdsl.compiler.types import BOOL, EMBEDDING, FLOAT, INT, STR, UNKNOWN, Type
from cbdsl.dsl import ast

_ARITHMETIC_HINT = {
    "str": "for text, measure it first: `len(text)` or `words(text)`",
    "bool": "true/false is not a number: combine conditions with `and`, `or`, `not`",
}


def infer(st: State, node: ast.Node) -> Type:
    """The type of an expression node, recorded in ``st.types``; its mistakes go to ``st.diags``."""
    t = _expression_type(st, node)
    st.types[st.ids[node]] = t
    return t


def _expression_type(st: State, node: ast.Node) -> Type:
    if isinstance(node, ast.Number):
        return INT if isinstance(node.value, int) else FLOAT
    if isinstance(node, ast.Percent):
        return FLOAT
    if isinstance(node, ast.String):
        return STR
    if isinstance(node, ast.Bool):
        return BOOL
    if isinstance(node, ast.Name):
        return names.lookup(st, node.name, node)
    if isinstance(node, ast.ListExpr):
        return _list(st, node)
    if isinstance(node, ast.Unary):
        return _unary(st, node)
    if isinstance(node, ast.Binary):
        return _binary(st, node)
    if isinstance(node, ast.Compare):
        return _compare(st, node)
    if isinstance(node, ast.Call):
        return bind.call(st, infer, node)
    raise TypeError(f"not an expression node: {type(node).__name__}")


def _list(st: State, node: ast.ListExpr) -> Type:
    item = UNKNOWN
    reported = False
    for element in node.items:
        t = infer(st, element)
        joined = T.join(item, t)
        if joined is None:
            if not reported:
                st.error("E219", f"list items must all be the same kind: {st.show(element)} is {T.describe(t)}, "
                         f"the items before it are {T.describe(item)}", element, label="a different kind",
                         hints=("write all strings (`[\"coco\", \"vg\"]`) or all numbers (`[1, 2]`)",))
                reported = True
            continue
        item = joined
    return T.list_of(UNKNOWN if reported else item)


def _unary(st: State, node: ast.Unary) -> Type:
    t = infer(st, node.operand)
    if node.op == "not":
        _need_bool(st, node.operand, t, "`not`")
        return BOOL
    if t == EMBEDDING:
        _embedding_misuse(st, node.operand, "cannot be negated")
        return UNKNOWN
    if not t.is_unknown and not t.is_numeric:
        st.error("E202", f"`-` needs a number, but {st.show(node.operand)} is {T.describe(t)}", node.operand,
                 label="not a number", hints=(_ARITHMETIC_HINT.get(t.name, "arithmetic works on numbers only"),))
        return UNKNOWN
    return t


def _need_bool(st: State, node: ast.Node, t: Type, op: str) -> None:
    if t.is_unknown or t == BOOL:
        return
    hint = ("compare it to make a condition, e.g. `... > 2`" if t.is_numeric
            else 'compare it to make a condition, e.g. `... == "coco"`' if t == STR
            else "an embedding is not a condition: compare a score computed from it")
    st.error("E203", f"{op} needs true/false, but {st.show(node)} is {T.describe(t)}", node,
             label="not true/false", hints=(hint,))


def _embedding_misuse(st: State, node: ast.Node, what: str) -> None:
    st.error("E206", f"{st.show(node)} is an embedding: it {what}", node, label="an embedding",
             hints=("embeddings go to `select kcenter(...)`, `dedup semantic(...)` or a scorer that takes one; "
                    "to compare, use a score computed from it",))


def _binary(st: State, node: ast.Binary) -> Type:
    lt, rt = infer(st, node.left), infer(st, node.right)
    if node.op in ("and", "or"):
        _need_bool(st, node.left, lt, f"`{node.op}`")
        _need_bool(st, node.right, rt, f"`{node.op}`")
        return BOOL
    ok = True
    for side, t in ((node.left, lt), (node.right, rt)):
        if t == EMBEDDING:
            _embedding_misuse(st, side, "has no arithmetic")
            ok = False
        elif not t.is_unknown and not t.is_numeric:
            hint = _ARITHMETIC_HINT.get(t.name, "arithmetic works on numbers only")
            st.error("E202", f"`{node.op}` needs numbers, but {st.show(side)} is {T.describe(t)}", side,
                     label="not a number", hints=(hint,))
            ok = False
    return T.numeric_result(lt, rt, node.op) if ok else UNKNOWN


def _compare(st: State, node: ast.Compare) -> Type:
    operand_types = [infer(st, o) for o in node.operands]
    for i, op in enumerate(node.ops):
        a, b = node.operands[i], node.operands[i + 1]
        ta, tb = operand_types[i], operand_types[i + 1]
        if op in ("in", "not in"):
            _membership(st, op, a, ta, b, tb)
            continue
        if ta == EMBEDDING or tb == EMBEDDING:
            _embedding_misuse(st, a if ta == EMBEDDING else b, "cannot be compared")
            continue
        fits = T.comparable(ta, tb) if op in ("==", "!=") else T.orderable(ta, tb)
        if fits:
            continue
        if op not in ("==", "!=") and T.comparable(ta, tb):
            message = f"`{op}` orders numbers or strings, but {st.show(a)} is {T.describe(ta)}"
            hints = ("true/false values can only be compared with `==` or `!=`",)
        else:
            message = f"cannot compare {st.show(a)} ({T.describe(ta)}) with {st.show(b)} ({T.describe(tb)})"
            hints = ("compare strings with strings (`source == \"coco\"`) and numbers with numbers "
                     "(`len(source) > 3`)",)
        st.error("E204", message, a.span.cover(b.span), label="these cannot be compared", hints=hints)
    return BOOL


def _membership(st: State, op: str, a: ast.Node, ta: Type, b: ast.Node, tb: Type) -> None:
    if ta == EMBEDDING:
        _embedding_misuse(st, a, f"cannot be tested with `{op}`")
        return
    if tb.is_unknown or tb.name == "asset":
        return
    if tb.name != "list":
        st.error("E205", f"`{op}` needs a list on the right, but {st.show(b)} is {T.describe(tb)}", b,
                 label="not a list", hints=('write a list: `source in ["coco", "vg"]`',))
        return
    item = tb.item or UNKNOWN
    if not T.comparable(ta, item):
        hints = ["the list's items must be the same kind as the left side"]
        if ta.name == "list":
            hints.append(f"to test whether a list contains a value, put the value on the left: `\"a\" {op} {st.show(a).strip('`')}`")
        st.error("E205", f"{st.show(a)} is {T.describe(ta)}, but the list on the right holds {T.describe_plural(item)}",
                 b, label="items of another kind", hints=hints)
