"""Unit tests of the parser front end: every clause and expression form, spans,
comments, the JSON round trip, the canonical hash, and the parse errors."""

from __future__ import annotations

import re

import pytest

from cbdsl.dsl import ast
from cbdsl.dsl.ast import (
    Adapt, Binary, Bool, Budget, Call, Cite, Compare, Dedup, Filter, Ident, Keyword, Let, ListExpr, Mix,
    MixEntry, Name, Number, Percent, Policy, PolicyClause, PoolClause, Select, Star, String, Unary,
)
from cbdsl.dsl.diagnostics import PolicyError, Source, render_all
from cbdsl.dsl.parse_errors import WORDS, describe_expected
from cbdsl.dsl.format import canonical_hash
from cbdsl.dsl.parser import lark_parser, parse, parse_diagnostics

# --- helpers ------------------------------------------------------------------------------


def clause(text: str) -> ast.Clause:
    policy = parse(text)
    assert len(policy.clauses) == 1
    return policy.clauses[0]


def expr(text: str) -> ast.Node:
    """The condition of `filter TEXT`."""
    found = clause("filter " + text)
    assert isinstance(found, Filter)
    return found.condition


def n(name: str) -> Name:
    return Name(name=name)


def i(name: str) -> Ident:
    return Ident(name=name)


def num(value: int | float) -> Number:
    return Number(value=value)


def errors(text: str) -> list:
    policy, diags = parse_diagnostics(text, "t.cur")
    assert policy is None, f"expected a syntax error in {text!r}"
    return diags


def codes(text: str) -> list[str]:
    return [d.code for d in errors(text)]


def rendered(text: str) -> str:
    return render_all(errors(text), Source(text, "t.cur"))


# --- clauses ------------------------------------------------------------------------------


def test_policy_clause():
    assert clause('policy "el2n-noise-filter"') == PolicyClause(name=String(value="el2n-noise-filter"))


def test_cite_one_and_several():
    assert clause("cite el2n") == Cite(methods=(i("el2n"),))
    assert clause("cite el2n, clip_score , dsir") == Cite(methods=(i("el2n"), i("clip_score"), i("dsir")))


def test_adapt():
    assert clause('adapt el2n "contrastive loss instead"') == Adapt(
        method=i("el2n"), reason=String(value="contrastive loss instead"))


def test_pool():
    assert clause("pool 'demo'") == PoolClause(name=String(value="demo"))


def test_let():
    assert clause('let clip = clip_score(model="ViT-L-14")') == Let(
        name=i("clip"),
        value=Call(func=i("clip_score"), kwargs=(Keyword(name=i("model"), value=String(value="ViT-L-14")),)))


def test_filter():
    assert clause("filter clip >= 0.3") == Filter(condition=Compare(operands=(n("clip"), num(0.3)), ops=(">=",)))


def test_dedup():
    assert clause("dedup semantic(image_embedding, eps=0.05)") == Dedup(method=Call(
        func=i("semantic"), args=(n("image_embedding"),), kwargs=(Keyword(name=i("eps"), value=num(0.05)),)))


def test_dedup_keeps_per():
    found = clause("dedup exact(text) per source")
    assert isinstance(found, Dedup) and found.method.per == i("source")


def test_mix_with_names_quoted_keys_percent_and_star():
    found = clause('mix by source { coco: 0.4, "laion-400m": 30%, *: 0.3 }')
    assert found == Mix(by=i("source"), entries=(
        MixEntry(group=i("coco"), weight=num(0.4)),
        MixEntry(group=String(value="laion-400m"), weight=Percent(value=30)),
        MixEntry(group=Star(), weight=num(0.3)),
    ))
    assert [e.key_text for e in found.entries] == ["coco", "laion-400m", None]


def test_mix_trailing_comma_multiline_and_empty():
    found = clause("mix by source {\n    coco: 1,\n    vg: 2,\n}")
    assert isinstance(found, Mix) and len(found.entries) == 2
    assert clause("mix by source {}") == Mix(by=i("source"))


def test_mix_key_quoted_differs_from_bare():
    assert clause('mix by s { "coco": 1 }') != clause("mix by s { coco: 1 }")


