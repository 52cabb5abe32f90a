"""Stable diagnostic codes and their long explanations (``cbdsl check --explain CODE``).

A code never changes meaning once published. Ranges:

- ``E001``-``E099``: syntax (the parser front end, :mod:`cbdsl.dsl.parse_errors`)
- ``E100``-``E199``: names and resolution (columns, ``let`` names, scorers, methods)
- ``E200``-``E299``: types and values
- ``E300``-``E399``: clause rules (mix, budget, select, dedup, repeats)
- ``W...``: warnings, ``N...``: notes
- ``E900``: an internal error of cbdsl itself (a bug to report, not a policy mistake)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    code: str
    title: str
    explanation: str  # the long form: what it means, an example, the fix


CODES: dict[str, Code] = {}


def _code(code: str, title: str, explanation: str) -> None:
    CODES[code] = Code(code, title, explanation.strip("\n"))


# --- syntax -----------------------------------------------------------------------

_code("E001", "unexpected character", """
A character that is not part of the policy language, such as `@`, `$` or a lone `!`.

    filter clip >= 0.3 @ source        # `@` means nothing here

Fix: remove it. Comments start with `#`; text goes in double quotes; `not`
negates and `!=` means 'not equal'.
""")

_code("E002", "unexpected word or symbol", """
The parser found a word or symbol where the clause cannot continue with it.
The message says what it expected instead.

    budget top 100                     # `budget` takes a number

Fix: compare the clause with its form in the language reference
(README.md, 'The language'). Each clause starts with its keyword:
policy, cite, adapt, pool, let, filter, dedup, mix, budget, select.
""")

_code("E003", "the policy ended early", """
The file ends in the middle of a clause.

    filter clip >=                     # compared to what?

Fix: finish the last clause, or delete it.
""")

_code("E004", "unknown clause keyword", """
A line starts with a word that is not a clause keyword, often a misspelling.

    fliter clip >= 0.3                 # did you mean `filter`?

Fix: every clause starts with one of policy, cite, adapt, pool, let,
filter, dedup, mix, budget, select.
""")

_code("E005", "`=` used to compare", """
`=` names a `let` or a keyword argument; comparing uses `==`.

    filter source = "coco"             # wrong
    filter source == "coco"            # right
""")

_code("E006", "missing comma", """
Two arguments, list items, cited methods or mix entries follow each other
without a comma between them.

    let clip = clip_score(model="ViT-L-14" pretrained="openai")   # wrong
    let clip = clip_score(model="ViT-L-14", pretrained="openai")  # right
""")

_code("E007", "unbalanced bracket", """
A `(`, `[` or `{` is never closed, or a `)`, `]` or `}` closes nothing or the
wrong kind of bracket.

    mix by source { coco: 0.5, *: 0.5        # the `{` is never closed

Fix: close each bracket with its partner, innermost first.
""")

_code("E008", "unterminated string", """
A string starts with a quote but the line ends before the closing quote.
Strings cannot span lines.

    pool "demo                         # wrong
    pool "demo"                        # right

Write `\\"` for a double quote inside a string.
""")

_code("E009", "reserved word used as a name", """
Keywords of the language (policy, cite, adapt, pool, let, filter, dedup, mix,
by, budget, tokens, of, select, top, bottom, per, among, and, or, not, in,
true, false) cannot name a `let`, a column or a parameter.

    let top = clip_score()             # wrong: `top` is reserved
    let top_clip = clip_score()        # right
""")

_code("E900", "internal error", """
cbdsl itself failed on this input. This is a bug in cbdsl, not in your policy.
Please report it with the policy file and the command you ran.
""")


def explain(code: str) -> Code | None:
    return CODES.get(code.strip().upper())
