"""The formatter: the canonical text form of a policy.

``format_policy`` writes clause kinds in the canonical order
(:data:`~cbdsl.dsl.ast.CLAUSE_ORDER`), keeps the user's order within a kind,
normalises spacing, literals and parentheses (only those precedence needs),
and keeps every comment with its clause. It is idempotent, and
``parse(format_policy(p)) == p``.

``canonical_text`` is the hashed form: no comments, and clauses within a kind
sorted too, because their order carries no meaning.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal

from cbdsl.dsl import ast

MAX_LINE = 88
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Binding strength, loosest first; mirrors the grammar's expression rules.
_PREC = {"or": 1, "and": 2, "not": 3, "compare": 4, "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7, "atom": 8}

# Blank lines separate these groups of clause kinds.
_GROUP = {"policy": 0, "cite": 0, "adapt": 0, "pool": 1, "let": 2, "filter": 3, "dedup": 4, "mix": 5,
          "budget": 6, "select": 6}


def _prec(e: ast.Node) -> int:
    if isinstance(e, ast.Binary):
        return _PREC[e.op]
    if isinstance(e, ast.Compare):
        return _PREC["compare"]
    if isinstance(e, ast.Unary):
        return _PREC["not"] if e.op == "not" else _PREC["neg"]
    return _PREC["atom"]


def format_number(value: int | float) -> str:
    """Integers of five or more digits are grouped by thousands (``10_000``) so budgets read at a glance."""
    if isinstance(value, bool):  # bool is an int; never a number literal here
        raise TypeError("bool is not a number literal")
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return repr(float(value))


def _positional(value: int | float) -> str:
    """A number without exponent (percent literals have none in the grammar)."""
    if isinstance(value, int):
        return str(value)
    text = format(Decimal(repr(float(value))), "f")
    return text if "." in text else text + ".0"


def format_string(value: str) -> str:
    r"""Double-quoted; only ``\`` before a quote, a backslash or the end, and ``"`` are escaped."""
    out = []
    for i, ch in enumerate(value):
        if ch == "\\":
            nxt = value[i + 1] if i + 1 < len(value) else ""
            out.append("\\\\" if nxt in ("", "\\", '"', "'") else "\\")
        elif ch == '"':
            out.append('\\"')
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def format_expr(e: ast.Node, min_prec: int = 0) -> str:
    """An expression, parenthesised only where binding strength requires.

    Built bottom-up with an explicit stack, not by recursion: an expression
    may nest :data:`~cbdsl.dsl.parser.MAX_DEPTH` levels, and the caller may
    already be deep in its own stack.
    """
    texts: dict[int, str] = {}  # id(node) -> its text, unparenthesised
    written = lambda sub, prec: _wrap(sub, texts[id(sub)], prec)  # noqa: E731 - an operand already written
    work: list[tuple[ast.Node, bool]] = [(e, False)]
    while work:
        node, ready = work.pop()
        if ready:
            texts[id(node)] = _expr(node, written)
        elif id(node) not in texts:
            work.append((node, True))
            work.extend((sub, False) for sub in _operands(node))
    return _wrap(e, texts[id(e)], min_prec)


def _wrap(e: ast.Node, text: str, min_prec: int) -> str:
    return f"({text})" if _prec(e) < min_prec else text


def _operands(e: ast.Node) -> tuple[ast.Node, ...]:
    """The subexpressions :func:`_expr` writes through its ``sub`` argument."""
    match e:
        case ast.ListExpr(items=items):
            return items
        case ast.Unary(operand=o):
            return (o,)
        case ast.Binary(left=l, right=r):
            return (l, r)
        case ast.Compare(operands=operands):
            return operands
        case ast.Call(args=args, kwargs=kwargs, among=among):
            return (*args, *(k.value for k in kwargs), *((among,) if among is not None else ()))
    return ()


def _expr(e: ast.Node, sub) -> str:
    """One expression node, its operands written by ``sub(operand, min_prec)``."""
    match e:
        case ast.Number(value=v):
            return format_number(v)
        case ast.Percent(value=v):
            return _positional(v) + "%"
        case ast.String(value=v):
            return format_string(v)
        case ast.Bool(value=v):
            return "true" if v else "false"
        case ast.Name(name=n) | ast.Ident(name=n):
            return n
        case ast.ListExpr(items=items):
            return "[" + ", ".join(sub(i, 0) for i in items) + "]"
        case ast.Unary(op="not", operand=o):
            return "not " + sub(o, _PREC["not"])
        case ast.Unary(op="-", operand=o):
            inner = sub(o, _PREC["neg"])
            return "- " + inner if inner.startswith("-") else "-" + inner
        case ast.Binary(op=op, left=l, right=r):
            p = _PREC[op]
            return f"{sub(l, p)} {op} {sub(r, p + 1)}"
        case ast.Compare(operands=operands, ops=ops):
            p = _PREC["compare"] + 1
            parts = [sub(operands[0], p)]
            for op, operand in zip(ops, operands[1:]):
                parts.append(f"{op} {sub(operand, p)}")
            return " ".join(parts)
        case ast.Call():
            return _call(e, sub)
        case ast.Star():
            return "*"
    raise TypeError(f"not an expression node: {type(e).__name__}")


