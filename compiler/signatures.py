"""Signatures: what the compiler knows of a callable a policy can name.

One :class:`Entry` per callable, in four kinds that share one name space
(``scorer``, ``function``, ``statistic``) and two of their own (``select``
strategies, ``dedup`` methods; ``top`` is both a statistic and a strategy).
An entry declares what the checker needs (positional inputs with their
expected types, a frozen pydantic model of the parameters with their
defaults and ranges, the output type), what the planner needs (cost
class, catalogue method, and ``lower``, which builds the Polars expression
over whole columns) and, for what runs outside the Polars query, its
run-time code: ``compute`` for a model scorer, ``run`` for a dedup method
or a select strategy. A :class:`Registry` holds entries by (space, id).

The compiler gets a registry as an argument and never fills one: the
scorers register themselves in :mod:`cbdsl.scorers.registry`, and
:mod:`cbdsl.stages` hands that registry to the stages.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from cbdsl.compiler.types import EXPECTS, UNKNOWN, Type, numeric_result, parse_type

Kind = Literal["scorer", "function", "statistic", "select", "dedup"]
CostClass = Literal["metadata", "cpu_model", "gpu_model"]
Space = Literal["expr", "select", "dedup"]

#: Output types of the scorers that the method catalogue names but that are not
#: implemented yet (pending), so a policy using them still type-checks; an entry
#: goes when its scorer lands. A pending scorer missing here has type ``unknown``.
PENDING_OUTPUTS: dict[str, str] = {}


class Params(BaseModel):
    """Base of every parameter model: frozen, no unknown fields, no silent coercion (``"3"`` is not 3).

    ``defer_build``: a model's validator is built when a policy first uses its scorer, so a
    cold ``cbdsl check`` pays only for the scorers it calls."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, defer_build=True)


@dataclass(frozen=True)
class Input:
    """A positional input: an expression evaluated per row (``text`` of ``words(text)``).

    ``expect`` is a word of :data:`cbdsl.compiler.types.EXPECTS`. A ``variadic``
    input takes every remaining positional argument, at least ``min_count``.
    """

    name: str
    expect: str = "any"
    variadic: bool = False
    min_count: int = 1

    def __post_init__(self) -> None:
        if self.expect not in EXPECTS:
            raise ValueError(f"input {self.name!r}: unknown expectation {self.expect!r}")


@dataclass(frozen=True)
class LowerContext:
    """What a ``lower`` function gets besides its input expressions.

    ``per`` (a column name) and ``among`` (a Polars expression) are set for statistics, and ``values`` for
    those with an :attr:`Entry.aggregate`: each aggregate's value per row, as a Polars expression (the
    aggregate over the row's ``per`` group in the query, or a literal the executor computed first);
    ``arg_columns`` names the column behind each input when it is a bare column;
    ``pool`` is the pool being run, for a lowering that reads one of its model
    assets (``token_count(tokenizer="NAME")``); None when there is none.
    """

    params: Params
    arg_types: tuple[Type, ...] = ()
    arg_columns: tuple[str | None, ...] = ()
    schema: Mapping[str, str] = field(default_factory=dict)
    per: Any = None
    among: Any = None
    pool: Any = None
    values: Mapping[str, Any] | None = None


OutputSpec = Type | str | Callable[[Sequence[Type]], Type]


