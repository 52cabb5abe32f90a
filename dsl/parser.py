"""Text to AST: the parser front end.

Lark parses with the grammar in ``grammar/curation.lark`` (LALR, strict,
positions on), through the stand-alone tables generated from it
(:mod:`cbdsl.dsl.lark_tables`, rebuilt by :mod:`cbdsl.dsl.generate_parser`),
which load in a third of the time of Lark itself; :class:`_Build` then maps each rule to one AST node,
turning Lark's character positions into byte spans. Comments are collected by
the lexer and attached to clauses afterwards (:func:`_attach_comments`), so the
formatter can keep them with their clause.

When the whole text does not parse, each clause-sized chunk is parsed on its
own (:func:`parse_diagnostics`) so that one run reports every broken clause,
not just the first; :mod:`cbdsl.dsl.parse_errors` words each error. A tree
that parses is still refused for three things the grammar cannot say: a name
spelled ``true``/``false``/``not`` (E009), nesting deeper than
:data:`MAX_DEPTH` (E010) and a number without a finite value (E011).
"""

from __future__ import annotations

import bisect
import functools
import re

from cbdsl.dsl.lark_tables import Lark, Lark_StandAlone, Token, Transformer, Tree, UnexpectedInput, VisitError, v_args

from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, PolicyError, Source

CLAUSE_KEYWORDS = ("policy", "cite", "adapt", "pool", "let", "filter", "dedup", "mix", "budget", "select")

#: Deepest expression nesting accepted, counted as JSON nesting of the AST
#: (a list or a call counts two levels: the node and its array). Deeper input
#: gets E010 instead of a RecursionError in the builder, the formatter or a
#: later stage, or a JSON that pydantic will not read back (its limit is 200).
MAX_DEPTH = 150


class _CommentSink:
    """Collects COMMENT tokens during one parse (Lark calls back per token)."""

    tokens: list[Token] = []

    @classmethod
    def collect(cls, token: Token) -> Token:
        cls.tokens.append(token)
        return token


@functools.cache
def lark_parser() -> Lark:
    return Lark_StandAlone(lexer_callbacks={"COMMENT": _CommentSink.collect})


class _Offsets:
    """Character offsets of one text to byte offsets, for spans (identity for ASCII text).

    ``base`` is where the parsed piece starts in the whole text: a clause-sized
    chunk is parsed on its own, and its spans must still point into the file.
    """

    def __init__(self, text: str, base: int = 0):
        self.base = base
        self.ascii = text.isascii()
        if not self.ascii:
            self.prefix = [0]
            for ch in text:
                self.prefix.append(self.prefix[-1] + len(ch.encode("utf-8")))

    def __call__(self, pos: int) -> int:
        pos += self.base
        return pos if self.ascii else self.prefix[pos]

    def char(self, byte_pos: int) -> int:
        """Byte offset back to a character offset into the whole text."""
        return byte_pos if self.ascii else bisect.bisect_left(self.prefix, byte_pos)


def _unescape(body: str) -> str:
    r"""String literal body to value: only ``\"``, ``\'`` and ``\\`` are escapes, so regexes read naturally."""
    return re.sub(r"\\([\\\"'])", r"\1", body)


#: Longest integer literal accepted: Python refuses to convert longer digit
#: strings (``sys.get_int_max_str_digits``), and no count or seed needs more.
MAX_INT_DIGITS = 300


class _OutOfRange(Exception):
    """A number literal that has no finite value (E011); raised inside the builder."""

    def __init__(self, meta):
        super().__init__()
        self.meta = meta


def _number(text: str, meta=None) -> int | float:
    text = text.replace("_", "")
    if re.fullmatch(r"[0-9]+", text):
        digits = text.lstrip("0") or "0"
        if len(digits) > MAX_INT_DIGITS:
            raise _OutOfRange(meta)
        return int(digits)
    value = float(text)
    if value == float("inf"):
        raise _OutOfRange(meta)
    return value


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
        return ast.Number.model_construct(value=_number(str(ch[0]), meta), span=self._span(meta))

    def percent(self, meta, ch):
        return ast.Percent.model_construct(value=_number(str(ch[0])[:-1], meta), span=self._span(meta))

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
        _select, strategy, _lpar, args, _rpar = ch
        args = args or []
        return ast.Select.model_construct(
            strategy=strategy,
            args=tuple(a for a in args if not isinstance(a, ast.Keyword)),
            kwargs=tuple(a for a in args if isinstance(a, ast.Keyword)),
            span=self._span(meta),
        )