def test_budget_rows_percent_tokens():
    assert clause("budget 10_000") == Budget(unit="rows", amount=num(10000))
    assert clause("budget 1.5%") == Budget(unit="percent", amount=Percent(value=1.5))
    assert clause("budget 2_000_000 tokens") == Budget(unit="tokens", amount=num(2_000_000))
    assert clause("budget 5 tokens of words(text)") == Budget(
        unit="tokens", amount=num(5), of=Call(func=i("words"), args=(n("text"),)))


def test_select_top_and_bottom():
    assert clause("select top loss") == Select(strategy=i("top"), args=(n("loss"),))
    found = clause("select bottom clip * -1")
    negated = Binary(op="*", left=n("clip"), right=Unary(op="-", operand=num(1)))
    assert found == Select(strategy=i("bottom"), args=(negated,))
    assert found.is_ordering


@pytest.mark.parametrize("text, strategy, args, kwargs", [
    ("select random(seed=7)", "random", (), (("seed", num(7)),)),
    ("select weighted(clip, seed=1)", "weighted", (n("clip"),), (("seed", num(1)),)),
    ("select kcenter(image_embedding, seed=3)", "kcenter", (n("image_embedding"),), (("seed", num(3)),)),
    ("select stratified(source)", "stratified", (n("source"),), ()),
    ("select random()", "random", (), ()),
])
def test_select_strategies(text, strategy, args, kwargs):
    found = clause(text)
    assert found == Select(strategy=i(strategy), args=args,
                           kwargs=tuple(Keyword(name=i(k), value=v) for k, v in kwargs))
    assert not found.is_ordering


def test_select_strategy_takes_no_per():
    # `per` used to be dropped silently here; a select already works per mix group.
    assert codes("select random(seed=1) per source") == ["E002"]


def test_clauses_may_span_lines_and_share_a_line():
    policy = parse("filter a >\n   1 filter b < 2\nbudget\n10")
    assert [c.kind for c in policy.clauses] == ["filter", "filter", "budget"]


def test_empty_and_blank_policies():
    assert parse("") == Policy()
    assert parse("  \n\t\n") == Policy()
    assert parse("# only a comment\n").comments == ("# only a comment",)


# --- literals -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("0", 0), ("42", 42), ("10_000", 10000), ("1_000_000", 1000000),
    ("0.3", 0.3), ("1e-4", 1e-4), ("2.5E+3", 2500.0), ("1_0.5", 10.5), ("3.0", 3.0),
])
def test_numbers(text, value):
    found = expr(text)
    assert isinstance(found, Number) and found.value == value and type(found.value) is type(value)


def test_number_float_and_int_differ():
    assert expr("1") != expr("1.0")


@pytest.mark.parametrize("text, value", [("30%", 30), ("1.5%", 1.5), ("0.25%", 0.25), ("1_0%", 10)])
def test_percent(text, value):
    found = expr(text)
    assert found == Percent(value=value)
    assert found.fraction == pytest.approx(value / 100)


@pytest.mark.parametrize("source, value", [
    ('"plain"', "plain"),
    ("'single'", "single"),
    (r'"say \"hi\""', 'say "hi"'),
    (r"'it\'s'", "it's"),
    ('"it\'s"', "it's"),
    ("'a \"b\"'", 'a "b"'),
    (r'"back\\slash"', "back\\slash"),
    (r'"\d+"', r"\d+"),
    (r'"^\w+\s\.$"', r"^\w+\s\.$"),
    (r'"\n is two characters"', "\\n is two characters"),
    ('"# not a comment"', "# not a comment"),
    ('"café ☕"', "café ☕"),
    ('""', ""),
])
def test_strings(source, value):
    assert expr(source) == String(value=value)


def test_bools():
    assert expr("true") == Bool(value=True)
    assert expr("false") == Bool(value=False)


def test_lists():
    assert expr("[]") == ListExpr()
    inner = ListExpr(items=(Bool(value=True),))
    assert expr('[1, "a", x, [true]]') == ListExpr(items=(num(1), String(value="a"), n("x"), inner))
    assert expr("[1, 2,]") == ListExpr(items=(num(1), num(2)))


def test_names():
    assert expr("clip_score_l14") == n("clip_score_l14")
    assert expr("_private") == n("_private")


