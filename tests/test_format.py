"""Formatter tests: canonical layout, comments, parentheses, literals, idempotence, and `cbdsl fmt`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.dsl import ast
from cbdsl.dsl.format import canonical_text, format_expr, format_policy, format_string
from cbdsl.dsl.parser import parse

def fmt(text: str) -> str:
    """Format text, checking on the way, for every example here, that formatting is idempotent and keeps the AST."""
    first = parse(text)
    out = format_policy(first)
    again = parse(out)
    assert again == first, out
    assert format_policy(again) == out, "the formatter is not idempotent"
    return out


def fmt_expr(text: str) -> str:
    out = fmt(f"filter {text}\n")
    assert out.startswith("filter ")
    return out[len("filter "):-1]


# --- layout -----------------------------------------------------------------------------------


def test_canonical_clause_order_and_blank_line_groups():
    text = """select top x
budget 10
filter a>1
let q = f( a,b )
pool "d"
mix by s {a:1,b:2}
dedup d(x)
adapt a "r"
cite a,b
policy "p"
"""
    assert fmt(text) == """policy "p"
cite a, b
adapt a "r"

pool "d"

let q = f(a, b)

filter a > 1

dedup d(x)

mix by s { a: 1, b: 2 }

budget 10
select top x
"""


def test_order_within_a_kind_is_kept():
    assert fmt("filter b\nlet y = 2\nfilter a\nlet x = 1\n") == "let y = 2\nlet x = 1\n\nfilter b\nfilter a\n"


def test_spacing_is_normalised():
    assert fmt("filter   words( text )>2   and   x in[1,2]\n") == "filter words(text) > 2 and x in [1, 2]\n"
    assert fmt("let   clip=clip_score( model = 'ViT-L-14' , )\n") == 'let clip = clip_score(model="ViT-L-14")\n'
    assert fmt("budget\n  10000\n") == "budget 10_000\n"


def test_empty_policy_and_comment_only_policy():
    assert fmt("") == ""
    assert fmt("\n\n") == ""
    assert fmt("# just a note\n\n# and another\n") == "# just a note\n# and another\n"


def test_output_ends_with_exactly_one_newline():
    assert fmt("budget 1") == "budget 1\n"
    assert fmt("budget 1\n\n\n") == "budget 1\n"


# --- comments ---------------------------------------------------------------------------------


def test_comments_stay_with_their_clause_when_clauses_move():
    text = """# header: why this policy exists

select top clip  # highest first
# the CLIP threshold
filter clip >= 0.3
policy "p"
# the end
"""
    assert fmt(text) == """# header: why this policy exists

policy "p"

# the CLIP threshold
filter clip >= 0.3

select top clip  # highest first