def _attach_comments(clauses: list[ast.Clause], comments: list[Token], text: str, offsets: _Offsets) -> ast.Policy:
    """Give each comment to a clause: inside or above it (``comments``) or after it on its last line (``trailing``).

    Comments above the first clause that are set off from it by a blank line
    are the file header; comments after the last clause are the footer.
    """
    base = offsets.base
    line_of = lambda pos: text.count("\n", 0, pos)  # noqa: E731
    spans = [(offsets.char(c.span.start), offsets.char(c.span.end)) for c in clauses]
    leading: list[list[str]] = [[] for _ in clauses]
    trailing: list[str | None] = [None for _ in clauses]
    header: list[str] = []
    footer: list[str] = []
    for tok in comments:
        body = str(tok).rstrip()
        pos = tok.start_pos + base
        inside = next((i for i, (start, end) in enumerate(spans) if start <= pos < end), None)
        before = [i for i, (_start, end) in enumerate(spans) if end <= pos]
        after = [i for i, (start, _end) in enumerate(spans) if start > pos]
        if inside is not None:
            leading[inside].append(body)
            continue
        last = max(before, key=lambda i: spans[i][1]) if before else None
        if last is not None and trailing[last] is None and line_of(pos) == line_of(max(spans[last][1] - 1, 0)):
            trailing[last] = body
        elif after:
            leading[min(after, key=lambda i: spans[i][0])].append(body)
        else:
            footer.append(body)
    if clauses:
        # Of the comments above the first clause, only the block directly above
        # it stays with it; those set off by a blank line are the header.
        first = min(range(len(clauses)), key=lambda i: spans[i][0])
        above = sum(1 for tok in comments if tok.start_pos + base < spans[first][0])
        attached = 0
        for line in reversed(text[: spans[first][0]].split("\n")[:-1]):
            if not line.strip().startswith("#"):
                break
            attached += 1
        cut = above - min(attached, above)
        header, leading[first] = leading[first][:cut], leading[first][cut:]
    else:
        header, footer = footer, []
    built = tuple(
        c.model_copy(update={"comments": tuple(leading[i]), "trailing": trailing[i]}) for i, c in enumerate(clauses)
    )
    return ast.Policy.model_construct(clauses=built, comments=tuple(header), trailing=tuple(footer))