# --- expressions --------------------------------------------------------------------------


def test_arithmetic_precedence():
    assert expr("a + b * c") == Binary(op="+", left=n("a"), right=Binary(op="*", left=n("b"), right=n("c")))
    assert expr("(a + b) * c") == Binary(op="*", left=Binary(op="+", left=n("a"), right=n("b")), right=n("c"))
    assert expr("a - b - c") == Binary(op="-", left=Binary(op="-", left=n("a"), right=n("b")), right=n("c"))
    assert expr("a / b / c") == Binary(op="/", left=Binary(op="/", left=n("a"), right=n("b")), right=n("c"))
    assert expr("a - (b - c)") == Binary(op="-", left=n("a"), right=Binary(op="-", left=n("b"), right=n("c")))


def test_unary_minus():
    assert expr("-x") == Unary(op="-", operand=n("x"))
    assert expr("--x") == Unary(op="-", operand=Unary(op="-", operand=n("x")))
    assert expr("-x * y") == Binary(op="*", left=Unary(op="-", operand=n("x")), right=n("y"))
    assert expr("-5") == Unary(op="-", operand=num(5))
    assert expr("a - -b") == Binary(op="-", left=n("a"), right=Unary(op="-", operand=n("b")))


def test_comparisons_and_chains():
    assert expr("a < x <= b") == Compare(operands=(n("a"), n("x"), n("b")), ops=("<", "<="))
    assert expr("x == 1") == Compare(operands=(n("x"), num(1)), ops=("==",))
    assert expr("x != 1") == Compare(operands=(n("x"), num(1)), ops=("!=",))
    assert expr("x > 1") == Compare(operands=(n("x"), num(1)), ops=(">",))
    assert expr("a + 1 < b * 2") == Compare(
        operands=(Binary(op="+", left=n("a"), right=num(1)), Binary(op="*", left=n("b"), right=num(2))), ops=("<",))
    assert expr("(a < b) == c") == Compare(
        operands=(Compare(operands=(n("a"), n("b")), ops=("<",)), n("c")), ops=("==",))


def test_in_and_not_in():
    assert expr('source in ["coco", "vg"]') == Compare(
        operands=(n("source"), ListExpr(items=(String(value="coco"), String(value="vg")))), ops=("in",))
    assert expr("source not in [1]") == Compare(operands=(n("source"), ListExpr(items=(num(1),))), ops=("not in",))
    assert expr("source not   in [1]") == expr("source not in [1]")


def test_and_or_not_precedence():
    a, b, c = n("a"), n("b"), n("c")
    assert expr("a or b and c") == Binary(op="or", left=a, right=Binary(op="and", left=b, right=c))
    assert expr("a and b or c") == Binary(op="or", left=Binary(op="and", left=a, right=b), right=c)
    assert expr("not a and b") == Binary(op="and", left=Unary(op="not", operand=a), right=b)
    assert expr("not (a or b)") == Unary(op="not", operand=Binary(op="or", left=a, right=b))
    assert expr("not not a") == Unary(op="not", operand=Unary(op="not", operand=a))
    assert expr("not a < b") == Unary(op="not", operand=Compare(operands=(a, b), ops=("<",)))
    assert expr("a and b and c") == Binary(op="and", left=Binary(op="and", left=a, right=b), right=c)


def test_calls_positional_keyword_and_mixed():
    assert expr("f()") == Call(func=i("f"))
    assert expr("quantile(clip, 0.3)") == Call(func=i("quantile"), args=(n("clip"), num(0.3)))
    assert expr("f(a, k=1, j='x',)") == Call(func=i("f"), args=(n("a"),), kwargs=(
        Keyword(name=i("k"), value=num(1)), Keyword(name=i("j"), value=String(value="x"))))
    assert expr("f(g(h(x)))") == Call(func=i("f"), args=(Call(func=i("g"), args=(Call(func=i("h"), args=(n("x"),)),)),))
    assert expr("f(k=a < b)").kwargs[0].value == Compare(operands=(n("a"), n("b")), ops=("<",))


