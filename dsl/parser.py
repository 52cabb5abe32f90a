"""Text to AST: the parser front end.

Lark parses with the grammar in ``grammar/curation.lark`` (LALR, strict,
cached, positions on); :class:`_Build` then maps each rule to one AST node,
turning Lark's character positions into byte spans. Comments are collected by
the lexer and attached to clauses afterwards (:func:`_attach_comments`), so the
formatter can keep them with their clause.

When the whole text does not parse, each clause-sized chunk is parsed on its
own so that one run reports every broken clause, not just the first.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError

from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, PolicyError, Source

CLAUSE_KEYWORDS = ("policy", "cite", "adapt", "pool", "let", "filter", "dedup", "mix", "budget", "select")
_CHUNK_START = re.compile(r"^[ \t]*(?:" + "|".join(CLAUSE_KEYWORDS) + r")\b", re.MULTILINE)


class _CommentSink:
    """Collects COMMENT tokens during one parse (Lark calls back per token)."""

    tokens: list[Token] = []

    @classmethod
    def collect(cls, token: Token) -> Token:
        cls.tokens.append(token)
        return token


@functools.cache
def grammar_text() -> str:
    return (resources.files("cbdsl") / "grammar" / "curation.lark").read_text()


@functools.cache
def lark_parser() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        strict=True,
        cache=True,
        propagate_positions=True,
        maybe_placeholders=True,
        lexer_callbacks={"COMMENT": _CommentSink.collect},
    )


class _Offsets:
    """Character offset to byte offset, for spans (identity for ASCII text)."""

    def __init__(self, text: str):
        self.ascii = text.isascii()
        if not self.ascii:
            self.prefix = [0]
            for ch in text:
                self.prefix.append(self.prefix[-1] + len(ch.encode("utf-8")))

    def __call__(self, pos: int) -> int:
        return pos if self.ascii else self.prefix[pos]


def _unescape(body: str) -> str:
    r"""String literal body to value: only ``\"``, ``\'`` and ``\\`` are escapes, so regexes read naturally."""
    return re.sub(r"\\([\\\"'])", r"\1", body)


def _number(text: str) -> int | float:
    text = text.replace("_", "")
    if re.fullmatch(r"[0-9]+", text):
        return int(text)
    return float(text)


