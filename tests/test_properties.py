"""Property tests of the parser and the formatter (hypothesis).

1. Any valid AST survives the formatter: ``parse(format_policy(p)) == p``, the
   formatter is idempotent, and comments stay with their clause.
2. Any text, however broken, gets a policy or E0xx diagnostics with spans
   inside the text from ``parse_diagnostics``: never an exception.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Source, render_all
from cbdsl.dsl.format import canonical_hash, format_policy
from cbdsl.dsl.parse_errors import CLAUSE_KEYWORDS, OTHER_KEYWORDS
from cbdsl.dsl.parser import lark_parser, parse, parse_diagnostics

# Modest by default so the suite stays fast; CBDSL_HYPOTHESIS_EXAMPLES=5000 hunts harder.
SETTINGS = settings(max_examples=int(os.environ.get("CBDSL_HYPOTHESIS_EXAMPLES", "200")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

KEYWORDS = frozenset(CLAUSE_KEYWORDS + OTHER_KEYWORDS)

# --- a strategy for valid policy ASTs ----------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(lambda n: n not in KEYWORDS)
idents = names.map(lambda n: ast.Ident(name=n))

ints = st.integers(min_value=0, max_value=10**20)
floats = st.floats(min_value=0, allow_nan=False, allow_infinity=False).filter(
    lambda f: math.copysign(1.0, f) > 0 and float(repr(f)) == f)
numbers = st.one_of(ints, floats)

# Printable text with the characters that need care: both quotes, backslashes,
# `#` (not a comment inside a string) and non-ASCII (spans are bytes).
string_chars = st.one_of(
    st.sampled_from(list("\"'\\#{}()[],:=%*-_ ab")),
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
)
string_values = st.text(alphabet=string_chars, max_size=12)

comment_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20)
comments = comment_text.map(lambda t: ("# " + t).rstrip())

number_nodes = numbers.map(lambda v: ast.Number(value=v))
percent_nodes = numbers.map(lambda v: ast.Percent(value=v))
string_nodes = string_values.map(lambda v: ast.String(value=v))

leaves = st.one_of(
    number_nodes,
    percent_nodes,
    string_nodes,
    st.booleans().map(lambda b: ast.Bool(value=b)),
    names.map(lambda n: ast.Name(name=n)),
)

COMPARE_OPS = ("<", "<=", ">", ">=", "==", "!=", "in", "not in")


@st.composite
def compares(draw, children):
    operands = draw(st.lists(children, min_size=2, max_size=4))
    ops = draw(st.lists(st.sampled_from(COMPARE_OPS), min_size=len(operands) - 1, max_size=len(operands) - 1))
    return ast.Compare(operands=tuple(operands), ops=tuple(ops))


def keyword_lists(children):
    return st.lists(st.builds(ast.Keyword, name=idents, value=children), max_size=3).map(tuple)


@st.composite
def calls(draw, children):
    return ast.Call(
        func=draw(idents),
        args=tuple(draw(st.lists(children, max_size=3))),
        kwargs=draw(keyword_lists(children)),
        per=draw(st.none() | idents),
        among=draw(st.none() | children),
    )


def extend(children):
    return st.one_of(
        st.lists(children, max_size=3).map(lambda items: ast.ListExpr(items=tuple(items))),
        st.builds(ast.Unary, op=st.sampled_from(["-", "not"]), operand=children),
        st.builds(ast.Binary, op=st.sampled_from(["+", "-", "*", "/", "and", "or"]), left=children, right=children),
        compares(children),
        calls(children),
    )


exprs = st.recursive(leaves, extend, max_leaves=10)


def with_comments(clause_strategy):
    @st.composite
    def build(draw):
        clause = draw(clause_strategy)
        return clause.model_copy(update={
            "comments": tuple(draw(st.lists(comments, max_size=2))),
            "trailing": draw(st.none() | comments),
        })
    return build()


mix_entries = st.builds(
    ast.MixEntry,
    group=st.one_of(idents, string_nodes, st.just(ast.Star())),
    weight=st.one_of(number_nodes, percent_nodes),
)

budgets = st.one_of(
    st.builds(ast.Budget, unit=st.just("rows"), amount=number_nodes),
    st.builds(ast.Budget, unit=st.just("percent"), amount=percent_nodes),
    st.builds(ast.Budget, unit=st.just("tokens"), amount=number_nodes, of=st.none() | exprs),
)

selects = st.one_of(
    st.builds(ast.Select, strategy=st.sampled_from(["top", "bottom"]).map(lambda s: ast.Ident(name=s)),
              args=exprs.map(lambda e: (e,))),
    st.builds(ast.Select, strategy=idents, args=st.lists(exprs, max_size=2).map(tuple),
              kwargs=keyword_lists(exprs)),
)

clauses = st.one_of(
    st.builds(ast.PolicyClause, name=string_nodes),
    st.builds(ast.Cite, methods=st.lists(idents, min_size=1, max_size=3).map(tuple)),
    st.builds(ast.Adapt, method=idents, reason=string_nodes),
    st.builds(ast.PoolClause, name=string_nodes),
    st.builds(ast.Let, name=idents, value=exprs),
    st.builds(ast.Filter, condition=exprs),
    st.builds(ast.Dedup, method=calls(exprs)),
    st.builds(ast.Mix, by=idents, entries=st.lists(mix_entries, max_size=12).map(tuple)),
    budgets,
    selects,
)

policies = st.builds(
    ast.Policy,
    clauses=st.lists(with_comments(clauses), max_size=6).map(tuple),
    comments=st.lists(comments, max_size=2).map(tuple),
    trailing=st.lists(comments, max_size=2).map(tuple),
)


def all_comments(policy: ast.Policy) -> list[str]:
    found = [*policy.comments, *policy.trailing]
    for clause in policy.clauses:
        found.extend(clause.comments)
        if clause.trailing:
            found.append(clause.trailing)
    return sorted(found)


# --- property 1: the formatter round trip ------------------------------------------------


@SETTINGS
@given(policies)
def test_format_then_parse_gives_the_same_policy(policy: ast.Policy) -> None:
    text = format_policy(policy)
    parsed = parse(text)
    assert parsed == policy, text
    assert format_policy(parsed) == text
    assert all_comments(parsed) == all_comments(policy)
    assert canonical_hash(parsed) == canonical_hash(policy)


@SETTINGS
@given(policies)
def test_comments_stay_with_their_clause(policy: ast.Policy) -> None:
    parsed = parse(format_policy(policy))
    by_text = {}
    for clause in policy.clauses:
        by_text.setdefault(format_policy(ast.Policy(clauses=(clause.model_copy(
            update={"comments": (), "trailing": None}),))), []).append((clause.comments, clause.trailing))
    for clause in parsed.clauses:
        key = format_policy(ast.Policy(clauses=(clause.model_copy(update={"comments": (), "trailing": None}),)))
        assert (clause.comments, clause.trailing) in by_text[key]


@SETTINGS
@given(policies)
def test_spans_point_at_the_source_bytes(policy: ast.Policy) -> None:
    text = format_policy(policy)
    data = text.encode("utf-8")
    for node in parse(text).walk():
        if isinstance(node, ast.Name | ast.Ident) and node.span.end > node.span.start:
            assert data[node.span.start:node.span.end].decode("utf-8") == node.name
        if isinstance(node, ast.Clause):
            keyword = data[node.span.start:node.span.end].decode("utf-8").split()[0]
            assert keyword == node.kind


# --- property 2: broken text never breaks the parser --------------------------------------

TERMINALS = sorted({t.name for t in lark_parser().terminals} | {"$END"}, key=len, reverse=True)
GRAMMAR_NAMES = re.compile(r"(?<![A-Za-z_])(?:" + "|".join(map(re.escape, TERMINALS)) + r"|__ANON\w*)(?![A-Za-z_])")


def check_never_raises(text: str) -> None:
    policy, diags = parse_diagnostics(text, "fuzz.cur")
    if policy is not None:
        # Whatever parses (keywords as names included) survives the formatter too.
        assert diags == []
        formatted = format_policy(policy)
        assert parse(formatted) == policy, formatted
        assert format_policy(parse(formatted)) == formatted
        return
    assert diags, "a failed parse must say why"
    size = len(text.encode("utf-8"))
    for d in diags:
        assert d.code.startswith("E0"), d
        assert d.span is not None and 0 <= d.span.start <= d.span.end <= size, (d, size)
        words = re.sub(r"`[^`]*`|\"[^\"]*\"", "", " ".join((d.message, d.label, *d.hints)))
        assert not GRAMMAR_NAMES.search(words), d
    render_all(diags, Source(text, "fuzz.cur"))


# Realistic text reaches the error heuristics (commas, brackets, keywords) more
# often than random ASTs do; the examples/ corpus joins it when present.
SEEDS = [
    """policy "el2n-noise-filter"