def test_per_and_among():
    found = expr("quantile(clip, 0.3) per source")
    assert found == Call(func=i("quantile"), args=(n("clip"), num(0.3)), per=i("source"))
    found = expr("quantile(clip, 0.7) among (words(text) > 2)")
    assert found.among == Compare(operands=(Call(func=i("words"), args=(n("text"),)), num(2)), ops=(">",))
    found = expr("mean(x) per source among ok")
    assert found.per == i("source") and found.among == n("ok")
    assert expr("clip >= quantile(clip, 0.3) per source") == Compare(
        operands=(n("clip"), Call(func=i("quantile"), args=(n("clip"), num(0.3)), per=i("source"))), ops=(">=",))


def test_keywords_are_names_where_no_keyword_fits():
    policy = parse("let top = 1\nlet by = 2\nlet pool = 3\n"
                   "select top top\nfilter per > by\nmix by pool { filter: 1, *: 2 }")
    assert [c.name.name for c in policy.of_kind(Let)] == ["top", "by", "pool"]
    assert policy.of_kind(Select)[0].args == (n("top"),)
    assert policy.of_kind(Mix)[0].entries[0].group == i("filter")


def test_keywords_need_a_word_boundary():
    # Lark's contextual lexer used to split `letter` into `let` + `ter`.
    assert expr("letter > 1") == Compare(operands=(n("letter"), num(1)), ops=(">",))
    assert expr("notable") == n("notable")
    assert expr("x in india") == Compare(operands=(n("x"), n("india")), ops=("in",))
    assert codes("filter a\nletter = 2") == ["E004"]
    assert codes("filter x > 1 andy") == ["E002"]
    assert codes("filter x notin [1]") == ["E002"]


def test_true_false_not_are_reserved_as_names():
    assert codes("let true = 1") == ["E009"]
    assert codes("let not = 1") == ["E009"]
    assert codes("filter x > not") == ["E009"]
    assert codes("filter f(false=1)") == ["E009"]
    assert codes("cite false") == ["E009"]
    # ... but a mix key names a group value, and may be spelled so
    mix = clause("mix by is_synthetic { true: 0.2, false: 0.8 }")
    assert [e.key_text for e in mix.entries] == ["true", "false"]


# --- spans --------------------------------------------------------------------------------


def source_of(text: str, node: ast.Node) -> str:
    return text.encode("utf-8")[node.span.start:node.span.end].decode("utf-8")


def test_spans_are_byte_offsets_after_non_ascii_text():
    text = 'policy "café ☕"\nfilter clip >= quantile(clip, 0.3) per source\n'
    policy = parse(text, "p.cur")
    f = policy.of_kind(Filter)[0]
    assert source_of(text, f) == "filter clip >= quantile(clip, 0.3) per source"
    assert source_of(text, f.condition) == "clip >= quantile(clip, 0.3) per source"
    call = f.condition.operands[1]
    assert source_of(text, call) == "quantile(clip, 0.3) per source"
    assert source_of(text, call.args[1]) == "0.3"
    assert source_of(text, call.per) == "source"
    assert source_of(text, policy.of_kind(PolicyClause)[0].name) == '"café ☕"'
    assert f.span.source == "p.cur" and call.span.source == "p.cur"
    assert policy.span.end == len(text.encode("utf-8"))


def test_every_node_span_is_its_source_text():
    text = '# é\npolicy "ü"\nlet s = "ß" + x\nmix by src { "ä": 50%, *: 0.5 }\nselect top s\n'
    data = text.encode("utf-8")
    for node in parse(text).walk():
        if isinstance(node, Policy):
            continue
        piece = data[node.span.start:node.span.end].decode("utf-8")
        if isinstance(node, Name | Ident):
            assert piece == node.name
        elif isinstance(node, String):
            assert piece[1:-1] == node.value
        elif isinstance(node, ast.Clause):
            assert piece.startswith(node.kind)


def test_parenthesised_expression_span_excludes_the_parentheses():
    text = "filter (a + b) > 1"
    inner = expr("(a + b) > 1").operands[0]
    assert source_of(text, inner) == "a + b"


def test_error_spans_are_bytes_in_a_later_chunk():
    text = 'policy "ççç"\nfilter a = 1\nfilter b = 2\n'
    diags = errors(text)
    assert [d.code for d in diags] == ["E005", "E005"]
    data = text.encode("utf-8")
    assert all(data[d.span.start:d.span.end] == b"=" for d in diags)