def _arguments(args: tuple, kwargs: tuple, sub=format_expr) -> str:
    parts = [sub(a, 0) for a in args] + [f"{k.name.name}={sub(k.value, 0)}" for k in kwargs]
    return ", ".join(parts)


def _call(c: ast.Call, sub=format_expr) -> str:
    text = f"{c.func.name}({_arguments(c.args, c.kwargs, sub)})"
    if c.per is not None:
        text += f" per {c.per.name}"
    if c.among is not None:
        text += f" among {sub(c.among, _PREC['atom'])}"
    return text


def _mix_key(entry: ast.MixEntry) -> str:
    key = entry.key_text
    if key is None:
        return "*"
    return key if isinstance(entry.group, ast.Ident) and _IDENT.match(key) else format_string(key)


def _clause_body(c: ast.Clause) -> str:
    match c:
        case ast.PolicyClause(name=n):
            return f"policy {format_string(n.value)}"
        case ast.Cite(methods=ms):
            return "cite " + ", ".join(m.name for m in ms)
        case ast.Adapt(method=m, reason=r):
            return f"adapt {m.name} {format_string(r.value)}"
        case ast.PoolClause(name=n):
            return f"pool {format_string(n.value)}"
        case ast.Let(name=n, value=v):
            return f"let {n.name} = {format_expr(v)}"
        case ast.Filter(condition=cond):
            return f"filter {format_expr(cond)}"
        case ast.Dedup(method=m):
            return f"dedup {_call(m)}"
        case ast.Mix(by=by, entries=entries):
            items = [f"{_mix_key(e)}: {format_expr(e.weight)}" for e in entries]
            one_line = f"mix by {by.name} {{ " + ", ".join(items) + " }" if items else f"mix by {by.name} {{}}"
            if len(one_line) <= MAX_LINE:
                return one_line
            return f"mix by {by.name} {{\n" + "".join(f"    {i},\n" for i in items) + "}"
        case ast.Budget(unit=unit, amount=amount, of=of):
            text = f"budget {format_expr(amount)}"
            if unit == "tokens":
                text += " tokens" + (f" of {format_expr(of)}" if of is not None else "")
            return text
        case ast.Select(strategy=s, args=args, kwargs=kwargs):
            if c.is_ordering:
                return f"select {s.name} {format_expr(args[0])}"
            return f"select {s.name}({_arguments(args, kwargs)})"
    raise TypeError(f"not a clause: {type(c).__name__}")


def format_clause(c: ast.Clause, comments: bool = True) -> str:
    """One clause; with ``comments``, its leading comment lines and trailing comment."""
    body = _clause_body(c)
    if not comments:
        return body
    lines = list(c.comments)
    if c.trailing:
        # After the clause's last line: a comment after the `{` of a multi-line
        # mix would read back as a comment inside it.
        body = f"{body}  {c.trailing}"
    lines.append(body)
    return "\n".join(lines)


def _ordered(clauses: tuple[ast.Clause, ...]) -> list[ast.Clause]:
    return sorted(clauses, key=lambda c: c.rank)  # stable: the user's order within a kind


def format_policy(policy: ast.Policy) -> str:
    """The canonical layout of a policy, comments kept; ends with one newline."""
    out: list[str] = []
    if not policy.clauses:  # only comments: one block (they read back as the header)
        comments = (*policy.comments, *policy.trailing)
        return "\n".join(comments) + "\n" if comments else ""
    if policy.comments:
        out.append("\n".join(policy.comments))
        out.append("")
    previous_group = None
    for clause in _ordered(policy.clauses):
        group = _GROUP[clause.kind]
        if previous_group is not None and group != previous_group:
            out.append("")
        previous_group = group
        out.append(format_clause(clause))
    if policy.trailing:
        out.append("")
        out.append("\n".join(policy.trailing))
    return "\n".join(out) + "\n"


def canonical_text(policy: ast.Policy) -> str:
    """The hashed form: no comments, clauses sorted by kind then by text."""
    bodies = sorted((c.rank, format_clause(c, comments=False)) for c in policy.clauses)
    return "".join(body + "\n" for _rank, body in bodies)


def canonical_hash(policy: ast.Policy) -> str:
    """sha256 of the canonical text, ignoring comments, whitespace and clause order within a kind."""
    return hashlib.sha256(canonical_text(policy).encode()).hexdigest()
