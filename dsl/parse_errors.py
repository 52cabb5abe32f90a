"""Lark's parse errors, reworded for people.

Grammar terminal names never reach the user: :data:`WORDS` names each
terminal in words, and :func:`describe_expected` folds the parser's expected
set into a short phrase ("an operator or a new clause"). End of input reads
"the policy ended early". The common mistakes get their own codes and fixes:

- E001 a character that is not part of the language (``@``, ``&&``, ``;``)
- E002 anything else: what was found, what the clause expects, its form
- E003 the policy (or a clause, before the next one) ended early
- E004 a misspelled clause keyword (``fliter``: did you mean ``filter``?)
- E005 ``=`` where a comparison ``==`` fits
- E006 a missing comma between arguments, list items, methods or mix entries
- E007 an unbalanced bracket, pointing at the opener that is never closed
- E008 an unterminated string
- E009 ``true``, ``false`` or ``not`` used as a name

(E010, nesting too deep, and E011, a number out of range, are found by
:mod:`cbdsl.dsl.parser` itself on a tree that did parse.)

Recognisers are plain checks on the parser state (the token, what the parser
would accept there, and the text around it), tried in order, most specific
first. Lark's ``match_examples`` was the alternative; these checks also see
the text (brackets, the start of a line), which the messages need.

Spans are character offsets of the piece that was parsed
(:func:`to_diagnostic`); the parser turns them into byte offsets of the whole
text. Every helper here is linear in the piece: a policy may be huge.
"""

from __future__ import annotations

import difflib
import re
from decimal import Decimal, InvalidOperation

from cbdsl.dsl.lark_tables import Shift, Token, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from cbdsl.dsl import ast
from cbdsl.dsl.ast import Span
from cbdsl.dsl.diagnostics import Diagnostic

CLAUSE_KEYWORDS = ("policy", "cite", "adapt", "pool", "let", "filter", "dedup", "mix", "budget", "select")
OTHER_KEYWORDS = ("by", "tokens", "of", "top", "bottom", "per", "among", "and", "or", "not", "in", "true", "false")

#: Every terminal of the grammar in words (a test checks that none is missing).
WORDS: dict[str, str] = {
    "NAME": "a name", "INT": "a number", "FLOAT": "a number", "PERCENT": "a percentage",
    "STRING": "a string", "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`", "EQEQ": "`==`", "NE": "`!=`",
    "LE": "`<=`", "GE": "`>=`", "LT": "`<`", "GT": "`>`", "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`",
    "SLASH": "`/`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`",
    "RBRACE": "`}`", "COMMENT": "a comment", "WS": "a space", "$END": "the end of the policy",
    **{kw.upper(): f"`{kw}`" for kw in CLAUSE_KEYWORDS + OTHER_KEYWORDS},
}

#: What each clause looks like, for hints (`filter condition` would tell nothing).
FORMS: dict[str, str] = {
    "policy": 'policy "name"',
    "cite": "cite method_a, method_b",
    "adapt": 'adapt method "how this policy adapts it"',
    "pool": 'pool "name"',
    "let": "let name = expression",
    "dedup": "dedup method(column, parameter=value)",
    "mix": "mix by column { key: weight, *: weight }",
    "budget": "budget 10000`, `budget 1.5%` or `budget 2_000_000 tokens of column",
    "select": "select top expression`, `select bottom expression` or `select random(seed=1)",
}

_CLAUSES = {kw.upper() for kw in CLAUSE_KEYWORDS}
_KEYWORDS = {kw.upper() for kw in CLAUSE_KEYWORDS + OTHER_KEYWORDS}
_EXPR_START = {"NAME", "INT", "FLOAT", "PERCENT", "STRING", "TRUE", "FALSE", "LPAR", "LSQB", "MINUS", "NOT"}
_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "LT", "LE", "GT", "GE", "EQEQ", "NE", "IN", "NOT", "AND", "OR"}
_COMPARISONS = {"LT", "LE", "GT", "GE", "EQEQ", "NE", "IN"}
_CLOSERS = {"RPAR", "RSQB", "RBRACE"}
_CLOSER_TERMINAL = {")": "RPAR", "]": "RSQB", "}": "RBRACE"}
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_EXPONENT = re.compile(r"(?<![A-Za-z0-9_.])[0-9][0-9_]*(\.[0-9_]*)?[eE][+-]?[0-9]+\Z")
_CLAUSE_AT_LINE_START = re.compile(r"^[ \t]*(" + "|".join(CLAUSE_KEYWORDS) + r")(?![A-Za-z0-9_])", re.MULTILINE)