# --- comments -----------------------------------------------------------------------------


def test_leading_and_trailing_comments():
    policy = parse("# why this filter\n# and more\nfilter a > 1  # tuned on iteration 3\nbudget 10\n")
    f, b = policy.clauses
    assert f.comments == ("# why this filter", "# and more")
    assert f.trailing == "# tuned on iteration 3"
    assert b.comments == () and b.trailing is None


def test_header_block_is_set_off_by_a_blank_line():
    policy = parse("# header line 1\n# header line 2\n\n# about the policy\npolicy \"x\"\n")
    assert policy.comments == ("# header line 1", "# header line 2")
    assert policy.clauses[0].comments == ("# about the policy",)


def test_comment_directly_above_first_clause_is_not_a_header():
    policy = parse("# about the policy\npolicy \"x\"\n")
    assert policy.comments == ()
    assert policy.clauses[0].comments == ("# about the policy",)


def test_footer_comments():
    policy = parse("budget 10\n\n# the end\n# really\n")
    assert policy.trailing == ("# the end", "# really")
    assert policy.clauses[0].trailing is None


def test_comment_inside_a_multiline_mix_stays_with_the_mix():
    policy = parse("mix by source {  # shares\n    coco: 0.5,  # the big one\n    *: 0.5,\n}  # after\nbudget 1\n")
    mix = policy.of_kind(Mix)[0]
    assert mix.comments == ("# shares", "# the big one")
    assert mix.trailing == "# after"
    assert policy.of_kind(Budget)[0].comments == ()


def test_trailing_comment_goes_to_the_last_clause_on_its_line():
    policy = parse("filter a filter b  # about b\n")
    assert [c.trailing for c in policy.clauses] == [None, "# about b"]


def test_comment_between_clauses_goes_to_the_next():
    policy = parse("filter a\n\n# about b\n\nfilter b\n")
    assert [c.comments for c in policy.clauses] == [(), ("# about b",)]


def test_comments_do_not_change_equality_or_hash():
    plain = parse("filter a > 1\nbudget 10\n")
    commented = parse("# head\n\n# lead\nfilter a > 1  # trail\nbudget   10\n# foot\n")
    assert plain == commented
    assert canonical_hash(plain) == canonical_hash(commented)


def test_hash_sign_in_a_string_is_not_a_comment():
    policy = parse('filter matches(text, "#tag")  # real\n')
    assert policy.clauses[0].trailing == "# real"
    assert policy.clauses[0].condition.args[1] == String(value="#tag")


# --- JSON round trip and the canonical hash -------------------------------------------------

FULL = '''# header

policy "everything"  # the name
cite el2n, clip_score
adapt el2n "contrastive loss"
pool "demo"
let clip = clip_score(model="ViT-L-14")
let loss = -el2n(proxy="tiny", epochs=1) / 2
filter clip >= quantile(clip, 30%) per source among (words(text) > 2)
filter 0.1 < loss <= 1e-4 and not (source in ["a", "b"] or lang(text) not in ['en'])
filter matches(text, "\\d+")
dedup semantic(image_embedding, eps=0.05)
mix by source {
    coco: 0.4,
    "laion-400m": 30%,
    *: 0.3,
}
budget 10_000 tokens of words(text)
select kcenter(image_embedding, seed=3)
# footer
'''


def test_json_round_trip_keeps_everything():
    policy = parse(FULL, "full.cur")
    again = Policy.model_validate_json(policy.model_dump_json())
    assert again == policy
    assert again.model_dump() == policy.model_dump()  # spans and comments too
    assert again.clauses[0].span == policy.clauses[0].span
    assert again.comments == ("# header",)


def test_canonical_hash_ignores_comments_whitespace_and_order_within_a_kind():
    a = parse("filter a > 1\nfilter b < 2\nbudget 10\n")
    b = parse("budget    10\n\n# x\nfilter b<2\nfilter   a >\n 1\n")
    assert a == b
    assert canonical_hash(a) == canonical_hash(b)