# the end
"""


def test_comments_inside_a_multiline_clause_move_above_it():
    text = "mix by source {  # shares\n    coco: 0.5,  # big\n    *: 0.5,\n}  # after\n"
    assert fmt(text) == "# shares\n# big\nmix by source { coco: 0.5, *: 0.5 }  # after\n"


def test_trailing_comment_of_a_long_mix_follows_its_closing_brace():
    entries = ", ".join(f"group_number_{k}: 0.1" for k in range(8))
    out = fmt(f"mix by source {{ {entries} }}  # shares\n")
    assert out.endswith("\n}  # shares\n")
    assert parse(out).clauses[0].trailing == "# shares"


def test_comment_text_is_kept_verbatim():
    assert fmt("#no space\n#   indented inside   \nbudget 1\n") == "#no space\n#   indented inside\nbudget 1\n"


# --- parentheses --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("a - (b - c)", "a - (b - c)"),
    ("(a - b) - c", "a - b - c"),
    ("a / (b * c)", "a / (b * c)"),
    ("(a * b) / c", "a * b / c"),
    ("(a + b) * c", "(a + b) * c"),
    ("a + (b * c)", "a + b * c"),
    ("not (a or b)", "not (a or b)"),
    ("(not a) or b", "not a or b"),
    ("not (a and b)", "not (a and b)"),
    ("not (a < b)", "not a < b"),
    ("(a < b) == c", "(a < b) == c"),
    ("a == (b < c)", "a == (b < c)"),
    ("-(x + y)", "-(x + y)"),
    ("-(x * y)", "-(x * y)"),
    ("(-x) * y", "-x * y"),
    ("- -x", "- -x"),
    ("-(-x)", "- -x"),
    ("a - -b", "a - -b"),
    ("a or (b or c)", "a or (b or c)"),
    ("(a or b) or c", "a or b or c"),
    ("a and (b or c)", "a and (b or c)"),
    ("(a and b) or c", "a and b or c"),
    ("(not a) + 1 > 0", "(not a) + 1 > 0"),
    ("((((x))))", "x"),
    ("f((a + b)) per s", "f(a + b) per s"),
    ("q(x) among (a > 1)", "q(x) among (a > 1)"),
    ("q(x) among (y)", "q(x) among y"),
    ("q(x) among g(y) per s", "q(x) among g(y) per s"),
    ("[(a or b), (c)]", "[a or b, c]"),
])
def test_minimal_parentheses_that_keep_the_tree(text, expected):
    assert fmt_expr(text) == expected


def test_parentheses_for_hand_built_trees():
    a, b = ast.Name(name="a"), ast.Name(name="b")
    inner = ast.Compare(operands=(a, b), ops=("<",))
    assert format_expr(ast.Compare(operands=(inner, a), ops=("in",))) == "(a < b) in a"
    assert format_expr(ast.Unary(op="-", operand=ast.Unary(op="not", operand=a))) == "-(not a)"
    assert format_expr(ast.Binary(op="*", left=ast.Binary(op="or", left=a, right=b), right=a)) == "(a or b) * a"


# --- literals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("10000", "10_000"),
    ("1234", "1234"),
    ("1e-4", "0.0001"),
    ("1e-05", "1e-05"),
    ("2.50", "2.5"),
    ("3.0", "3.0"),
    ("1e20", "1e+20"),
    ("30%", "30%"),
    ("1.50%", "1.5%"),
    ("0.00001%", "0.00001%"),
    ("1_000_000_000_000_000_000_000.5%", "1000000000000000000000.0%"),
    ("'single'", '"single"'),
    (r"'it\'s'", '"it\'s"'),
    (r'"\d+\.\w"', r'"\d+\.\w"'),
    (r'"a \"quote\""', r'"a \"quote\""'),
    (r'"end\\"', r'"end\\"'),
    ("true", "true"),
])
def test_literals(text, expected):
    assert fmt_expr(text) == expected


def test_percent_literals_never_use_an_exponent():
    for value in (1e-7, 1e-20, 1e16, 123456789.125, 0.1, 5e-324):
        out = format_policy(ast.Policy(clauses=(ast.Budget(unit="percent", amount=ast.Percent(value=value)),)))
        assert "e" not in out.lower().replace("budget", ""), out
        assert parse(out).clauses[0].amount.value == value


@pytest.mark.parametrize("value", ["", "plain", 'a "b"', "it's", "\\", "\\\\", "a\\", "\\d+", "\\'", '\\"', "#x", "é☕"])
def test_strings_round_trip(value):
    text = f"pool {format_string(value)}\n"
    assert parse(text).clauses[0].name.value == value
    assert fmt(text) == text


def test_mix_keys_quoted_only_when_needed():
    assert fmt('mix by s { coco: 1, "laion-400m": 2, "vg": 3, *: 4 }\n') == \
        'mix by s { coco: 1, "laion-400m": 2, "vg": 3, *: 4 }\n'


# --- long lines --------------------------------------------------------------------------------------


def test_long_mix_block_is_broken_over_lines():
    text = ('mix by source { coco: 0.25, "laion-400m": 12.5%, vg: 0.1, cc12m: 0.1, yfcc: 0.05, '
            'redcaps: 0.05, sbu: 0.05, wit: 0.05, *: 0.15 }\n')
    assert fmt(text) == """mix by source {
    coco: 0.25,
    "laion-400m": 12.5%,
    vg: 0.1,
    cc12m: 0.1,
    yfcc: 0.05,
    redcaps: 0.05,
    sbu: 0.05,
    wit: 0.05,
    *: 0.15,
}
"""


def test_short_mix_block_is_joined_on_one_line():
    assert fmt("mix by source {\n    coco: 0.5,\n    *: 0.5,\n}\n") == "mix by source { coco: 0.5, *: 0.5 }\n"


# --- the canonical text ----------------------------------------------------------------------------------


def test_canonical_text_sorts_within_a_kind_and_drops_comments():
    a = parse("# c\nfilter b\nfilter a  # t\nbudget 1\n")
    assert canonical_text(a) == "filter a\nfilter b\nbudget 1\n"
    assert canonical_text(a) == canonical_text(parse("budget 1\nfilter a\nfilter b\n"))


# --- cbdsl fmt ------------------------------------------------------------------------------------------------

UNFORMATTED = "select top clip\nfilter clip>=0.3   # keep\npool 'demo'\n"
FORMATTED = 'pool "demo"\n\nfilter clip >= 0.3  # keep\n\nselect top clip\n'
BROKEN = "pool 'demo'\nfilter clip = 0.3\nselct top clip\n"


def run(args, **kw):
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kw)


def test_fmt_rewrites_in_place(tmp_path: Path):
    path = tmp_path / "policy.cur"
    path.write_text(UNFORMATTED)
    result = run(["fmt", str(path)])
    assert result.exit_code == 0
    assert path.read_text() == FORMATTED
    assert run(["fmt", str(path)]).exit_code == 0
    assert path.read_text() == FORMATTED


def test_fmt_check_exits_1_on_unformatted_and_0_on_formatted(tmp_path: Path):
    path = tmp_path / "policy.cur"
    path.write_text(UNFORMATTED)
    result = run(["fmt", "--check", str(path)])
    assert result.exit_code == 1
    assert path.read_text() == UNFORMATTED  # --check changes nothing
    path.write_text(FORMATTED)
    assert run(["fmt", "--check", str(path)]).exit_code == 0


def test_fmt_stdin_to_stdout():
    result = run(["fmt", "-"], input=UNFORMATTED)
    assert result.exit_code == 0
    assert result.stdout == FORMATTED


def test_fmt_leaves_a_file_with_syntax_errors_untouched(tmp_path: Path):
    path = tmp_path / "policy.cur"
    path.write_text(BROKEN)
    result = run(["fmt", str(path)])
    assert result.exit_code == 1
    assert path.read_text() == BROKEN
    assert "E005" in result.stderr and "E004" in result.stderr
    assert "did you mean `select`?" in result.stderr
    assert not list(tmp_path.glob("*.cbdsl-tmp"))
