"""The policy AST: frozen pydantic nodes with spans.

One node base class with generic tools (``walk``, ``find_all``, ``transform``),
as sqlglot does, instead of a visitor per node type. Every node carries a
:class:`Span` (byte offsets into one source); spans and comments are metadata:
they survive the JSON round trip but take no part in equality or the policy
hash, so ``parse(fmt(p)) == p`` holds and reformatting changes nothing.

A :class:`Policy` compares and hashes by its canonical form: clauses sorted by
kind (the canonical clause order) and, within a kind, by canonical text,
because clause order within a kind carries no meaning (DESIGN.md).

Node ids. What the compiler learns about a node (its type, what a name or a
call resolved to) is keyed by the node's id, never by its span, so a tree
built in code, read from JSON or mutated without re-parsing resolves like the
same text parsed (PRQL's resolver does the same). A node's id is its
:data:`NodeId`: its path from the root, the ``(field, index)`` steps of
:meth:`Node.slots` (``(("clauses", 3), ("condition", None), ("left", None))``;
the root is ``()``; the paths :mod:`cbdsl.dsl.mutate` edits by). The id is
derived, not assigned, because a path is a function of the tree alone: it
needs no storage on the node, so the JSON dump, equality and hashing cannot
change; every way of making a tree (the parser, the constructors,
``model_construct``, ``model_copy``, ``transform``, ``model_validate_json``,
:mod:`cbdsl.dsl.mutate`) gives every node its id with no cooperation; equal
subtrees at two places differ by their path, as they did by their span; and
the parsed and a rebuilt tree give the same ids, so their annotations compare
directly. An id assigned at construction would need a private attribute that
each of those paths must set, that ``model_copy`` copies (a copy would share
its original's id), and that a node object reused at two places would carry
twice. Ids name places in one tree: a typed policy is computed again after
every edit, so nothing keeps an id across edits. :class:`NodeIds` finds the id
of a node object with one walk (a tree that reuses a node object at two places
is copied first, so each place has an object and an id of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field

N = TypeVar("N", bound="Node")
M = TypeVar("M", bound=BaseModel)

#: Canonical clause order: the order the formatter writes clause kinds in.
CLAUSE_ORDER: tuple[str, ...] = (
    "policy", "cite", "adapt", "pool", "let", "filter", "dedup", "mix", "budget", "select",
)


class Span(BaseModel):
    """Byte offsets ``[start, end)`` into the source named ``source``."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    start: int = 0
    end: int = 0
    source: str = "<policy>"

    @classmethod
    def at(cls, start: int = 0, end: int = 0, source: str = "<policy>") -> Span:
        """A span built without validation: the parser's offsets are ints by construction, and
        validating would build pydantic's schema on the check path (~70 ms of a cold start)."""
        return _trusted(cls, {"start": start, "end": end, "source": source})

    def cover(self, other: Span) -> Span:
        return Span.at(min(self.start, other.start), max(self.end, other.end), self.source)


_DEFAULTS: dict[type, dict[str, Any]] = {}
_set = object.__setattr__


def _trusted(cls: type[M], values: dict[str, Any]) -> M:
    """What ``cls.model_construct(**values)`` returns, without its per-field loop over aliases and defaults.

    The parser builds one node and one span per token or rule (about a
    microsecond here instead of two or three): a 150 KB policy has 50,000 of
    them. Only for models whose defaults are immutable and that have no
    aliases, private attributes or post-init, as every AST model;
    tests/test_robustness.py checks that both give the same instance.
    """
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        defaults = _DEFAULTS[cls] = {name: f.default for name, f in cls.model_fields.items() if not f.is_required()}
    model = cls.__new__(cls)
    _set(model, "__dict__", {name: values[name] if name in values else defaults[name] for name in cls.model_fields})
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


NO_SPAN = Span.at()

#: Fields that are metadata: kept in JSON, ignored by equality and hashing.
_META_FIELDS = frozenset({"span", "comments", "trailing"})