def test_canonical_hash_changes_when_a_literal_changes():
    base = canonical_hash(parse("filter a > 1\nbudget 10\n"))
    assert canonical_hash(parse("filter a > 2\nbudget 10\n")) != base
    assert canonical_hash(parse("filter a > 1\nbudget 11\n")) != base
    assert canonical_hash(parse("filter a > 1.0\nbudget 10\n")) != base
    assert canonical_hash(parse('filter a > "1"\nbudget 10\n')) != base


def test_parse_raises_policy_error_with_all_diagnostics():
    with pytest.raises(PolicyError) as err:
        parse("filter a = 1\nfilter b = 2\n")
    assert [d.code for d in err.value.diagnostics] == ["E005", "E005"]


# --- parse errors -------------------------------------------------------------------------

BAD_INPUTS = [
    "filter", "filter a >", "let x =", "let x", "let", "policy", "policy x", "cite", "cite a,", "adapt x",
    "pool demo", "mix", "mix by", "mix by s", "mix by s {", "mix by s { a", "mix by s { a:", "mix by s { a: 1",
    "mix source { a: 1 }", "mix by s { a = 1 }", "budget", "budget top 5", "budget 5 tokens of", "select",
    "select x", "select top", "select random(", "dedup", "dedup x", "filter f(a b)", "filter f(a,, b)",
    "filter [1 2]", "filter a)", "filter (a", "filter [a", "filter f(a]", "filter a = 1", "fliter a",
    "let x = f(model=", "filter x => 1", "filter a @ b", "filter 'abc", 'pool "abc', "filter a && b",
    "filter a || b", "filter x > .5", "filter x > 5 %", "let x == 1", "filter a <> b", "filter !a",
    "filter x; filter y", "let true = 1", "filter f(not=1)", "filter not == 1", "filter a b", "filter a > 1 c",
    "select top x per source", "filter f(x) per", "filter f(x) among", "filter a in", "filter a not", "filter 1 +",
    "filter * 2", "filter x > 1 policy", "filter café > 1", "filter \x00", "filter \ufffd", "mix by s { *: 1 *: 2 }",
    "let x = [1, 2", "let x = f(a)(b)", "budget 10 tokens of x by", "cite a b c", "}", ")", "{", "== 1", ",",
]


@pytest.mark.parametrize("text", BAD_INPUTS)
def test_bad_inputs_get_worded_diagnostics(text):
    diags = errors(text)
    assert diags
    out = render_all(diags, Source(text, "t.cur"))
    terminals = {t.name for t in lark_parser().terminals} | {"$END"}
    for d in diags:
        assert re.fullmatch(r"E0\d\d", d.code)
        assert d.span is not None and 0 <= d.span.start <= d.span.end <= len(text.encode())
        words = re.sub(r"`[^`]*`", "", " ".join((d.message, d.label, *d.hints)))
        found = {w for w in re.findall(r"[A-Z_$][A-Z_0-9]+", words) if w in terminals or w.startswith("__")}
        assert not found, f"grammar names {found} in: {out}"
    assert "__ANON" not in out and "$END" not in out


def test_every_terminal_has_a_word():
    assert {t.name for t in lark_parser().terminals} <= set(WORDS)


def test_describe_expected_folds_sets_into_phrases():
    assert describe_expected({"NAME", "INT", "FLOAT", "STRING", "LPAR", "MINUS", "NOT"}) == "an expression"
    assert describe_expected({"PLUS", "MINUS", "STAR", "SLASH", "LT", "AND", "OR", "FILTER", "$END"}) \
        == "an operator or a new clause"
    assert describe_expected({"COLON"}) == "`:`"
    assert describe_expected({"$END"}) == "the end of the policy"


def test_end_of_input_reads_the_policy_ended_early():
    (d,) = errors("filter clip >=")
    assert d.code == "E003" and d.message == "the policy ended early"
    assert d.label == "expected an expression after this"
    assert "the end of the policy" not in rendered("filter clip >=").split("\n")[0]


def test_clause_cut_short_by_the_next_clause():
    (d,) = errors("let clip =\nfilter clip > 1\n")
    assert d.code == "E003" and d.message == "the `let` clause ends early"


