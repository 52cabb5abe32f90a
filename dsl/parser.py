"""Text to AST: the parser front end.

Lark parses with the grammar in ``grammar/curation.lark`` (LALR, strict),
through the stand-alone tables generated from it
(:mod:`cbdsl.dsl.lark_tables`, rebuilt by :mod:`cbdsl.dsl.generate_parser`),
which load in a third of the time of Lark itself. Its parse-tree nodes are
:class:`_Tree`, which record their character span and nesting depth as the
parser reduces them; :func:`_build` then maps each rule to one AST node
without recursion, turning character positions into byte spans. Comments are
collected by the lexer and attached to clauses afterwards
(:func:`_attach_comments`), so the formatter can keep them with their clause.

Line ends: ``\\r\\n``, a lone ``\\r`` and ``\\n`` each end a line. The parser
reads the text with each of them as ``\\n`` (:class:`_Offsets`), so comments,
strings and the line-start heuristics see one kind, and spans still point at
the bytes of the text as given.

When the whole text does not parse, each clause-sized chunk is parsed on its
own (:func:`_recover`) so that one run reports every broken clause, not just
the first; :mod:`cbdsl.dsl.parse_errors` words each error. A tree that parses
is still refused for three things the grammar cannot say: a name spelled
``true``/``false``/``not`` (E009), nesting deeper than :data:`MAX_DEPTH`
(E010) and a number without a finite value (E011); each clause reports its own.

Every step is linear in the text and none recurses per level of nesting: a
policy may be hundreds of kilobytes or nested thousands of levels deep (a
generated or mangled one), and the caller may already be deep in its stack.
"""

from __future__ import annotations

import bisect
import copy
import functools
import gc
import re
from itertools import accumulate

from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, PolicyError, Source
from cbdsl.dsl.lark_tables import (
    InteractiveParser, Lark, Lark_StandAlone, Token, Tree, UnexpectedEOF, UnexpectedInput, UnexpectedToken,
)
from cbdsl.dsl.parse_errors import close_keyword, reserved_name, to_diagnostic


CLAUSE_KEYWORDS = ("policy", "cite", "adapt", "pool", "let", "filter", "dedup", "mix", "budget", "select")

#: Words that can never be a name: wherever a name fits, they fit as themselves (E009).
RESERVED_NAMES = ("true", "false", "not")

#: Deepest expression nesting accepted. Every operator, `not`, `-`, pair of
#: parentheses, keyword argument, comparison, call and list is a level (a call,
#: a comparison and a list count two: in the AST's JSON each is an object
#: holding an array). Deeper input gets E010, so no later stage sees a deeper
#: tree: the AST's JSON stays well within pydantic's nesting limit (200, the
#: policy and its clause included), and a stage that recurses per level stays
#: far from Python's recursion limit whoever calls it (the front end itself
#: never recurses; tests/test_robustness.py runs parse, format, equality, JSON
#: and the whole check of the deepest accepted policies with 400 frames to spare).
MAX_DEPTH = 100

#: Parse-tree rules that nest expressions, with the levels each adds.
_EXPRESSION_WEIGHT = {"binary": 1, "boolean": 1, "unary": 1, "group": 1, "kwarg": 1, "compare": 2, "call": 2,
                      "list": 2}


class _Tree(Tree):
    """A parse-tree node that knows its character span and nesting depth from the moment the parser builds it.

    Both come from its children in one pass (Lark's own position propagation,
    turned off, took half of the parse time). A node nested deeper than
    :data:`MAX_DEPTH` drops its children: its clause gets E010 and is never
    built, and no tree deeper than the limit is ever held.
    """

    def __init__(self, data, children, meta=None):
        self.data = data
        self.children = children
        self._meta = meta
        if data.startswith("_"):
            # `x*` inside a rule: Lark re-creates it with one more item each time, so read its ends only; it is
            # inlined into the rule that holds it, which counts the depth of every item once.
            first, last = children[0], children[-1]
            self.start = first.start if first.__class__ is _Tree else first.start_pos
            self.end, self.last = (last.end, last.last) if last.__class__ is _Tree else (last.end_pos, last)
            self.depth = 0
            return
        start = end = last = None
        depth = 0
        for child in children:
            if child is None:
                continue
            if child.__class__ is _Tree:
                if child.start is None:
                    continue
                if child.depth > depth:
                    depth = child.depth
                if start is None:
                    start = child.start
                end, last = child.end, child.last
            else:
                if start is None:
                    start = child.start_pos
                end, last = child.end_pos, child
        self.start, self.end, self.last = start, end, last  # `last`: the last token, for an error at the end
        weight = _EXPRESSION_WEIGHT.get(data, 0)
        self.depth = depth + weight
        if weight and self.depth > MAX_DEPTH:
            self.children = []