def _depth_error(tree: Tree, offsets: _Offsets, name: str) -> Diagnostic | None:
    """E010 on the clause whose parse tree nests deeper than :data:`MAX_DEPTH` (checked without recursion)."""
    for clause in tree.children:
        stack = [(clause, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                meta = clause.meta
                span = ast.Span.at(start=offsets(meta.start_pos), end=offsets(meta.end_pos), source=name)
                return Diagnostic("E010", "this expression is nested too deeply", span,
                                  label="too many levels of operators, calls or brackets",
                                  hints=("split it into `let` names and combine those",))
            step = depth + _EXPRESSION_WEIGHT.get(node.data, 0)
            stack.extend((child, step) for child in node.children if isinstance(child, Tree))
    return None


#: Parse-tree rules that become expression nodes, with the JSON levels each adds.
_EXPRESSION_WEIGHT = {"binary": 1, "boolean": 1, "unary": 1, "kwarg": 1, "compare": 2, "call": 2, "list": 2}


class _Failed(Exception):
    """A parse that ended in diagnostics (internal: carries them to :func:`parse_diagnostics`)."""

    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__()
        self.diagnostics = diagnostics


def _parse_piece(text: str, name: str, start: int = 0, end: int | None = None, at_end: bool = True) -> ast.Policy:
    """Parse ``text[start:end]`` with spans into the whole text; raise :class:`_Failed` with its diagnostics."""
    from cbdsl.dsl.parse_errors import reserved_name_diagnostics, to_diagnostic

    end = len(text) if end is None else end
    piece = text[start:end]
    _CommentSink.tokens = []
    try:
        tree = lark_parser().parse(piece)
    except UnexpectedInput as err:
        raise _Failed([to_diagnostic(err, piece, text, name, base=start, at_end=at_end)]) from None
    comments = list(_CommentSink.tokens)
    offsets = _Offsets(text, base=start)
    deep = _depth_error(tree, offsets, name)
    if deep is not None:
        raise _Failed([deep])
    try:
        clauses = _Build(offsets, name).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, _OutOfRange):
            meta = err.orig_exc.meta
            span = ast.Span.at(start=offsets(meta.start_pos), end=offsets(meta.end_pos), source=name)
            raise _Failed([Diagnostic("E011", "this number is too large", span, label="no finite value",
                                      hints=("a float must stay below about 1.8e308 and an integer within "
                                             f"{MAX_INT_DIGITS} digits",))]) from None
        raise err.orig_exc from err  # a bug in the builder, not the user's input
    policy = _attach_comments(clauses, comments, text, offsets)
    policy = policy.model_copy(update={"span": ast.Span.at(start=offsets(0), end=offsets(len(piece)), source=name)})
    reserved = reserved_name_diagnostics(policy)
    if reserved:
        raise _Failed(reserved)
    return policy


# A clause-sized chunk starts at a line whose first word is a clause keyword,
# or a near miss of one (`fliter`), followed by what a clause could hold
# (not `:`, `=` or `,`: those make it a mix key or a keyword argument).
_LINE_WORD = re.compile(r"^[ \t]*([A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_])(?=[ \t]*(?:[^:=,\s]|$))", re.MULTILINE)


def _starts_clause(word: str) -> bool:
    from cbdsl.dsl.parse_errors import close_keyword

    return word in CLAUSE_KEYWORDS or (len(word) > 2 and close_keyword(word) is not None)


def _chunks(text: str) -> list[tuple[int, int]]:
    """Clause-sized pieces ``(start, end)`` of the text, in order, covering all of it."""
    starts = [m.start() for m in _LINE_WORD.finditer(text) if _starts_clause(m.group(1))]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return list(zip(starts, starts[1:] + [len(text)]))


def parse_diagnostics(text: str, name: str = "<policy>") -> tuple[ast.Policy | None, list[Diagnostic]]:
    """Parse, returning ``(policy, [])`` or ``(None, diagnostics)`` with every syntax error found.

    On a syntax error each clause-sized chunk is parsed on its own, so three
    broken clauses give three diagnostics. A chunk that fails only because a
    line inside a clause looked like the start of a new one (a mix key named
    `pool`) is joined with the chunks after it until it parses.
    """
    try:
        return _parse_piece(text, name), []
    except _Failed as failed:
        whole = failed.diagnostics
    pieces = _chunks(text)
    diags: list[Diagnostic] = []
    i = 0
    while i < len(pieces):
        start, end = pieces[i]
        try:
            _parse_piece(text, name, start, end, at_end=i == len(pieces) - 1)
            i += 1
            continue
        except _Failed as failed:
            found = failed.diagnostics
        for j in range(i + 1, min(i + 4, len(pieces))):
            try:
                _parse_piece(text, name, start, pieces[j][1], at_end=j == len(pieces) - 1)
            except _Failed:
                continue
            i, found = j, []  # pieces i..j are one clause after all, and it parses
            break
        diags.extend(found)
        i += 1
    if not diags:  # the pieces parse but the whole does not: trust the whole-text error
        diags = whole
    unique: dict[tuple, Diagnostic] = {}
    for d in diags:
        unique.setdefault((d.code, d.span.start if d.span else -1), d)
    return None, sorted(unique.values(), key=lambda d: (d.span.start if d.span else -1, d.code))


def parse(text: str, name: str = "<policy>") -> ast.Policy:
    """Parse policy text into a :class:`~cbdsl.dsl.ast.Policy`; raise :class:`PolicyError` on syntax errors."""
    policy, diags = parse_diagnostics(text, name)
    if policy is None:
        raise PolicyError(diags, Source(text, name))
    return policy