def test_ended_early_inside_a_call_and_a_mix_block():
    (d,) = errors('let clip = clip_score(model=')
    assert d.code == "E003" and any("`clip_score(`" in h and "still open" in h for h in d.hints)
    (d,) = errors("mix by source {\n    coco: 0.4,\n    vg:")
    assert d.code == "E003" and any("mix block" in h for h in d.hints)


@pytest.mark.parametrize("text, where", [
    ('let clip = clip_score(model="a" pretrained="b")', "arguments"),
    ("cite el2n clip_score", "cited methods"),
    ("mix by source {\n  coco: 0.4\n  vg: 0.6\n}", "mix entries"),
    ("mix by source { coco: 0.4 *: 0.6 }", "mix entries"),
    ('filter source in ["coco" "vg"]', "list items"),
    ("filter f(1 2)", "arguments"),
])
def test_missing_comma(text, where):
    (d,) = errors(text)
    assert d.code == "E006"
    assert d.message.startswith("a comma is missing before")
    assert where in d.hints[0]


def test_missing_comma_points_at_the_second_item():
    text = "cite el2n clip_score"
    (d,) = errors(text)
    assert text.encode()[d.span.start:d.span.end] == b"clip_score"


@pytest.mark.parametrize("text", ["filter source = 'coco'", "filter a = 1 and b", "let x = f(1 = 2)"])
def test_single_equals_to_compare(text):
    (d,) = errors(text)
    assert d.code == "E005" and "==" in d.label
    assert text.encode()[d.span.start:d.span.end] == b"="


def test_arrow_for_greater_or_equal():
    (d,) = errors("filter x => 1")
    assert d.code == "E005" and "`>=`" in d.label


@pytest.mark.parametrize("text, opener, message", [
    ("filter min(width, height >= 200\nfilter a", "(", "this `(` is never closed"),
    ("mix by s { a: 1, *: 2\nbudget 10", "{", "this `{` is never closed"),
    ('filter s in ["a", "b"', "[", "this `[` is never closed"),
    ("let x = f(a", "(", "this `(` is never closed"),
])
def test_unclosed_bracket_points_at_the_opener(text, opener, message):
    (d,) = errors(text)
    assert d.code == "E007" and d.message == message
    assert text.encode()[d.span.start:d.span.end] == opener.encode()


def test_unclosed_opener_is_the_one_never_closed():
    text = "filter f(g(x), h(y)\n"
    (d,) = errors(text)
    assert d.code == "E007" and d.span.start == text.index("(")


@pytest.mark.parametrize("text, closer, message", [
    ("filter words(text)) > 2", ")", "`)` closes nothing"),
    ("mix by s { a: 1 }}", "}", "`}` closes nothing"),
    ('filter s in ["a", "b")', ")", "`)` does not close the `[` opened before it"),
    ("filter f(a]", "]", "`]` does not close the `(` opened before it"),
])
def test_extra_or_wrong_closer(text, closer, message):
    (d,) = errors(text)
    assert d.code == "E007" and d.message == message
    assert text.encode()[d.span.start:d.span.end] == closer.encode()


@pytest.mark.parametrize("text, suggestion", [
    ("fliter a > 1", "filter"), ("selct top x", "select"), ("budjet 10", "budget"),
    ("polcy 'x'", "policy"), ("mixx by s { a: 1 }", "mix"), ("filter a\nlett x = 1", "let"),
])
def test_misspelled_clause_keyword(text, suggestion):
    (d,) = errors(text)
    assert d.code == "E004"
    assert d.hints == (f"did you mean `{suggestion}`?",)


def test_unknown_word_at_line_start_lists_the_clauses():
    (d,) = errors("filter a\nweight x\n")
    assert d.code == "E004" and "`filter`" in d.hints[0] and "`select`" in d.hints[0]


@pytest.mark.parametrize("text", ['pool "demo', "filter matches(text, '\\d+)", 'policy "a\n"'])
def test_unterminated_string(text):
    diags = errors(text)
    assert diags[0].code == "E008"
    assert diags[0].message == "this string is never closed"


@pytest.mark.parametrize("text, message", [
    ("filter a @ b", "`@` cannot appear here"),
    ("filter a && b", "`&&` is not an operator"),
    ("filter !a", "`!` alone is not an operator"),
    ("filter x; budget 1", "`;` is not needed"),
    ("filter café > 1", "`é` cannot appear in a name"),
])
def test_unexpected_character(text, message):
    (d,) = errors(text)
    assert d.code == "E001" and d.message == message