class Node(BaseModel):
    """Base of every AST node.

    ``defer_build``: validators are built on first JSON use, not at import, so
    ``cbdsl check`` starts fast; the parser builds nodes with ``model_construct``
    (its input is already valid by the grammar).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    span: Span = NO_SPAN

    @classmethod
    def trusted(cls: type[N], **values: Any) -> N:
        """A node from values the grammar already checked: ``model_construct``, faster (see :func:`_trusted`)."""
        return _trusted(cls, values)

    # -- structural identity -------------------------------------------------
    def key(self) -> tuple:
        """A hashable structural form without spans or comments.

        Built bottom-up with an explicit stack: equality must not recurse once
        per level of an expression nested ``MAX_DEPTH`` deep.
        """
        keys: list[tuple] = []  # the keys of finished children, in order
        work: list[tuple[Node, bool]] = [(self, False)]
        while work:
            node, ready = work.pop()
            if not ready:
                if node is not self and type(node).key is not Node.key:
                    keys.append(node.key())  # a node with its own notion of identity (a Policy)
                    continue
                work.append((node, True))
                work.extend((child, False) for child in reversed(list(node.children())))
                continue
            count = sum(1 for _ in node.children())
            done = iter(keys[len(keys) - count:])
            del keys[len(keys) - count:]
            parts: list[Any] = [type(node).__name__]
            for name in type(node).model_fields:
                if name not in _META_FIELDS:
                    parts.append(_key(getattr(node, name), done))
            keys.append(tuple(parts))
        return keys[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    # -- generic traversal ---------------------------------------------------
    def children(self) -> Iterator[Node]:
        """Direct child nodes, in field order."""
        return (child for _slot, child in self.slots())

    def slots(self) -> Iterator[tuple[tuple[str, int | None], Node]]:
        """Direct children with their place: ``(field, None)`` for a single child, ``(field, index)`` in a tuple."""
        for name in type(self).model_fields:
            if name in _META_FIELDS:
                continue
            value = getattr(self, name)
            if isinstance(value, Node):
                yield (name, None), value
            elif isinstance(value, tuple):
                yield from (((name, i), v) for i, v in enumerate(value) if isinstance(v, Node))

    def walk(self) -> Iterator[Node]:
        """This node and all its descendants, depth first, pre-order (an explicit stack: no recursion per level)."""
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(list(node.children())))

    def find_all(self, kind: type[N]) -> Iterator[N]:
        return (n for n in self.walk() if isinstance(n, kind))

    def transform(self, fn: Callable[[Node], Node]) -> Node:
        """Rebuild the tree bottom-up, replacing each node by ``fn(node)`` (an explicit stack: no recursion)."""
        results: list[Node] = []  # the transformed children of finished nodes, in order
        work: list[tuple[Node, bool]] = [(self, False)]
        while work:
            node, ready = work.pop()
            if not ready:
                work.append((node, True))
                work.extend((child, False) for child in reversed(list(node.children())))
                continue
            count = sum(1 for _ in node.children())
            new = iter(results[len(results) - count:])
            del results[len(results) - count:]
            updates: dict[str, Any] = {}
            for name in type(node).model_fields:
                if name in _META_FIELDS:
                    continue
                value = getattr(node, name)
                if isinstance(value, Node):
                    changed = next(new)
                    if changed is not value:
                        updates[name] = changed
                elif isinstance(value, tuple) and any(isinstance(v, Node) for v in value):
                    items = tuple(next(new) if isinstance(v, Node) else v for v in value)
                    if any(a is not b for a, b in zip(items, value)):
                        updates[name] = items
            results.append(fn(node.model_copy(update=updates) if updates else node))
        return results[0]


def _key(value: Any, children: Iterator[tuple]) -> Any:
    """The key of a field's value; ``children`` yields the keys of its nodes, in order."""
    if isinstance(value, Node):
        return next(children)
    if isinstance(value, tuple):
        return tuple(_key(v, children) for v in value)
    if isinstance(value, float) and value.is_integer():
        # 1.0 and 1 are the same number; keep the float-ness visible though.
        return ("float", value)
    return value


_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}


def _child_fields(cls: type[Node]) -> tuple[str, ...]:
    """The fields of a node class that may hold child nodes: all but the metadata."""
    found = _CHILD_FIELDS.get(cls)
    if found is None:
        found = _CHILD_FIELDS[cls] = tuple(n for n in cls.model_fields if n not in _META_FIELDS)
    return found


#: A node's id: the ``(field, index)`` steps from the root of its tree to it (see the module docstring).
NodeId = tuple[tuple[str, int | None], ...]