@v_args(meta=True)
class _Build(Transformer):
    """Parse tree to AST nodes: one method per grammar rule."""

    def __init__(self, offsets: _Offsets, source: str):
        super().__init__()
        self.offsets = offsets
        self.source = source

    def _span(self, meta) -> ast.Span:
        return ast.Span.model_construct(start=self.offsets(meta.start_pos), end=self.offsets(meta.end_pos), source=self.source)

    def _tspan(self, tok: Token) -> ast.Span:
        return ast.Span.model_construct(start=self.offsets(tok.start_pos), end=self.offsets(tok.end_pos), source=self.source)

    @staticmethod
    def _nodes(children) -> list:
        return [c for c in children if isinstance(c, ast.Node)]

    # -- leaves ----------------------------------------------------------------
    def ident(self, meta, ch):
        return ast.Ident.model_construct(name=str(ch[0]), span=self._span(meta))

    def number(self, meta, ch):
        return ast.Number.model_construct(value=_number(str(ch[0])), span=self._span(meta))

    def percent(self, meta, ch):
        return ast.Percent.model_construct(value=_number(str(ch[0])[:-1]), span=self._span(meta))

    def string(self, meta, ch):
        return ast.String.model_construct(value=_unescape(str(ch[0])[1:-1]), span=self._span(meta))

    def boolean_literal(self, meta, ch):
        return ast.Bool.model_construct(value=ch[0].type == "TRUE", span=self._span(meta))

    def star(self, meta, ch):
        return ast.Star.model_construct(span=self._span(meta))

    # -- expressions -------------------------------------------------------------
    def name(self, meta, ch):
        return ast.Name.model_construct(name=ch[0].name, span=ch[0].span)

    def group(self, meta, ch):
        return ch[1]  # parentheses only group; the formatter re-adds what precedence needs

    def list(self, meta, ch):
        return ast.ListExpr.model_construct(items=tuple(self._nodes(ch)), span=self._span(meta))

    def unary(self, meta, ch):
        return ast.Unary.model_construct(op=str(ch[0]), operand=ch[1], span=self._span(meta))

    def binary(self, meta, ch):
        return ast.Binary.model_construct(op=str(ch[1]), left=ch[0], right=ch[2], span=self._span(meta))

    boolean = binary

    def comp_op(self, meta, ch):
        return " ".join(str(t) for t in ch)

    def compare(self, meta, ch):
        return ast.Compare.model_construct(operands=tuple(ch[0::2]), ops=tuple(ch[1::2]), span=self._span(meta))

    def kwarg(self, meta, ch):
        return ast.Keyword.model_construct(name=ch[0], value=ch[2], span=self._span(meta))

    def args(self, meta, ch):
        return self._nodes(ch)

    def per(self, meta, ch):
        return ch[1]

    def among(self, meta, ch):
        return ch[1]

    def call(self, meta, ch):
        func, _lpar, args, _rpar, per, among = ch
        args = args or []
        return ast.Call.model_construct(
            func=func,
            args=tuple(a for a in args if not isinstance(a, ast.Keyword)),
            kwargs=tuple(a for a in args if isinstance(a, ast.Keyword)),
            per=per,
            among=among,
            span=self._span(meta),
        )

    # -- clauses -------------------------------------------------------------------
    def start(self, meta, ch):
        return list(ch)

    def policy_clause(self, meta, ch):
        return ast.PolicyClause.model_construct(name=ch[1], span=self._span(meta))

    def cite_clause(self, meta, ch):
        return ast.Cite.model_construct(methods=tuple(self._nodes(ch)), span=self._span(meta))

    def adapt_clause(self, meta, ch):
        return ast.Adapt.model_construct(method=ch[1], reason=ch[2], span=self._span(meta))

    def pool_clause(self, meta, ch):
        return ast.PoolClause.model_construct(name=ch[1], span=self._span(meta))

    def let_clause(self, meta, ch):
        return ast.Let.model_construct(name=ch[1], value=ch[3], span=self._span(meta))

    def filter_clause(self, meta, ch):
        return ast.Filter.model_construct(condition=ch[1], span=self._span(meta))

    def dedup_clause(self, meta, ch):
        return ast.Dedup.model_construct(method=ch[1], span=self._span(meta))

    def mix_entry(self, meta, ch):
        return ast.MixEntry.model_construct(group=ch[0], weight=ch[2], span=self._span(meta))

    def mix_clause(self, meta, ch):
        nodes = self._nodes(ch)
        return ast.Mix.model_construct(by=nodes[0], entries=tuple(nodes[1:]), span=self._span(meta))

    def budget_rows(self, meta, ch):
        return ast.Budget.model_construct(unit="rows", amount=ch[1], span=self._span(meta))

    def budget_percent(self, meta, ch):
        return ast.Budget.model_construct(unit="percent", amount=ch[1], span=self._span(meta))

    def budget_tokens(self, meta, ch):
        return ast.Budget.model_construct(unit="tokens", amount=ch[1], of=ch[4], span=self._span(meta))

    def _select_order(self, meta, ch):
        strategy = ast.Ident.model_construct(name=str(ch[1]), span=self._tspan(ch[1]))
        return ast.Select.model_construct(strategy=strategy, args=(ch[2],), span=self._span(meta))

    select_top = _select_order
    select_bottom = _select_order

    def select_call(self, meta, ch):
        call: ast.Call = ch[1]
        return ast.Select.model_construct(strategy=call.func, args=call.args, kwargs=call.kwargs, span=self._span(meta))


