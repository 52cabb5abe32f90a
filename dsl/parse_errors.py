"""Lark's parse errors, reworded for people.

Grammar terminal names never reach the user: :data:`WORDS` names each
terminal in words, end of input reads "the policy ended early", and the
common mistakes get their own codes and fixes: a misspelled clause keyword,
``=`` for ``==``, a missing comma, an unbalanced bracket, an unterminated string.
"""

from __future__ import annotations

import difflib
import re

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from cbdsl.dsl.ast import Span
from cbdsl.dsl.diagnostics import Diagnostic, Source

CLAUSE_KEYWORDS = ("policy", "cite", "adapt", "pool", "let", "filter", "dedup", "mix", "budget", "select")

WORDS: dict[str, str] = {
    "NAME": "a name", "INT": "a number", "FLOAT": "a number", "PERCENT": "a percentage",
    "STRING": "a string", "TRUE": "`true`", "FALSE": "`false`",
    "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`", "EQEQ": "`==`", "NE": "`!=`", "LE": "`<=`",
    "GE": "`>=`", "LT": "`<`", "GT": "`>`", "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`",
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`", "RBRACE": "`}`",
    "$END": "the end of the policy",
    **{kw.upper(): f"`{kw}`" for kw in CLAUSE_KEYWORDS},
    **{kw.upper(): f"`{kw}`" for kw in ("by", "tokens", "of", "top", "bottom", "per", "among", "and", "or", "not", "in")},
}

_EXPR_START = {"NAME", "INT", "FLOAT", "PERCENT", "STRING", "TRUE", "FALSE", "LPAR", "LSQB", "MINUS", "NOT"}
_CLAUSE_TERMINALS = {kw.upper() for kw in CLAUSE_KEYWORDS}
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}


def describe_expected(expected: set[str]) -> str:
    """The expected terminals as a phrase: 'an expression', 'a clause', or a list of words."""
    expected = {e for e in expected if not e.startswith("__")}
    parts: list[str] = []
    if expected & _CLAUSE_TERMINALS and expected & _EXPR_START <= {"NAME"}:
        parts.append("a new clause (`" + "`, `".join(CLAUSE_KEYWORDS) + "`)")
        expected = expected - _CLAUSE_TERMINALS
        if "$END" in expected:
            expected.discard("$END")
            parts.append("the end of the policy")
    if len(expected & _EXPR_START) >= 4:
        parts.append("an expression")
        expected = expected - _EXPR_START
    words = sorted({WORDS.get(e, e.lower()) for e in expected})
    parts.extend(words)
    if not parts:
        return "something else"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the policy"
    return f"`{tok}`"


def bracket_problem(text: str) -> Diagnostic | None:
    """The first unbalanced bracket, skipping strings and comments (None if balanced)."""
    stack: list[tuple[str, int]] = []
    i = 0
    data = text
    while i < len(data):
        ch = data[i]
        if ch == "#":
            nl = data.find("\n", i)
            i = len(data) if nl < 0 else nl
            continue
        if ch in "\"'":
            m = re.compile(r"%s(\\.|[^%s\\\n])*%s" % (ch, ch, ch)).match(data, i)
            i = m.end() if m else i + 1
            continue
        if ch in _OPEN:
            stack.append((ch, i))
        elif ch in _CLOSE:
            if stack and stack[-1][0] == _CLOSE[ch]:
                stack.pop()
            else:
                opener = _CLOSE[ch]
                if stack:
                    want = _OPEN[stack[-1][0]]
                    return Diagnostic(
                        "E007", f"`{ch}` does not match the `{stack[-1][0]}` it closes",
                        _span(text, i, i + 1), label=f"expected `{want}`",
                        hints=(f"close the `{stack[-1][0]}` with `{want}` first, or remove this `{ch}`",))
                return Diagnostic("E007", f"`{ch}` closes nothing", _span(text, i, i + 1),
                                  label=f"no `{opener}` opened before it",
                                  hints=(f"remove this `{ch}`, or add the `{opener}` it should close",))
        i += 1
    if stack:
        ch, pos = stack[-1]
        return Diagnostic("E007", f"this `{ch}` is never closed", _span(text, pos, pos + 1),
                          label=f"needs a matching `{_OPEN[ch]}`",
                          hints=(f"add `{_OPEN[ch]}` where the {_kind(ch)} ends",))
    return None


def _kind(ch: str) -> str:
    return {"(": "call or group", "[": "list", "{": "mix block"}[ch]


def _span(text: str, start: int, end: int) -> Span:
    """Character offsets to a byte span."""
    b = lambda p: len(text[:p].encode("utf-8"))  # noqa: E731
    return Span(start=b(start), end=b(end))


def _line_start(text: str, pos: int) -> bool:
    return text[text.rfind("\n", 0, pos) + 1:pos].strip() == ""


def to_diagnostic(err: UnexpectedInput, text: str, source: Source) -> Diagnostic:
    """One Lark error as one diagnostic, recognising the common mistakes."""
    diag = _classify(err, text)
    if diag.span is not None:
        diag = Diagnostic(diag.code, diag.message, diag.span.model_copy(update={"source": source.name}),
                          diag.severity, diag.hints, diag.label)
    return diag


def _classify(err: UnexpectedInput, text: str) -> Diagnostic:
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream
        ch = text[pos]
        if ch in "\"'":
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            return Diagnostic("E008", "this string is never closed", _span(text, pos, end),
                              label=f"no closing {ch} on this line",
                              hints=(f"end the string with {ch} on the same line; write \\{ch} for a quote inside it",))
        if ch == "!":
            return Diagnostic("E001", "`!` alone is not an operator", _span(text, pos, pos + 1),
                              hints=("write `not x` to negate, or `!=` for 'not equal'",))
        shown = repr(ch)[1:-1] if not ch.isprintable() else ch
        return Diagnostic("E001", f"`{shown}` cannot appear here", _span(text, pos, pos + 1),
                          label="not part of the policy language",
                          hints=("remove it; comments start with `#`, strings go in double quotes",))

    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        brackets = bracket_problem(text)
        if brackets is not None:
            return brackets
        expected = set(err.expected)
        end = len(text.rstrip())
        return Diagnostic("E003", "the policy ended early", _span(text, max(end - 1, 0), end),
                          label=f"expected {describe_expected(expected)} after this",
                          hints=("finish the last clause",))

    assert isinstance(err, UnexpectedToken)
    tok: Token = err.token
    expected = set(err.accepts or err.expected)
    start = tok.start_pos
    end = tok.end_pos if tok.end_pos is not None else start + len(tok)
    span = _span(text, start, end)

    if tok.type == "EQUAL" and expected & {"EQEQ", "LT", "GT", "AND", "OR", "IN", "$END"} | _CLAUSE_TERMINALS:
        return Diagnostic("E005", "`=` is not a comparison", span, label="did you mean `==`?",
                          hints=("write `==` to compare; `=` only names a `let` or a keyword argument",))

    if tok.type in ("RPAR", "RSQB", "RBRACE"):
        brackets = bracket_problem(text)
        if brackets is not None:
            return brackets

    if tok.type in _EXPR_START and "COMMA" in expected and tok.type not in ("MINUS", "LPAR", "NOT") \
            and not (tok.type == "NAME" and _line_start(text, start) and _close_keyword(str(tok))):
        return Diagnostic("E006", f"a comma is missing before {_token_text(tok)}", span,
                          label="add `,` before this",
                          hints=("separate arguments, list items, cited methods and mix entries with commas",))

    if tok.type in ("NAME",) and _line_start(text, start) and expected & _CLAUSE_TERMINALS:
        word = str(tok)
        close = _close_keyword(word)
        hints = (f"did you mean `{close}`?",) if close else (
            "a clause starts with one of: " + ", ".join(f"`{k}`" for k in CLAUSE_KEYWORDS),)
        return Diagnostic("E004", f"`{word}` is not a clause keyword", span,
                          label="unknown clause", hints=hints)

    brackets = bracket_problem(text)
    if brackets is not None and tok.type in {"LBRACE", "LSQB", "LPAR"} | _CLAUSE_TERMINALS:
        return brackets

    if tok.type in _CLAUSE_TERMINALS | {"BY", "TOKENS", "OF", "TOP", "BOTTOM", "PER", "AMONG", "AND", "OR",
                                        "NOT", "IN", "TRUE", "FALSE"} and "NAME" in expected:
        return Diagnostic("E009", f"`{tok}` is a reserved word and cannot be used as a name here", span,
                          label=f"expected {describe_expected(expected)}",
                          hints=("rename the `let` or column, e.g. `" + str(tok) + "_`",))

    return Diagnostic("E002", f"unexpected {_token_text(tok)}", span,
                      label=f"expected {describe_expected(expected)}",
                      hints=_context_hint(tok, expected))


def _close_keyword(word: str) -> str | None:
    close = difflib.get_close_matches(word.lower(), CLAUSE_KEYWORDS, n=1, cutoff=0.6)
    return close[0] if close else None


def _context_hint(tok: Token, expected: set[str]) -> tuple[str, ...]:
    if expected <= {"STRING"}:
        return ("names of policies, pools and reasons are quoted: `\"...\"`",)
    if "BY" in expected and len(expected) == 1:
        return ("a mix reads `mix by COLUMN { key: weight, *: weight }`",)
    if "LBRACE" in expected:
        return ("the mix weights go in braces: `{ coco: 0.5, *: 0.5 }`",)
    if "LPAR" in expected and "NAME" not in expected:
        return ("this needs its arguments in parentheses",)
    return ()