class NodeIds:
    """The id of every node of one tree, found by node object (one walk, an explicit stack).

    ``root`` is the tree the ids name: the tree given, or, when one node
    object stands at two places (a tree built in code may reuse a ``Name``),
    a copy with an object of its own at every place, equal to it, so that
    each place gets its id. A parsed tree is never copied. Look nodes up in
    ``root``: a node of another tree, even an equal one, has no id here.
    """

    __slots__ = ("root", "_ids")

    def __init__(self, root: Node):
        ids = self._index(root)
        if ids is None:
            root = root.transform(lambda node: node.model_copy())  # model_copy: a new object at every place
            ids = self._index(root)
            assert ids is not None
        self.root = root
        self._ids = ids  # id(node) -> NodeId; ``root`` keeps every node alive, so no object id is reused

    @staticmethod
    def _index(root: Node) -> dict[int, NodeId] | None:
        """id(node) -> NodeId for every node under ``root``; None when a node object stands at two places."""
        ids: dict[int, NodeId] = {}
        stack: list[tuple[NodeId, Node]] = [((), root)]
        while stack:  # what slots() yields, inlined: a 150 KB policy has 50,000 nodes
            path, node = stack.pop()
            if id(node) in ids:
                return None
            ids[id(node)] = path
            values = node.__dict__
            for name in _child_fields(type(node)):
                value = values[name]
                if isinstance(value, Node):
                    stack.append((path + ((name, None),), value))
                elif isinstance(value, tuple):
                    stack.extend((path + ((name, i),), v) for i, v in enumerate(value) if isinstance(v, Node))
        return ids

    def __reduce__(self):
        return NodeIds, (self.root,)  # a copy or an unpickled one indexes its own node objects

    def __getitem__(self, node: Node) -> NodeId:
        """The id of a node of ``root`` (KeyError for any other node)."""
        try:
            return self._ids[id(node)]
        except KeyError:
            raise KeyError(f"not a node of this tree: {type(node).__name__}") from None

    def get(self, node: Node) -> NodeId | None:
        """The id of a node of ``root``, or None."""
        return self._ids.get(id(node))

    def __contains__(self, node: object) -> bool:
        return id(node) in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def node(self, nid: NodeId) -> Node:
        """The node of ``root`` that has the id ``nid``."""
        node = self.root
        for name, index in nid:
            node = getattr(node, name) if index is None else getattr(node, name)[index]
        return node


# --- expressions ---------------------------------------------------------------


class Number(Node):
    """An integer or float literal (``10_000``, ``0.3``, ``1e-4``)."""

    node: Literal["number"] = "number"
    value: int | float


class Percent(Node):
    """A percentage literal: ``30%`` has ``value == 30`` and means 0.30."""

    node: Literal["percent"] = "percent"
    value: int | float

    @property
    def fraction(self) -> float:
        return self.value / 100


class String(Node):
    node: Literal["string"] = "string"
    value: str


class Bool(Node):
    node: Literal["bool"] = "bool"
    value: bool


class Name(Node):
    """A column of the pool or a ``let`` name; resolution tells which."""

    node: Literal["name"] = "name"
    name: str


class Ident(Node):
    """A bare identifier in a clause position (a let name, a method id, a column)."""

    node: Literal["ident"] = "ident"
    name: str


class Star(Node):
    """``*`` as a mix key: every group not listed."""

    node: Literal["star"] = "star"


class ListExpr(Node):
    node: Literal["list"] = "list"
    items: tuple[Expr, ...] = ()


class Unary(Node):
    """``-x`` or ``not x``."""

    node: Literal["unary"] = "unary"
    op: Literal["-", "not"]
    operand: Expr


class Binary(Node):
    """Arithmetic (``+ - * /``) and boolean (``and or``) operators, left-associative."""

    node: Literal["binary"] = "binary"
    op: Literal["+", "-", "*", "/", "and", "or"]
    left: Expr
    right: Expr


class Compare(Node):
    """A comparison chain: ``a < x <= b`` is ``operands=(a, x, b), ops=("<", "<=")``."""

    node: Literal["compare"] = "compare"
    operands: tuple[Expr, ...]
    ops: tuple[Literal["<", "<=", ">", ">=", "==", "!=", "in", "not in"], ...]


class Keyword(Node):
    """A keyword argument ``name=value`` of a call."""

    node: Literal["keyword"] = "keyword"
    name: Ident
    value: Expr