@dataclass(frozen=True)
class Entry:
    """One callable: see the module docstring."""

    id: str
    kind: Kind
    inputs: tuple[Input, ...] = ()
    params: type[Params] = Params
    output: OutputSpec = "float"
    cost: CostClass = "metadata"
    method: str | None = None
    lower: Callable[..., Any] | None = None
    summary: str = ""
    #: Model scorers: ``compute(ctx: ScoreContext, *inputs: pl.Series) -> pl.Series``, run in
    #: batches by :mod:`cbdsl.pipelines.engine.scores`, cached under the pool's ``scores/``.
    compute: Callable[..., Any] | None = None
    #: A population scorer's value for a row depends on the whole pool (a proxy model trained on
    #: it, k-means over it, DSIR's raw distribution): it is always computed over every row.
    population: bool = False
    #: ``version(params) -> str``: the identity of the weights or data the scorer uses (e.g. a
    #: checkpoint's sha256), part of the score cache key.
    version: Callable[..., str] | None = None
    #: Dedup methods and select strategies: ``run(ctx) -> pl.DataFrame``, what the engine calls
    #: (:mod:`cbdsl.pipelines.engine.execute`) with a :class:`~cbdsl.scorers.api.DedupContext` or a
    #: :class:`~cbdsl.scorers.api.SelectContext`; that module says what it gets and must return.
    run: Callable[..., Any] | None = None
    #: Select strategies whose first input is a score: ``"high"`` when larger values are better
    #: (`top`, `weighted`), ``"low"`` when smaller ones are (`bottom`). Dedup keeps the best row of
    #: each duplicate group by it (DESIGN.md, semantics 3) and the manifest records it as each row's
    #: score; None: no score (dedup keeps the first row in id-hash order, the manifest's score is null).
    prefers: Literal["high", "low"] | None = None
    #: Dedup methods whose duplicate groups are the transitive closure of "equal in every column of some
    #: band": ``bands(ctx) -> [pl.DataFrame]``, one frame a band, a row each of ``ctx.rows`` in order (the
    #: columns of a band are the same in every band). `exact`: one band, its inputs; `minhash`: the LSH bands
    #: of the signatures. A Ray run hash-partitions the bands so equal ones meet whatever block their rows
    #: are in, and keeps the best row of each group, the rows ``run`` keeps.
    bands: Callable[..., list[Any]] | None = None
    #: Statistics: ``aggregate(params) -> {name: aggregate}``, what the statistic aggregates over its population
    #: (:mod:`cbdsl.compiler.aggregates`: an order statistic or a moment), which ``lower`` combines with each
    #: row's x through ``ctx.values``. The lowering applies ``among`` and ``per``; the executor computes the
    #: values before the filter stage, exactly, from the columns they read only, and runs the filters as
    #: row-local predicates. None (`rank`): every row's value needs the whole population in the query.
    aggregate: Callable[..., dict[str, Any]] | None = None

    @property
    def space(self) -> Space:
        return self.kind if self.kind in ("select", "dedup") else "expr"  # type: ignore[return-value]

    @property
    def is_statistic(self) -> bool:
        return self.kind == "statistic"

    @property
    def display(self) -> str:
        """How messages name it: `quantile`, `select top`, `dedup minhash`."""
        return f"`{self.id}`" if self.space == "expr" else f"`{self.space} {self.id}`"

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.params.model_fields)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def variadic(self) -> bool:
        return any(i.variadic for i in self.inputs)

    def output_type(self, arg_types: Sequence[Type]) -> Type:
        out = self.output
        if isinstance(out, Type):
            return out
        if callable(out):
            return out(arg_types)
        if out == "same":
            return arg_types[0] if arg_types else UNKNOWN
        if out == "join":
            result = arg_types[0] if arg_types else UNKNOWN
            for t in arg_types[1:]:
                result = numeric_result(result, t, "+")
            return result
        return parse_type(out)

    def signature(self) -> str:
        """The call as a user writes it: ``quantile(x, q, method="linear")``."""
        parts = [("*" if i.variadic else "") + i.name for i in self.inputs]
        for name, info in self.params.model_fields.items():
            if info.is_required():
                parts.append(name)
            else:
                parts.append(f"{name}={format_value(info.get_default(call_default_factory=True))}")
        head = {"select": "select ", "dedup": "dedup "}.get(self.space, "")
        if self.space == "select" and self.id in ("top", "bottom"):
            return f"select {self.id} {self.inputs[0].name}"
        return f"{head}{self.id}(" + ", ".join(parts) + ")"

    def choices(self, param: str) -> tuple[Any, ...]:
        """The allowed values of a ``Literal`` parameter, or ()."""
        info = self.params.model_fields.get(param)
        if info is None:
            return ()
        return _literal_values(info.annotation)


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    values: tuple[Any, ...] = ()
    for arg in typing.get_args(annotation):
        values += _literal_values(arg)
    return values


def format_value(value: Any) -> str:
    """A Python value as a policy literal: ``"linear"``, ``true``, ``0.8``; None reads ``auto``."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return repr(value)


class Registry:
    """Entries by (space, id)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        #: ``find(id, space)`` imports the one module that would register ``id``, if there is one; run
        #: first when a lookup misses (a select strategy or dedup method is a module named by its id).
        self._find: Callable[[str, Space], None] | None = None
        #: Imports the remaining scorer modules; run on the first lookup that still misses or listing
        #: (``cbdsl check`` of a policy that names only builtins never imports the model scorers).
        self._complete: Callable[[], None] | None = None

    def _load_rest(self) -> None:
        complete, self._complete, self._find = self._complete, None, None
        if complete is not None:
            complete()

    def add(self, entry: Entry) -> Entry:
        key = (entry.space, entry.id)
        if key in self._entries:
            raise ValueError(f"{entry.space} `{entry.id}` is registered twice")
        self._entries[key] = entry
        return entry

    def get(self, id: str, space: Space = "expr") -> Entry | None:
        found = self._entries.get((space, id))
        if found is None and self._find is not None:
            self._find(id, space)
            found = self._entries.get((space, id))
        if found is None and self._complete is not None:
            self._load_rest()
            found = self._entries.get((space, id))
        return found

    def ids(self, space: Space = "expr") -> tuple[str, ...]:
        self._load_rest()
        return tuple(sorted(i for s, i in self._entries if s == space))

    def entries(self, space: Space | None = None) -> list[Entry]:
        self._load_rest()
        return [e for (s, _), e in sorted(self._entries.items()) if space is None or s == space]

    def all_ids(self) -> frozenset[str]:
        self._load_rest()
        return frozenset(i for _, i in self._entries)

    def __contains__(self, id: str) -> bool:
        self._load_rest()
        return any(i == id for _, i in self._entries)

    def __len__(self) -> int:
        self._load_rest()
        return len(self._entries)


@dataclass(frozen=True)
class Methods:
    """What the checker knows of the method catalogue, given by the caller as the registry is.

    ``ids`` are the method ids a ``cite`` or ``adapt`` may name; ``scorers`` the scorer ids some
    method names (one the registry lacks is pending: it type-checks with its catalogue output
    type); ``users`` maps a scorer id to the methods that name it, for messages."""

    ids: tuple[str, ...] = ()
    scorers: frozenset[str] = frozenset()
    users: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