def _attach_comments(clauses: list[ast.Clause], comments: list[Token], text: str, offsets: _Offsets) -> ast.Policy:
    """Give each comment to its clause: above it, inside it, or trailing on its last line."""
    line_of = lambda pos: text.count("\n", 0, pos)  # noqa: E731
    # Clause spans are bytes; compare in characters via the tokens' own positions.
    char_spans = []
    for clause in clauses:
        start = _char_pos(clause.span.start, offsets, text)
        end = _char_pos(clause.span.end, offsets, text)
        char_spans.append((start, end))
    leading: list[list[str]] = [[] for _ in clauses]
    trailing: list[str | None] = [None for _ in clauses]
    header: list[str] = []
    footer: list[str] = []
    for tok in comments:
        body = str(tok).rstrip()
        pos = tok.start_pos
        owner = None
        for i, (start, end) in enumerate(char_spans):
            if start <= pos < end:
                owner = ("lead", i)
                break
            if pos >= end and line_of(pos) == line_of(max(end - 1, start)) and trailing[i] is None:
                owner = ("trail", i)
                break
        if owner is None:
            following = [i for i, (start, _end) in enumerate(char_spans) if start > pos]
            owner = ("lead", following[0]) if following else ("foot", None)
        how, i = owner
        if how == "trail":
            trailing[i] = body
        elif how == "foot":
            footer.append(body)
        else:
            leading[i].append(body)
    # A comment block above the first clause, set off by a blank line, is the file header.
    if clauses and leading[0]:
        first_start = char_spans[0][0]
        lines_between = text[:first_start].rstrip(" \t").split("\n")
        block = []
        for line in reversed(lines_between[:-1]):
            if line.strip().startswith("#"):
                block.append(line)
            else:
                break
        attached = len(block)
        header = leading[0][: len(leading[0]) - attached]
        leading[0] = leading[0][len(leading[0]) - attached:]
    elif not clauses:
        header, footer = footer, []
    built = tuple(
        c.model_copy(update={"comments": tuple(leading[i]), "trailing": trailing[i]}) for i, c in enumerate(clauses)
    )
    return ast.Policy.model_construct(
        clauses=built,
        comments=tuple(header),
        trailing=tuple(footer),
        span=ast.Span.model_construct(start=0, end=offsets(len(text)), source=clauses[0].span.source if clauses else "<policy>"),
    )


def _char_pos(byte_pos: int, offsets: _Offsets, text: str) -> int:
    if offsets.ascii:
        return byte_pos
    import bisect

    return bisect.bisect_left(offsets.prefix, byte_pos)


def _parse_once(text: str, name: str) -> ast.Policy:
    _CommentSink.tokens = []
    tree = lark_parser().parse(text)
    comments = list(_CommentSink.tokens)
    offsets = _Offsets(text)
    try:
        clauses = _Build(offsets, name).transform(tree)
    except VisitError as err:  # a bug in the builder, not the user's input
        raise err.orig_exc from err
    policy = _attach_comments(clauses, comments, text, offsets)
    return policy.model_copy(update={"span": policy.span.model_copy(update={"source": name})})


def _chunks(text: str) -> list[tuple[int, int]]:
    """Clause-sized pieces: each starts at a line that starts with a clause keyword."""
    starts = [m.start() for m in _CHUNK_START.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    ends = starts[1:] + [len(text)]
    return list(zip(starts, ends))


def parse_diagnostics(text: str, name: str = "<policy>") -> tuple[ast.Policy | None, list[Diagnostic]]:
    """Parse, returning the AST or every syntax error that chunked re-parsing finds."""
    from cbdsl.dsl.parse_errors import to_diagnostic

    source = Source(text, name)
    try:
        return _parse_once(text, name), []
    except UnexpectedInput as first:
        first_diag = to_diagnostic(first, text, source)
    diags: list[Diagnostic] = []
    for start, end in _chunks(text):
        # Blank out everything but the chunk (newlines kept) so positions stay exact.
        masked = re.sub(r"[^\n]", " ", text[:start]) + text[start:end] + re.sub(r"[^\n]", " ", text[end:])
        try:
            _parse_once(masked, name)
        except UnexpectedInput as err:
            diags.append(to_diagnostic(err, masked, source))
    if not diags or all(d != first_diag for d in diags) and first_diag.span is not None and not any(
        d.span is not None and d.span.start == first_diag.span.start for d in diags
    ):
        diags.insert(0, first_diag)
    unique: dict[tuple, Diagnostic] = {}
    for d in diags:
        unique.setdefault((d.code, d.span.start if d.span else -1), d)
    return None, sorted(unique.values(), key=lambda d: d.span.start if d.span else -1)


def parse(text: str, name: str = "<policy>") -> ast.Policy:
    """Parse policy text into a :class:`~cbdsl.dsl.ast.Policy`; raise :class:`PolicyError` on syntax errors."""
    policy, diags = parse_diagnostics(text, name)
    if policy is None:
        raise PolicyError(diags, Source(text, name))
    return policy