class _CommentSink:
    """Collects COMMENT tokens during one parse (Lark calls back per token)."""

    tokens: list[Token] = []

    @classmethod
    def collect(cls, token: Token) -> Token:
        cls.tokens.append(token)
        return token


@functools.cache
def lark_parser() -> Lark:
    return Lark_StandAlone(propagate_positions=False, tree_class=_Tree,
                          lexer_callbacks={"COMMENT": _CommentSink.collect})


def _lark_parse(piece: str) -> tuple[_Tree, list[Token]]:
    """The parse tree of ``piece`` and its comments; raises Lark's ``UnexpectedInput``."""
    _CommentSink.tokens = []
    tree = lark_parser().parse(piece)
    return tree, _CommentSink.tokens


class _Offsets:
    """Character positions of the text the parser reads to byte offsets of the text as given.

    ``text`` is what the parser reads: every ``\\r\\n`` and lone ``\\r`` as
    ``\\n``. A lone ``\\r`` keeps its place; each ``\\r\\n`` is one character
    shorter there, so positions after it shift back by one per earlier
    ``\\r\\n``. ASCII text without ``\\r\\n`` maps to itself.
    """

    def __init__(self, original: str):
        self.text = original.replace("\r\n", "\n").replace("\r", "\n") if "\r" in original else original
        # where each `\r\n` stands in `text` (its `\n`): the k-th is k characters before its place in `original`
        self._crlf = [m.start() - k for k, m in enumerate(re.finditer("\r\n", original))] if "\r\n" in original else []
        self._bytes = None if original.isascii() else list(
            accumulate((len(c.encode("utf-8", "surrogatepass")) for c in original), initial=0))

    def __call__(self, pos: int) -> int:
        if self._crlf:
            pos += bisect.bisect_left(self._crlf, pos)
        return pos if self._bytes is None else self._bytes[pos]

    def span(self, start: int, end: int, source: str) -> ast.Span:
        return ast.Span.at(start=self(start), end=self(end), source=source)


def _unescape(body: str) -> str:
    r"""String literal body to value: only ``\"``, ``\'`` and ``\\`` are escapes, so regexes read naturally."""
    return re.sub(r"\\([\\\"'])", r"\1", body)


#: Longest integer literal accepted: Python refuses to convert longer digit
#: strings (``sys.get_int_max_str_digits``), and no count or seed needs more.
MAX_INT_DIGITS = 300


class _OutOfRange(Exception):
    """A number literal that has no finite value (E011)."""


def _number(text: str) -> int | float:
    text = text.replace("_", "")
    if re.fullmatch(r"[0-9]+", text):
        digits = text.lstrip("0") or "0"
        if len(digits) > MAX_INT_DIGITS:
            raise _OutOfRange
        return int(digits)
    value = float(text)
    if value == float("inf"):
        raise _OutOfRange
    return value