class Call(Node):
    """A scorer, statistic or function call.

    ``per`` groups a statistic by a column (``quantile(x, 0.3) per source``);
    ``among`` computes it over the rows where a condition holds.
    """

    node: Literal["call"] = "call"
    func: Ident
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Keyword, ...] = ()
    per: Ident | None = None
    among: Expr | None = None

    def kwarg(self, name: str) -> Expr | None:
        for kw in self.kwargs:
            if kw.name.name == name:
                return kw.value
        return None


Expr = Annotated[
    Union[Number, Percent, String, Bool, Name, ListExpr, Unary, Binary, Compare, Call],
    Field(discriminator="node"),
]


# --- clauses ---------------------------------------------------------------------


class Clause(Node):
    """Base of the clauses. ``comments`` stand above the clause, ``trailing`` after it."""

    kind: ClassVar[str]
    comments: tuple[str, ...] = ()
    trailing: str | None = None

    @property
    def rank(self) -> int:
        return CLAUSE_ORDER.index(self.kind)


class PolicyClause(Clause):
    kind: ClassVar[str] = "policy"
    node: Literal["policy"] = "policy"
    name: String


class Cite(Clause):
    kind: ClassVar[str] = "cite"
    node: Literal["cite"] = "cite"
    methods: tuple[Ident, ...]


class Adapt(Clause):
    kind: ClassVar[str] = "adapt"
    node: Literal["adapt"] = "adapt"
    method: Ident
    reason: String


class PoolClause(Clause):
    kind: ClassVar[str] = "pool"
    node: Literal["pool"] = "pool"
    name: String


class Let(Clause):
    kind: ClassVar[str] = "let"
    node: Literal["let"] = "let"
    name: Ident
    value: Expr


class Filter(Clause):
    kind: ClassVar[str] = "filter"
    node: Literal["filter"] = "filter"
    condition: Expr


class Dedup(Clause):
    kind: ClassVar[str] = "dedup"
    node: Literal["dedup"] = "dedup"
    method: Call


class MixEntry(Node):
    node: Literal["mix_entry"] = "mix_entry"
    group: Ident | String | Star
    weight: Number | Percent

    @property
    def key_text(self) -> str | None:
        """The group value this entry names, or None for ``*``."""
        g = self.group
        return None if isinstance(g, Star) else g.name if isinstance(g, Ident) else g.value


class Mix(Clause):
    kind: ClassVar[str] = "mix"
    node: Literal["mix"] = "mix"
    by: Ident
    entries: tuple[MixEntry, ...] = ()


class Budget(Clause):
    """``budget 10000`` (rows), ``budget 1.5%`` (of the pool), ``budget 2_000_000 tokens [of EXPR]``."""

    kind: ClassVar[str] = "budget"
    node: Literal["budget"] = "budget"
    unit: Literal["rows", "percent", "tokens"]
    amount: Number | Percent
    of: Expr | None = None


class Select(Clause):
    """``select top E``, ``select bottom E`` or ``select STRATEGY(args)``."""

    kind: ClassVar[str] = "select"
    node: Literal["select"] = "select"
    strategy: Ident
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Keyword, ...] = ()

    @property
    def is_ordering(self) -> bool:
        return self.strategy.name in ("top", "bottom")


AnyClause = Annotated[
    Union[PolicyClause, Cite, Adapt, PoolClause, Let, Filter, Dedup, Mix, Budget, Select],
    Field(discriminator="node"),
]


class Policy(Node):
    """A whole policy file.

    ``comments`` is the header block (comments above the first clause,
    separated from it by a blank line); ``trailing`` holds comments after the
    last clause.
    """

    node: Literal["policy_file"] = "policy_file"
    clauses: tuple[AnyClause, ...] = ()
    comments: tuple[str, ...] = ()
    trailing: tuple[str, ...] = ()

    def key(self) -> tuple:
        """The clauses as a multiset: sorted by kind, then by their own keys (clause order is no change)."""
        keyed = sorted(((c.rank, repr(k), k) for c in self.clauses for k in (c.key(),)), key=lambda x: x[:2])
        return ("Policy", tuple(k for _rank, _text, k in keyed))

    def of_kind(self, kind: type[N]) -> list[N]:
        return [c for c in self.clauses if isinstance(c, kind)]

    @property
    def name(self) -> str | None:
        found = self.of_kind(PolicyClause)
        return found[0].name.value if found else None