# --- phrases -----------------------------------------------------------------------


def describe_expected(expected: set[str]) -> str:
    """The expected terminals as a short phrase: 'an expression', 'an operator or a new clause', '`:`'."""
    expected = {e for e in expected if not e.startswith("__") and e not in ("WS", "COMMENT")}
    parts: list[str] = []
    if len(expected & _EXPR_START) >= 4:
        parts.append("an expression")
        expected -= _EXPR_START
    if len(expected & _OPERATORS) >= 4:
        parts.append("an operator")
        expected -= _OPERATORS | {"LPAR"}
    end = "$END" in expected
    clause = bool(expected & _CLAUSES)
    expected -= _CLAUSES | {"$END"}
    parts.extend(sorted({WORDS.get(e, "something else") for e in expected}, key=_word_order))
    if clause:
        parts.append("a new clause")
    if end and not clause:
        parts.append("the end of the policy")
    if not parts:
        return "something else"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _word_order(word: str) -> tuple[int, str]:
    return (0 if word.startswith("a") else 1, word)  # 'a name' before '`,`'


def _found(tok: Token) -> str:
    """How a found token is named in a message."""
    if tok.type == "$END":
        return "the end of the policy"
    if tok.type == "STRING":
        return "the string " + _clip(str(tok))
    if tok.type in ("INT", "FLOAT", "PERCENT"):
        return "the number `" + _clip(str(tok)) + "`"
    return "`" + _clip(str(tok)) + "`"