class _Builder:
    """Parse-tree nodes to AST nodes: one method per grammar rule, given the node and its built children.

    ``base`` is where the parsed piece starts in the text: a clause-sized
    chunk is parsed on its own, and its spans must still point into the file.
    Numbers without a finite value become E011 in ``problems``.
    """

    def __init__(self, offsets: _Offsets, source: str, base: int = 0):
        self.offsets = offsets
        self.source = source
        self.base = base
        self.problems: list[Diagnostic] = []
        self.reserved: list[ast.Ident] = []  # names spelled `true`, `false` or `not` (E009), mix keys excepted

    def _span(self, tree: _Tree) -> ast.Span:
        return self.offsets.span(self.base + tree.start, self.base + tree.end, self.source)

    def _tspan(self, tok: Token) -> ast.Span:
        return self.offsets.span(self.base + tok.start_pos, self.base + tok.end_pos, self.source)

    def _value(self, tree: _Tree, text: str) -> int | float:
        try:
            return _number(text)
        except _OutOfRange:
            self.problems.append(Diagnostic(
                "E011", "this number is too large", self._span(tree), label="no finite value",
                hints=(f"a float must stay below about 1.8e308 and an integer within {MAX_INT_DIGITS} digits",)))
            return 0

    @staticmethod
    def _nodes(children) -> list:
        return [c for c in children if isinstance(c, ast.Node)]

    # -- leaves ----------------------------------------------------------------
    def ident(self, tree, ch):
        node = ast.Ident.trusted(name=str(ch[0]), span=self._span(tree))
        if node.name in RESERVED_NAMES:
            self.reserved.append(node)
        return node

    def number(self, tree, ch):
        return ast.Number.trusted(value=self._value(tree, str(ch[0])), span=self._span(tree))

    def percent(self, tree, ch):
        return ast.Percent.trusted(value=self._value(tree, str(ch[0])[:-1]), span=self._span(tree))

    def string(self, tree, ch):
        return ast.String.trusted(value=_unescape(str(ch[0])[1:-1]), span=self._span(tree))

    def boolean_literal(self, tree, ch):
        return ast.Bool.trusted(value=ch[0].type == "TRUE", span=self._span(tree))

    def star(self, tree, ch):
        return ast.Star.trusted(span=self._span(tree))

    # -- expressions -------------------------------------------------------------
    def name(self, tree, ch):
        return ast.Name.trusted(name=ch[0].name, span=ch[0].span)

    def group(self, tree, ch):
        return ch[1]  # parentheses only group; the formatter re-adds what precedence needs

    def list(self, tree, ch):
        return ast.ListExpr.trusted(items=tuple(self._nodes(ch)), span=self._span(tree))

    def unary(self, tree, ch):
        return ast.Unary.trusted(op=str(ch[0]), operand=ch[1], span=self._span(tree))

    def binary(self, tree, ch):
        return ast.Binary.trusted(op=str(ch[1]), left=ch[0], right=ch[2], span=self._span(tree))

    boolean = binary

    def comp_op(self, tree, ch):
        return " ".join(str(t) for t in ch)

    def compare(self, tree, ch):
        return ast.Compare.trusted(operands=tuple(ch[0::2]), ops=tuple(ch[1::2]), span=self._span(tree))

    def kwarg(self, tree, ch):
        return ast.Keyword.trusted(name=ch[0], value=ch[2], span=self._span(tree))

    def args(self, tree, ch):
        return self._nodes(ch)

    def per(self, tree, ch):
        return ch[1]

    def among(self, tree, ch):
        return ch[1]

    def call(self, tree, ch):
        func, _lpar, args, _rpar, per, among = ch
        args = args or []
        return ast.Call.trusted(
            func=func,
            args=tuple(a for a in args if not isinstance(a, ast.Keyword)),
            kwargs=tuple(a for a in args if isinstance(a, ast.Keyword)),
            per=per,
            among=among,
            span=self._span(tree),
        )

    # -- clauses -------------------------------------------------------------------
    def policy_clause(self, tree, ch):
        return ast.PolicyClause.trusted(name=ch[1], span=self._span(tree))

    def cite_clause(self, tree, ch):
        return ast.Cite.trusted(methods=tuple(self._nodes(ch)), span=self._span(tree))

    def adapt_clause(self, tree, ch):
        return ast.Adapt.trusted(method=ch[1], reason=ch[2], span=self._span(tree))

    def pool_clause(self, tree, ch):
        return ast.PoolClause.trusted(name=ch[1], span=self._span(tree))

    def let_clause(self, tree, ch):
        return ast.Let.trusted(name=ch[1], value=ch[3], span=self._span(tree))

    def filter_clause(self, tree, ch):
        return ast.Filter.trusted(condition=ch[1], span=self._span(tree))

    def dedup_clause(self, tree, ch):
        return ast.Dedup.trusted(method=ch[1], span=self._span(tree))

    def mix_entry(self, tree, ch):
        if self.reserved and self.reserved[-1] is ch[0]:
            self.reserved.pop()  # a mix key names a group value, not something to refer to: `true` is fine
        return ast.MixEntry.trusted(group=ch[0], weight=ch[2], span=self._span(tree))

    def mix_clause(self, tree, ch):
        nodes = self._nodes(ch)
        return ast.Mix.trusted(by=nodes[0], entries=tuple(nodes[1:]), span=self._span(tree))

    def budget_rows(self, tree, ch):
        return ast.Budget.trusted(unit="rows", amount=ch[1], span=self._span(tree))

    def budget_percent(self, tree, ch):
        return ast.Budget.trusted(unit="percent", amount=ch[1], span=self._span(tree))

    def budget_tokens(self, tree, ch):
        return ast.Budget.trusted(unit="tokens", amount=ch[1], of=ch[4], span=self._span(tree))

    def _select_order(self, tree, ch):
        strategy = ast.Ident.trusted(name=str(ch[1]), span=self._tspan(ch[1]))
        return ast.Select.trusted(strategy=strategy, args=(ch[2],), span=self._span(tree))

    select_top = _select_order
    select_bottom = _select_order

    def select_call(self, tree, ch):
        _select, strategy, _lpar, args, _rpar = ch
        args = args or []
        return ast.Select.trusted(
            strategy=strategy,
            args=tuple(a for a in args if not isinstance(a, ast.Keyword)),
            kwargs=tuple(a for a in args if isinstance(a, ast.Keyword)),
            span=self._span(tree),
        )


