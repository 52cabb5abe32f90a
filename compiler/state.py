"""The state of one resolution pass, in one place, and how the pass reports and quotes.

:class:`State` is everything :func:`cbdsl.compiler.resolve.resolve_policy`
learns as it goes (the diagnostics, the ``let`` tables, the id-keyed maps that
become the :class:`~cbdsl.compiler.typed.TypedPolicy`) beside what it reads
(the policy, the schema, the registry, the source, the pool's assets). The
pieces of the pass (:mod:`~cbdsl.compiler.names`, :mod:`~cbdsl.compiler.infer`,
:mod:`~cbdsl.compiler.bind`) are functions of a ``State``; none keeps state of
its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from cbdsl.compiler import types as T
from cbdsl.compiler.signatures import Params, Registry
from cbdsl.compiler.typed import Resolution
from cbdsl.compiler.types import Type
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic, Source

#: How a piece of the pass types a sub-expression: :func:`cbdsl.compiler.infer.infer`, handed to the
#: pieces it calls (names, bind) so that they need not import it.
Infer = Callable[["State", ast.Node], Type]


class State:
    """What one pass over a policy reads and what it has learned so far."""

    def __init__(
        self,
        policy: ast.Policy,
        schema: Mapping[str, str] | None,
        registry: Registry,
        pending: Iterable[str] = (),
        *,
        methods_using: Mapping[str, Sequence[str]] | None = None,
        source: Source | None = None,
        assets: Mapping[str, str] | None = None,
    ):
        self.ids = ast.NodeIds(policy)  # annotations are keyed by node id, never by span
        self.policy: ast.Policy = self.ids.root  # type: ignore[assignment]
        self.assets = dict(assets) if assets is not None else None  # name -> kind; None: no pool known
        self.schema = dict(schema) if schema is not None else None
        self.column_types = {k: T.parse_type(v) for k, v in schema.items()} if schema is not None else {}
        self.registry = registry
        self._pending_named = frozenset(pending)
        self._pending: frozenset[str] | None = None
        self.methods_using = methods_using or {}
        self.source = source
        self.diags: list[Diagnostic] = []
        self.lets: dict[str, ast.Let] = {}
        self.let_types: dict[str, Type] = {}
        self.let_order: list[str] = []
        self.used_lets: set[str] = set()
        self.columns: dict[str, Type] = {}
        self.deferred: list[str] = []
        self.names: dict[ast.NodeId, Resolution] = {}
        self.calls: dict[ast.NodeId, Resolution] = {}
        self.types: dict[ast.NodeId, Type] = {}
        self.params: dict[ast.NodeId, Params] = {}

    @property
    def pending(self) -> frozenset[str]:
        """Catalogue scorers the registry lacks (computed on first need: it imports every scorer module)."""
        if self._pending is None:
            self._pending = self._pending_named - self.registry.all_ids()
        return self._pending

    def error(self, code: str, message: str, node: ast.Node | ast.Span | None, label: str = "",
              hints: Iterable[str] = (), severity: str = "error") -> None:
        span = node.span if isinstance(node, ast.Node) else node
        self.diags.append(Diagnostic(code, message, span, severity, tuple(hints), label))  # type: ignore[arg-type]

    def show(self, node: ast.Node) -> str:
        return show(node, self.source)

    def line_of(self, node: ast.Node) -> int | None:
        return self.source.line_col(node.span.start)[0] if self.source is not None else None


def show(node: ast.Node, source: Source | None = None) -> str:
    """A short quote of an expression for messages: its own text when short, else `words(...)`."""
    if source is not None:
        text = source_text(node, source)
        if text and len(text) <= 40 and "\n" not in text:
            return f"`{text}`"
    if isinstance(node, ast.Unary) and isinstance(node.operand, (ast.Number, ast.Percent)):
        return f"`-{show(node.operand).strip('`')}`"
    if isinstance(node, ast.Name):
        return f"`{node.name}`"
    if isinstance(node, ast.Call):
        return f"`{node.func.name}(...)`"
    if isinstance(node, ast.Number):
        return f"`{node.value}`"
    if isinstance(node, ast.Percent):
        return f"`{node.value}%`"
    if isinstance(node, ast.String):
        return f'`"{node.value}"`'
    if isinstance(node, ast.Bool):
        return "`true`" if node.value else "`false`"
    if isinstance(node, ast.ListExpr):
        return "the list"
    return "this expression"


def source_text(node: ast.Node, source: Source) -> str:
    """The exact text of a node (its span) in the source it was parsed from."""
    data = source.text.encode("utf-8")
    return data[node.span.start:node.span.end].decode("utf-8", errors="replace")