def _clip(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def close_keyword(word: str, candidates: tuple[str, ...] = CLAUSE_KEYWORDS) -> str | None:
    """The keyword ``word`` is most likely a misspelling of, or None."""
    close = difflib.get_close_matches(word.lower(), candidates, n=1, cutoff=0.65)
    return close[0] if close else None


# --- text helpers ------------------------------------------------------------------


# One match per comment, string, lone quote (an unterminated string) or bracket: `_scan` skips all but brackets.
_BRACKET_SCAN = re.compile(r"""#[^\n]*|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|["']|[][(){}]""")


def _scan(text: str, stop: int | None = None):
    """Yield ``(char, pos)`` for each bracket in ``text[:stop]``, skipping strings and comments."""
    stop = len(text) if stop is None else stop
    for m in _BRACKET_SCAN.finditer(text):
        pos = m.start()
        if pos >= stop:
            return
        ch = m.group()
        if ch in _OPEN or ch in _CLOSE:
            yield ch, pos


def bracket_problem(text: str) -> Diagnostic | None:
    """The first unbalanced bracket of ``text`` as an E007 (character span), or None if balanced."""
    stack: list[tuple[str, int]] = []
    for ch, i in _scan(text):
        if ch in _OPEN:
            stack.append((ch, i))
        elif stack and stack[-1][0] == _CLOSE[ch]:
            stack.pop()
        elif stack:
            opener, at = stack[-1]
            want = _OPEN[opener]
            return Diagnostic(
                "E007", f"`{ch}` does not close the `{opener}` opened before it", Span.at(start=i, end=i + 1),
                label=f"expected `{want}` here",
                hints=(f"{_opener_name(text, at)} needs `{want}`: close it first, or remove this `{ch}`",))
        else:
            return Diagnostic("E007", f"`{ch}` closes nothing", Span.at(start=i, end=i + 1),
                              label=f"no `{_CLOSE[ch]}` is open here",
                              hints=(f"remove this `{ch}`, or add the `{_CLOSE[ch]}` it should close",))
    if stack:
        ch, pos = stack[-1]
        return Diagnostic("E007", f"this `{ch}` is never closed", Span.at(start=pos, end=pos + 1),
                          label=f"needs a matching `{_OPEN[ch]}`",
                          hints=(f"add `{_OPEN[ch]}` where the {_bracket_kind(ch)} ends",))
    return None


def _opener_name(text: str, pos: int) -> str:
    """'the `(` of `clip_score(`', 'the `{` of the mix block': an opener named by what it opens, not by position."""
    ch = text[pos]
    call = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\Z", text[:pos]) if ch == "(" else None
    if call:
        return f"the `(` of `{_clip(call.group(1))}(`"
    return f"the `{ch}` of the {_bracket_kind(ch)}" if ch != "(" else "the `(`"


def _unclosed(text: str) -> int | None:
    """Position of the innermost bracket left open at the end of ``text`` (closers assumed matched)."""
    stack: list[int] = []
    for ch, i in _scan(text):
        if ch in _OPEN:
            stack.append(i)
        elif stack:
            stack.pop()
    return stack[-1] if stack else None


def _bracket_kind(ch: str) -> str:
    return {"(": "call or group", "[": "list", "{": "mix block"}[ch]


def _innermost_open(text: str, pos: int) -> str | None:
    """The bracket still open at ``pos`` (innermost), or None."""
    stack: list[str] = []
    for ch, _i in _scan(text, pos):
        if ch in _OPEN:
            stack.append(ch)
        elif stack:
            stack.pop()
    return stack[-1] if stack else None


def _clause_at(text: str, pos: int) -> str | None:
    """The keyword of the clause that ``pos`` is in: the last clause keyword starting a line before it."""
    found = None
    for m in _CLAUSE_AT_LINE_START.finditer(text, 0, pos):
        found = m.group(1)
    if found is None:
        m = re.match(r"\s*([a-z]+)", text)
        found = m.group(1) if m and m.group(1) in CLAUSE_KEYWORDS else None
    return found


def _at_line_start(text: str, pos: int) -> bool:
    return text[text.rfind("\n", 0, pos) + 1:pos].strip() == ""


def _form_hint(clause: str | None) -> tuple[str, ...]:
    if clause not in FORMS:
        return ()
    article = "an" if clause[0] in "aeiou" else "a"
    return (f"{article} `{clause}` clause reads `{FORMS[clause]}`",)


# --- the classifier ---------------------------------------------------------------


def to_diagnostic(err: UnexpectedInput, piece: str, at_end: bool = True, shift: int = 0) -> Diagnostic:
    """One Lark error on ``piece`` as one diagnostic, its span in characters of ``piece``.

    ``at_end`` says whether the piece runs to the end of the whole text: if it
    does not, running out of input means this clause stopped before the next
    one began, not that the policy ended early. ``shift`` is where ``piece``
    starts in the text the error was raised on (the parser reuses an error of
    the whole text for the chunk it lies in). The parser turns the span into
    bytes of the whole text.
    """
    if isinstance(err, UnexpectedCharacters):
        return _bad_character(err.pos_in_stream - shift, piece)
    tok = _moved(err.token, shift) if isinstance(err, UnexpectedToken) else None
    accepts = (_accepts(err) if isinstance(err, UnexpectedToken) else None) or err.expected
    expected = {e for e in accepts if e not in ("WS", "COMMENT")}
    if tok is None or tok.type == "$END":
        return _ended_early(expected, tok, piece, at_end)
    start = tok.start_pos
    end = tok.end_pos if tok.end_pos is not None else start + len(tok)
    span = Span.at(start=start, end=max(end, start + 1))
    for recognise in (_equals, _closer, _missing_comma, _unknown_clause, _reserved_before):
        found = recognise(tok, expected, span, piece)
        if found is not None:
            return found
    return _unexpected(tok, expected, span, piece)


def _accepts(err: UnexpectedToken) -> set[str] | None:
    """The terminals the parser could have taken where it failed: Lark's ``err.accepts``, on the state stack alone.

    Lark tries each terminal on a copy of the whole interactive parser (its
    lexer included): a millisecond per error, seconds for a file with
    thousands of broken clauses. This runs the same reduce-then-shift loop as
    Lark's ``ParserState.feed_token`` on a copy of the stack of states;
    tests/test_fuzz.py checks that both agree.
    """
    parser = err.interactive_parser
    if parser is None:
        return None
    conf = parser.parser_state.parse_conf
    states, stack = conf.states, parser.parser_state.state_stack
    found = set()
    for terminal in states[stack[-1]]:
        if not terminal.isupper():
            continue
        at = list(stack)
        while terminal in states[at[-1]]:
            action, arg = states[at[-1]][terminal]
            if action is Shift:
                found.add(terminal)
                break
            if arg.expansion:
                del at[-len(arg.expansion):]
            at.append(states[at[-1]][arg.origin.name][1])
            if terminal == "$END" and at[-1] == conf.end_state:
                found.add(terminal)
                break
    return found


def _moved(tok: Token, shift: int) -> Token:
    """``tok`` with its positions ``shift`` characters earlier."""
    if not shift:
        return tok
    return Token(tok.type, tok.value, None if tok.start_pos is None else tok.start_pos - shift, tok.line,
                 tok.column, tok.end_line, tok.end_column, None if tok.end_pos is None else tok.end_pos - shift)


def _bad_character(pos: int, text: str) -> Diagnostic:
    ch = text[pos]
    span = Span.at(start=pos, end=pos + 1)
    if ch in "\"'":
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        return Diagnostic("E008", "this string is never closed", Span.at(start=pos, end=end),
                          label=f"no closing {ch} on this line",
                          hints=(f"end the string with {ch} on the same line; write \\{ch} for a {ch} inside it",))
    two = text[pos:pos + 2]
    special = {
        "&&": ("`&&` is not an operator", "write `and` to require both conditions"),
        "||": ("`||` is not an operator", "write `or` to accept either condition"),
    }
    if two in special:
        message, hint = special[two]
        return Diagnostic("E001", message, Span.at(start=pos, end=pos + 2), hints=(hint,))
    single = {
        "!": ("`!` alone is not an operator", "write `not x` to negate, or `!=` for 'not equal'"),
        "&": ("`&` is not an operator", "write `and` to require both conditions"),
        "|": ("`|` is not an operator", "write `or` to accept either condition"),
        ";": ("`;` is not needed", "clauses need no separator: start each clause on its own line"),
        "%": ("`%` must follow a number directly", "write a percentage without a space: `30%`"),
        ".": ("`.` cannot appear here", "write decimals with a leading digit (`0.5`); names have no `.`"),
    }
    exponent = _EXPONENT.search(text, max(0, pos - 80), pos)  # a bounded look back: a number is short
    if ch == "%" and exponent:
        number = exponent.group(0)
        try:
            written = format(Decimal(number.replace("_", "")), "f")
        except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
            written = "0.001"
        return Diagnostic("E001", "a percentage cannot have an exponent", Span.at(start=exponent.start(), end=pos + 1),
                          hints=(f"write it out: `{written}%`",))
    if ch in single:
        message, hint = single[ch]
        return Diagnostic("E001", message, span, hints=(hint,))
    if not ch.isprintable():
        return Diagnostic("E001", f"the character {ascii(ch)[1:-1]!s} cannot appear here", span,
                          label="not part of the policy language",
                          hints=("remove it; it may be invisible in your editor",))
    if ch.isalpha():
        return Diagnostic("E001", f"`{ch}` cannot appear in a name", span, label="not an ASCII letter",
                          hints=("names use ASCII letters, digits and `_`; other text goes in quotes: \"café\"",))
    return Diagnostic("E001", f"`{ch}` cannot appear here", span, label="not part of the policy language",
                      hints=("remove it; comments start with `#` and text goes in double quotes",))


def _ended_early(expected: set[str], tok: Token | None, text: str, at_end: bool) -> Diagnostic:
    """E003, or E007 when all that is missing is the closing bracket."""
    brackets = bracket_problem(text)
    open_at = _unclosed(text)
    if brackets is not None and (open_at is None or _CLOSER_TERMINAL[_OPEN[text[open_at]]] in expected):
        return brackets
    if tok is not None and tok.end_pos:
        start, end = tok.start_pos, tok.end_pos  # $END borrows the position of the last token
    else:
        end = len(text.rstrip())
        start = max(end - 1, 0)
    span = Span.at(start=start, end=max(end, start + 1) if text else start)
    clause = _clause_at(text, start)
    if at_end:
        message, hint = "the policy ended early", "finish the last clause, or delete it"
    else:
        where = f"the `{clause}` clause" if clause else "this clause"
        message, hint = f"{where} ends early", "finish it before the next clause starts"
    hints = [hint]
    if open_at is not None:
        hints.append(f"{_opener_name(text, open_at)} is still open: close it with `{_OPEN[text[open_at]]}`")
    return Diagnostic("E003", message, span, label=f"expected {describe_expected(expected)} after this",
                      hints=(*hints, *_form_hint(clause)))


def _equals(tok: Token, expected: set[str], span: Span, text: str) -> Diagnostic | None:
    """E005 for `=` where a comparison fits; `=` after `true` / `false` / `not` as a keyword argument is E009."""
    if tok.type != "EQUAL":
        return None
    before = text[:span.start]
    reserved = re.search(r"[(,]\s*(true|false|not)\s*\Z", before)
    if reserved:
        word = reserved.group(1)
        at = reserved.start(1)
        return Diagnostic("E009", f"`{word}` is a reserved word and cannot name a keyword argument",
                          Span.at(start=at, end=at + len(word)), label="reserved",
                          hints=(_reserved_hint(word),))
    if "COLON" in expected:
        return Diagnostic("E002", "a mix entry separates its key and weight with `:`", span,
                          label="write `:` here", hints=("a mix reads `mix by column { key: weight, *: weight }`",))
    if not expected & (_COMPARISONS | _CLAUSES | {"$END", "COMMA", "RPAR", "RSQB"}):
        return None
    after = text[span.end:span.end + 1]
    if after in ("<", ">"):
        both = Span.at(start=span.start, end=span.end + 1)
        return Diagnostic("E005", f"`={after}` is not an operator", both, label=f"did you mean `{after}=`?",
                          hints=(f"write `{after}=`: the `=` comes second",))
    return Diagnostic("E005", "`=` is not a comparison", span, label="did you mean `==`?",
                      hints=("write `==` to compare; `=` only names a `let` or a keyword argument",))


def _closer(tok: Token, expected: set[str], span: Span, text: str) -> Diagnostic | None:
    if tok.type not in _CLOSERS:
        return None
    return bracket_problem(text)


def _missing_comma(tok: Token, expected: set[str], span: Span, text: str) -> Diagnostic | None:
    """E006: an item starts right after a complete one where a comma would continue the sequence."""
    if "COMMA" not in expected:
        return None
    wordlike = bool(_WORD.match(str(tok))) and tok.type not in ("AND", "OR", "IN", "NOT", "PER", "AMONG")
    starts_item = tok.type in _EXPR_START - {"MINUS", "NOT"} or wordlike or (
        tok.type == "STAR" and "STAR" not in expected)
    if not starts_item:
        return None
    if wordlike and expected & _CLAUSES and (_at_line_start(text, span.start) or close_keyword(str(tok))):
        return None  # after a complete `cite`: more likely a misspelled clause keyword
    between = {"(": "the arguments", "[": "the list items", "{": "the mix entries"}.get(
        _innermost_open(text, span.start) or "", "the cited methods")
    return Diagnostic("E006", f"a comma is missing before {_found(tok)}", span, label="add `,` before this",
                      hints=(f"separate {between} with commas",))


def _unknown_clause(tok: Token, expected: set[str], span: Span, text: str) -> Diagnostic | None:
    """E004: a word where a new clause could start, on a line of its own or close to a clause keyword."""
    word = str(tok)
    if not (_WORD.match(word) and expected & _CLAUSES and tok.type not in _CLAUSES):
        return None
    close = close_keyword(word)
    if not (_at_line_start(text, span.start) or close):
        return None
    if close:
        hints = (f"did you mean `{close}`?",)
    else:
        hints = ("each clause starts with one of " + ", ".join(f"`{k}`" for k in CLAUSE_KEYWORDS),)
    return Diagnostic("E004", f"`{word}` is not a clause keyword", span, label="unknown clause", hints=hints)


def _reserved_before(tok: Token, expected: set[str], span: Span, text: str) -> Diagnostic | None:
    """E009: `not` followed by something that cannot follow it: it was meant as a name."""
    before = re.search(r"(?<![A-Za-z0-9_])not\s*\Z", text[:span.start])
    if not before or "NAME" not in expected or tok.type in _EXPR_START \
            or tok.type not in _OPERATORS | {"EQUAL", "COMMA", "RPAR", "RSQB"}:
        return None
    at = before.start()
    return Diagnostic("E009", "`not` is a reserved word and cannot be used as a name", Span.at(start=at, end=at + 3),
                      label="reserved", hints=(_reserved_hint("not"),))


def _unexpected(tok: Token, expected: set[str], span: Span, text: str) -> Diagnostic:
    """E002, worded for the situation: what was found, what fits, and the clause's form."""
    clause = _clause_at(text, span.start)
    word = str(tok)
    hints: list[str] = []
    if _WORD.match(word):
        accepted_words = tuple(e.lower() for e in expected if e in _KEYWORDS)
        close = close_keyword(word, accepted_words) if accepted_words else None
        if close and close != word:
            hints.append(f"did you mean `{close}`?")
    if tok.type in ("PER", "AMONG"):
        hints.append(f"`{word}` follows the `)` of a statistic, e.g. `quantile(clip, 0.3) {word} "
                     + ("source`" if word == "per" else "(words(text) > 2)`"))
        if clause == "select":
            hints.append("a `select` already picks within each mix group")
    elif tok.type == "EQEQ" and "EQUAL" in expected:
        hints.append("`let` and keyword arguments take a single `=`")
    elif expected <= {"STRING"}:
        hints.append("names of policies and pools, and reasons, are quoted: `\"...\"`")
    elif tok.type == "GT" and text[span.start - 1:span.start] == "<":
        hints.append("write `!=` for 'not equal'")
    elif expected & _OPERATORS and expected & _CLAUSES and clause == "filter" and not hints:
        hints.append("join conditions with `and` / `or`; start each new clause on its own line")
    elif expected and expected <= _CLAUSES | {"$END"}:
        hints.append("each clause starts with one of " + ", ".join(f"`{k}`" for k in CLAUSE_KEYWORDS))
    hints.extend(_form_hint(clause))
    return Diagnostic("E002", f"unexpected {_found(tok)}", span,
                      label=f"expected {describe_expected(expected)}", hints=tuple(hints))


# --- reserved names in a tree that parsed ----------------------------------------


def _reserved_hint(word: str) -> str:
    meaning = "always negates what follows it" if word == "not" else f"is always the boolean value {word}"
    return f"`{word}` {meaning}; choose another name, e.g. `{word}_`"


def reserved_name(node: ast.Ident) -> Diagnostic:
    """E009 for a name spelled `true`, `false` or `not` (the parser's builder finds them as it builds).

    The contextual lexer reads them as names wherever a name fits and the
    keyword does not (``let true = 1``, ``x > not``), but such a name could
    never be referred to, so it is an error. Mix keys are group values, not
    names, and may be spelled so (``mix by flag { true: 0.2, false: 0.8 }``).
    """
    return Diagnostic("E009", f"`{node.name}` is a reserved word and cannot be used as a name", node.span,
                      label="reserved", hints=(_reserved_hint(node.name),))