def _build(tree: _Tree, builder: _Builder):
    """The AST of one parse tree, built bottom-up with an explicit stack instead of recursion."""
    values: list = []
    work: list = [(tree, False)]
    while work:
        node, ready = work.pop()
        if ready:
            count = len(node.children)
            children = values[len(values) - count:]
            del values[len(values) - count:]
            values.append(getattr(builder, node.data)(node, children))
        elif node.__class__ is _Tree:
            work.append((node, True))
            work.extend([(child, False) for child in reversed(node.children)])
        else:
            values.append(node)  # a token, or None for an absent optional part
    return values[0]


def _too_deep(clause: _Tree, offsets: _Offsets, name: str, base: int) -> Diagnostic:
    return Diagnostic("E010", "this expression is nested too deeply",
                      offsets.span(base + clause.start, base + clause.end, name),
                      label="too many levels of operators, calls or brackets",
                      hints=("split it into `let` names and combine those",))


def _clauses(trees: list[_Tree], offsets: _Offsets, name: str,
             base: int = 0) -> tuple[list[ast.Clause], list[Diagnostic]]:
    """The clauses of their parse trees, and the E009, E010 and E011 of each."""
    builder = _Builder(offsets, name, base)
    clauses, diags = [], []
    for clause in trees:
        if clause.depth > MAX_DEPTH:
            diags.append(_too_deep(clause, offsets, name, base))
        else:
            clauses.append(_build(clause, builder))
    diags.extend(builder.problems)
    diags.extend(reserved_name(node) for node in builder.reserved)
    return clauses, diags