def test_unexpected_word_names_what_fits_and_the_clause_form():
    (d,) = errors("budget top 100")
    assert d.code == "E002" and d.message == "unexpected `top`"
    assert d.label == "expected a number or a percentage"
    assert any("`budget 10000`" in h for h in d.hints)


def test_unexpected_word_close_to_an_accepted_keyword():
    (d,) = errors("mix bye source { a: 1 }")
    assert d.code == "E002" and "did you mean `by`?" in d.hints


def test_three_broken_clauses_give_three_diagnostics():
    text = 'policy "x"\nfilter a = 1\nlet y = f(a b)\nselct top y\nbudget 10\n'
    diags = errors(text)
    assert [d.code for d in diags] == ["E005", "E006", "E004"]
    assert [Source(text).line_col(d.span.start)[0] for d in diags] == [2, 3, 4]


def test_misspelled_clauses_are_each_reported():
    assert codes("fliter a > 1\nselct top x\nbudjet 10\n") == ["E004", "E004", "E004"]


def test_a_clause_keyword_inside_a_mix_block_does_not_split_it():
    # `pool` at the start of a line is a mix key here, not a new clause.
    assert codes("mix by s {\n  pool: 1\n  b: 2\n}\nfilter a = 1\n") == ["E006", "E005"]
    assert parse("mix by s {\n  pool: 1,\n  filter: 2\n}\n").clauses[0].entries[1].group == i("filter")


def test_nesting_too_deep_is_a_diagnostic_not_a_recursion_error():
    assert codes("filter " + " + ".join(["x"] * 300)) == ["E010"]
    assert codes("filter " + "-" * 300 + "x") == ["E010"]
    assert codes("filter " + "[" * 200 + "]" * 200) == ["E010"]
    assert parse("filter " + " + ".join(["x"] * 100)) is not None


@pytest.mark.parametrize("text", ["filter x > 1e999", "budget " + "9" * 301, "filter x < " + "1" * 400 + ".5%"])
def test_numbers_without_a_finite_value(text):
    # An infinite float used to be formatted as `inf`, which reads back as a name.
    (d,) = errors(text)
    assert d.code == "E011"
    assert text.encode()[d.span.start:d.span.end].decode()[0].isdigit()


def test_long_integer_literals_with_leading_zeros():
    assert expr("0" * 5000 + "7") == num(7)
    assert expr("1e-999") == num(0.0)


# --- the generated stand-alone tables ------------------------------------------------------


def test_standalone_tables_are_built_from_the_current_grammar():
    from cbdsl.dsl import generate_parser

    assert not generate_parser.is_stale(), "grammar changed: run `python -m cbdsl.dsl.generate_parser`"


def _full_lark():
    from lark import Lark

    from cbdsl.dsl.generate_parser import grammar_text

    return Lark(grammar_text(), parser="lalr", strict=True, propagate_positions=True, maybe_placeholders=True)


EXAMPLE_TEXTS = sorted(p.read_text() for p in (__import__("pathlib").Path(__file__).parent.parent / "examples").glob("*.cur"))


@pytest.mark.parametrize("text", EXAMPLE_TEXTS + BAD_INPUTS[:40])
def test_standalone_tables_parse_as_lark_itself(text):
    """The checked-in tables and a Lark built from the grammar now give the same tree or the same error."""
    full, standalone = _full_lark(), lark_parser()

    def outcome(parser):
        try:
            return ("tree", parser.parse(text).pretty())
        except Exception as err:  # the two raise their own (equal-named) exception classes
            where = (getattr(err, "line", None), getattr(err, "column", None), getattr(getattr(err, "token", None), "type", None))
            return (type(err).__name__, where)

    assert outcome(standalone) == outcome(full)


def test_check_path_imports_no_lark_package():
    import subprocess
    import sys

    code = "import sys; from cbdsl.stages import check_source; check_source('filter x > 1', 'p.cur'); " \
           "print(sorted(m for m in sys.modules if m == 'lark' or m.startswith(('lark.', 'regex', 'interegular'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