cite el2n, clip_score
adapt el2n "per-sample contrastive loss of a 1-epoch proxy instead of classifier error"

pool "demo"

let clip = clip_score(model="ViT-L-14")
let loss = el2n(proxy="tiny", epochs=1, seeds=3)

filter clip >= quantile(clip, 0.30)
filter loss <= quantile(loss, 0.95) per source
filter words(text) > 2 and min(width, height) >= 200
filter quantile(clip, 0.7) among (words(text) > 2) < clip and source not in ['x', "y"]
dedup semantic(image_embedding, eps=0.05)
mix by source {
    coco: 0.4,
    "laion-400m": 30%,
    *: 0.3,
}
budget 10_000 tokens of words(text)
select top loss
""",
    "# header\n\nfilter matches(text, \"\\d+\")  # digits\nbudget 1.5%\nselect weighted(clip, seed=1)\n",
    *(p.read_text(encoding="utf-8") for p in sorted((Path(__file__).parent.parent / "examples").glob("*.cur"))),
]


@st.composite
def mutated(draw):
    text = draw(st.one_of(policies.map(format_policy), st.sampled_from(SEEDS)))
    pieces = list(text)
    alphabet = st.sampled_from(list("(){}[],:=<>!+-*/%#\"'\\ \n\tabz019_.@&|;é") + list(KEYWORDS))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["delete", "insert", "replace"]))
        at = draw(st.integers(min_value=0, max_value=len(pieces)))
        if action == "insert" or not pieces:
            pieces.insert(at, draw(alphabet))
        elif action == "delete":
            del pieces[min(at, len(pieces) - 1)]
        else:
            pieces[min(at, len(pieces) - 1)] = draw(alphabet)
    return "".join(pieces)


@SETTINGS
@given(mutated())
def test_mutated_policies_get_diagnostics_not_exceptions(text: str) -> None:
    check_never_raises(text)


@SETTINGS
@given(st.binary(max_size=200).map(lambda b: b.decode("utf-8", errors="replace")))
def test_random_bytes_get_diagnostics_not_exceptions(text: str) -> None:
    check_never_raises(text)


# ---------------------------------------------------------------- lowering: words(x) OP c as one regex

_WORDS_TEXT = st.lists(st.sampled_from(["a", "bc", "é", " ", "  ", "\t", "\n", "\u00a0", "\u3000", "\u2028", "x y"]),
                       max_size=12).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.one_of(st.none(), _WORDS_TEXT), min_size=1, max_size=20),
       op=st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
       bound=st.one_of(st.integers(-2, 9), st.floats(-2.5, 9.5, allow_nan=False)),
       flipped=st.booleans())
def test_words_comparison_as_a_regex_equals_the_count(texts, op, bound, flipped) -> None:
    """The lowering's regex test of ``words(x) OP c`` gives the count's results, nulls included, either side."""
    import polars as pl

    from cbdsl.compiler.lower import ExprLowering
    from cbdsl.scorers.registry import registry
    from cbdsl.compiler.ir import Apply, Col, Lit, Op

    call, lit = Apply(fn="words", args=(Col(name="text"),)), Lit(value=bound)
    expr = Op(name=op, args=(lit, call) if flipped else (call, lit))
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    got = frame.select(ExprLowering({"text": "str"}, registry())(expr).alias("v"))["v"].to_list()
    count = pl.col("text").str.count_matches(r"\S+")
    pairs = {"<": count < bound, "<=": count <= bound, ">": count > bound, ">=": count >= bound,
             "==": count == bound, "!=": count != bound}
    flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}  # c OP x is x FLIP(OP) c
    want = frame.select(pairs[flip[op] if flipped else op].alias("v"))["v"].to_list()
    assert got == want, (texts, op, bound, flipped)