def _attach_comments(clauses: list[ast.Clause], spans: list[tuple[int, int]], comments: list[Token],
                     text: str) -> ast.Policy:
    """Give each comment to a clause: inside or above it (``comments``) or after it on its last line (``trailing``).

    ``spans`` are the clauses' character spans in ``text``, in order. Comments
    above the first clause that are set off from it by a blank line are the
    file header; comments after the last clause are the footer. Each comment
    finds its place by bisection, so a file of thousands of commented clauses
    costs no more than it reads.
    """
    starts = [start for start, _end in spans]
    newlines = [m.start() for m in re.finditer("\n", text)] if comments else []
    line_of = lambda pos: bisect.bisect_left(newlines, pos)  # noqa: E731
    leading: list[list[str]] = [[] for _ in clauses]
    trailing: list[str | None] = [None for _ in clauses]
    header: list[str] = []
    footer: list[str] = []
    for tok in comments:
        body = str(tok).rstrip()
        pos = tok.start_pos
        last = bisect.bisect_right(starts, pos) - 1  # the last clause that starts before the comment
        if last >= 0 and pos < spans[last][1]:
            leading[last].append(body)
        elif last >= 0 and trailing[last] is None and line_of(pos) == line_of(max(spans[last][1] - 1, 0)):
            trailing[last] = body
        elif last + 1 < len(clauses):
            leading[last + 1].append(body)
        else:
            footer.append(body)
    if clauses:
        # Of the comments above the first clause, only the block directly above
        # it stays with it; those set off by a blank line are the header.
        above = sum(1 for tok in comments if tok.start_pos < spans[0][0])
        attached = 0
        for line in reversed(text[: spans[0][0]].split("\n")[:-1]):
            if not line.strip().startswith("#"):
                break
            attached += 1
        cut = above - min(attached, above)
        header, leading[0] = leading[0][:cut], leading[0][cut:]
    else:
        header, footer = footer, []
    built = tuple(
        c.model_copy(update={"comments": tuple(leading[i]), "trailing": trailing[i]}) for i, c in enumerate(clauses)
    )
    return ast.Policy.trusted(clauses=built, comments=tuple(header), trailing=tuple(footer))


# --- error recovery ---------------------------------------------------------------------

# A clause-sized chunk starts at a line whose first word is a clause keyword,
# or a near miss of one (`fliter`), followed by what a clause could hold
# (not `:`, `=` or `,`: those make it a mix key or a keyword argument).
_LINE_WORD = re.compile(r"^[ \t]*([A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_])(?=[ \t]*(?:[^:=,\s]|$))", re.MULTILINE)


@functools.lru_cache(maxsize=4096)
def _starts_clause(word: str) -> bool:
    return word in CLAUSE_KEYWORDS or (len(word) > 2 and close_keyword(word) is not None)


def _chunks(text: str) -> list[tuple[int, int | None, int]]:
    """Clause-sized pieces ``(start, word, end)`` of the text, in order, covering all of it.

    ``word`` is where the piece's first word stands (None for text before the
    first clause-like line).
    """
    found = [(m.start(), m.start(1)) for m in _LINE_WORD.finditer(text) if _starts_clause(m.group(1))]
    if not found or found[0][0] != 0:
        found.insert(0, (0, None))
    ends = [start for start, _word in found[1:]] + [len(text)]
    return [(start, word, end) for (start, word), end in zip(found, ends)]


def _ended(err: UnexpectedInput) -> bool:
    """Whether the parse ran out of input (rather than meeting a token or character that cannot be there)."""
    return isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END")


def _error_at(err: UnexpectedInput) -> int | None:
    """Where a parse failed: the offending token or character (for the end of input, the last token)."""
    return err.token.start_pos if isinstance(err, UnexpectedToken) else getattr(err, "pos_in_stream", None)


def _progress(err: UnexpectedInput) -> tuple[list[_Tree], set[int]]:
    """What the failed parse of the whole text got through: its complete clauses, and where each clause began.

    The clauses are what Lark had reduced when it stopped (the bottom of its
    value stack); the clause in progress starts with the keyword token above
    them. Nothing when Lark kept no parser state.
    """
    parser = getattr(err, "interactive_parser", None)
    stack = parser.parser_state.value_stack if parser is not None else []
    done: list[_Tree] = []
    if stack and isinstance(stack[0], _Tree) and stack[0].data.startswith("_"):  # `clause*` so far
        done, stack = list(stack[0].children), stack[1:]
    starts = {clause.start for clause in done}
    if stack and isinstance(stack[0], Token) and stack[0].type.lower() in CLAUSE_KEYWORDS:
        starts.add(stack[0].start_pos)
    return done, starts


def _ended_before(whole: UnexpectedInput) -> UnexpectedInput | None:
    """The error of the text up to the token the whole parse failed on, without parsing that text again.

    When that token is a clause keyword, or one Lark's lexer refused (so the
    parser never read it), the parser's state is the one the shorter text
    would reach at its end: a clause keyword stands only where the end of the
    text may stand too, so it makes the parser reduce exactly as the end does.
    Feeding that state the end of input (without building trees) ends it as
    the shorter text would. None otherwise, or when the shorter text parses.
    """
    parser = getattr(whole, "interactive_parser", None)
    if not isinstance(whole, UnexpectedToken) or parser is None or not (
            whole.token.type.lower() in CLAUSE_KEYWORDS or whole.token_history is not None):
        return None
    stack = parser.parser_state.value_stack
    if not stack:
        return None
    last = stack[-1].last if stack[-1].__class__ is _Tree else stack[-1]
    state = parser.parser_state.copy(deepcopy_values=False)
    state.parse_conf = copy.copy(state.parse_conf)
    state.parse_conf.callbacks = {}
    try:
        state.feed_token(Token.new_borrow_pos("$END", "", last), True)
    except UnexpectedToken as err:
        err.interactive_parser = InteractiveParser(parser.parser, state, parser.lexer_thread)
        return err
    return None


def _syntax_error(err: UnexpectedInput, text: str, start: int, end: int, offsets: _Offsets, name: str,
                  at_end: bool, shift: int = 0) -> Diagnostic:
    """Lark's error on ``text[start:end]`` as a worded diagnostic with a byte span into the whole text.

    ``shift`` is ``start`` when the error was raised on the whole text rather than on the piece.
    """
    diag = to_diagnostic(err, text[start:end], at_end=at_end, shift=shift)
    if diag.span is None:
        return diag
    span = offsets.span(start + diag.span.start, start + diag.span.end, name)
    return Diagnostic(diag.code, diag.message, span, diag.severity, diag.hints, diag.label)


def _piece(text: str, start: int, end: int, offsets: _Offsets, name: str,
           at_end: bool) -> tuple[list[Diagnostic], bool]:
    """The diagnostics of ``text[start:end]`` parsed on its own, and whether it failed only by ending early."""
    try:
        tree, _comments = _lark_parse(text[start:end])
    except UnexpectedInput as err:
        return [_syntax_error(err, text, start, end, offsets, name, at_end)], _ended(err)
    return _clauses(tree.children, offsets, name, start)[1], False


def _recover(text: str, offsets: _Offsets, name: str, whole: UnexpectedInput,
             reuse: bool = True) -> list[Diagnostic]:
    """Every syntax error of a text that does not parse, found by parsing each clause-sized chunk on its own.

    A chunk that fails only because a line inside a clause looked like the
    start of a new one (a mix key named `pool`) ran out of input there: it is
    joined with the chunks after it until it parses. A piece that fails on a
    token of its own fails on that token however much text follows (the
    parser reads the same tokens up to it), so no longer join is tried.

    Nor is what the whole-text parse already read parsed again (``reuse``):
    from a clause keyword on, the LALR parser goes through the same states
    whether a clause came before or not. So a chunk that starts and ends where
    that parse started clauses holds exactly the clauses it completed, and a
    piece that starts where it started a clause and runs past where it failed
    fails there too, and one that ends where it failed ends as it did there
    (:func:`_ended_before`). Each character is parsed a bounded number of
    times, and recovery stays linear in the text.
    """
    done, starts = _progress(whole) if reuse else ([], set())
    done_at = [clause.start for clause in done]
    failed_at = _error_at(whole)

    def fails_as_whole(word: int | None, end: int) -> bool:
        return word in starts and failed_at is not None and word < failed_at < end

    pieces = _chunks(text)
    diags: list[Diagnostic] = []
    i = 0
    while i < len(pieces):
        start, word, end = pieces[i]
        last = i == len(pieces) - 1
        if fails_as_whole(word, end):
            found, ended = [_syntax_error(whole, text, start, end, offsets, name, last, shift=start)], _ended(whole)
        elif word in starts and not last and failed_at == pieces[i + 1][1] and (cut := _ended_before(whole)):
            found, ended = [_syntax_error(cut, text, start, end, offsets, name, False, shift=start)], True
        elif word in starts and not last and pieces[i + 1][1] in starts:
            first, after = bisect.bisect_left(done_at, word), bisect.bisect_left(done_at, end)
            found, ended = _clauses(done[first:after], offsets, name)[1], False
        else:
            found, ended = _piece(text, start, end, offsets, name, at_end=last)
        if found and ended:
            for j in range(i + 1, min(i + 4, len(pieces))):
                if fails_as_whole(word, pieces[j][2]):
                    break  # this join and every longer one fail where the whole text did
                joined, still_ended = _piece(text, start, pieces[j][2], offsets, name, at_end=j == len(pieces) - 1)
                if not joined:
                    i, found = j, []  # pieces i..j are one clause after all, and it parses
                    break
                if not still_ended:
                    break  # it fails on a token of its own, and so would every longer join
        diags.extend(found)
        i += 1
    if not diags:  # the pieces parse but the whole does not: trust the whole-text error
        diags = [_syntax_error(whole, text, 0, len(text), offsets, name, at_end=True)]
    return diags


def _lone_surrogate(text: str) -> int | None:
    """Where ``text`` holds half of a UTF-16 surrogate pair (no UTF-8 form, so no byte span), or None.

    Only a caller of the API can pass one: the CLI decodes files strictly.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def _unique_sorted(diags: list[Diagnostic]) -> list[Diagnostic]:
    unique: dict[tuple, Diagnostic] = {}
    for d in diags:
        unique.setdefault((d.code, d.span.start if d.span else -1), d)
    return sorted(unique.values(), key=lambda d: (d.span.start if d.span else -1, d.code))


def parse_diagnostics(text: str, name: str = "<policy>") -> tuple[ast.Policy | None, list[Diagnostic]]:
    """Parse, returning ``(policy, [])`` or ``(None, diagnostics)`` with every error found.

    A text that parses is checked clause by clause (E009, E010, E011); one
    that does not goes to :func:`_recover`, which finds every syntax error.
    Python's cycle collector is paused meanwhile: parsing makes about ten
    objects per token and no reference cycle, and the collections that many
    objects set off took a third of the time of a large policy.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _parse_diagnostics(text, name)
    finally:
        if collecting:
            gc.enable()


def _parse_diagnostics(text: str, name: str) -> tuple[ast.Policy | None, list[Diagnostic]]:
    offsets = _Offsets(text)
    norm = offsets.text
    surrogate = _lone_surrogate(norm)
    if surrogate is not None:
        return None, [Diagnostic("E001", f"the character {ascii(norm[surrogate])[1:-1]} cannot appear here",
                                 offsets.span(surrogate, surrogate + 1, name), label="not a Unicode character",
                                 hints=("the text was decoded wrongly: save the policy as UTF-8",))]
    try:
        tree, comments = _lark_parse(norm)
    except UnexpectedInput as err:
        return None, _unique_sorted(_recover(norm, offsets, name, err))
    clauses, diags = _clauses(tree.children, offsets, name)
    if diags:
        return None, _unique_sorted(diags)
    policy = _attach_comments(clauses, [(c.start, c.end) for c in tree.children], comments, norm)
    return policy.model_copy(update={"span": offsets.span(0, len(norm), name)}), []


def parse(text: str, name: str = "<policy>") -> ast.Policy:
    """Parse policy text into a :class:`~cbdsl.dsl.ast.Policy`; raise :class:`PolicyError` on syntax errors."""
    policy, diags = parse_diagnostics(text, name)
    if policy is None:
        raise PolicyError(diags, Source(text, name))
    return policy
