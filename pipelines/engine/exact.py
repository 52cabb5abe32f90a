"""A statistic's aggregates (:mod:`cbdsl.compiler.aggregates`) computed exactly over its population in pieces:
the same bits for any cut into pieces, so on the local engine (one piece) and on Ray (a piece a block,
where it lies) alike.

Each piece sends back only integers: counts per group, radix counts of order keys, exact sums in bins by
binary exponent. Adding integers is exact in any order, and the driver finishes each value from the totals:

- an order statistic needs its elements' ranks (from the counts) and then those elements: each is found by
  radix select over an order key of the values (:mod:`.kernels.order_keys`), one pass per digit (the counts
  of the next 16 bits among the keys that share the bits found so far; 8 or 4 bits when many groups ask),
  until the requests' buckets are small enough to fetch (at most ``FETCH`` keys together) or every bit is known. A threshold
  over a few million scores between 0 and 1 takes two counting passes and a fetch of a few dozen keys;
  a piece never sends its values.
- a moment is rounded once from the exact sums of the values and of their squares.

``Parts`` is where the pieces lie: :class:`InMemory` for the local engine, the Ray engine's pieces in its
object store (:mod:`.on_ray`); a pass is a function applied to every piece where it lies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np
import polars as pl

from cbdsl.compiler.aggregates import Aggregation, Moment, Sums
from cbdsl.pipelines.engine.kernels.exact_sums import exact_sums
from cbdsl.pipelines.engine.kernels.order_keys import (
    digit_bits, digit_counts, from_keys, in_buckets, narrowed, order_keys,
)

FETCH = 1 << 18  # keys of all requests' buckets together small enough to fetch instead of counting another digit
CHUNK = 1 << 20  # values whose keys a pass makes at a time
_X, _IN = "#x", "#in"


class Parts(Protocol):
    """A population in pieces, each where it lies; a pass applies a function to every piece there."""

    def keep(self, fn: Callable, *args) -> Parts:
        """The pieces ``fn(piece, *args)``, kept where they lie."""

    def each(self, fn: Callable, *args) -> list:
        """``fn(piece, *args)`` of every piece, brought here, in piece order."""


@dataclass(frozen=True)
class InMemory:
    """Parts in this process (the local engine: the whole population, one piece)."""

    pieces: list

    def keep(self, fn: Callable, *args) -> InMemory:
        return InMemory([fn(p, *args) for p in self.pieces])

    def each(self, fn: Callable, *args) -> list:
        return [fn(p, *args) for p in self.pieces]


@dataclass(frozen=True)
class _Piece:
    """A piece of the population as the passes read it: its values, each one's group, and the counts."""

    gid: np.ndarray | None  # int64, each value's group (index into the groups); None: one group
    values: np.ndarray  # the values (no missing ones)
    size: np.ndarray  # int64 per group: population rows, missing values included
    valid: np.ndarray  # int64 per group: values
    dtype: pl.DataType  # of the values


def aggregate(aggregation: Aggregation, frames: Parts) -> pl.DataFrame:
    """The aggregates over the population in ``frames`` (pieces holding the columns ``x`` and ``among`` read),
    one row, or one per group of ``per`` (the group column first): what ``group_by(per).agg`` of the
    aggregates' expressions gives, with each value computed exactly."""
    a = aggregation
    frames = frames.keep(_columns, a)
    groups = _groups(frames, a.per)
    pieces = frames.keep(_piece, a.per, groups)
    del frames  # on Ray: the pieces' frames leave the object store
    counts = pieces.each(_counts)
    size, valid = (np.sum([c[i] for c in counts], axis=0) for i in (0, 1))
    kind, dtypes = _types(counts[0][2], a)
    values: dict[str, list] = {}
    orders = {name: agg for name, agg in a.aggregates.items() if not isinstance(agg, Moment)}
    if orders:
        wanted = {name: [agg.ranks(int(n), int(v)) for n, v in zip(size, valid)] for name, agg in orders.items()}
        needed = [{r for ranks in by_group if ranks is not None for r in ranks} for by_group in zip(*wanted.values())]
        found = _elements(pieces, needed, kind)
        for name, agg in orders.items():
            values[name] = [None if r is None else agg.value(int(n), int(v), tuple(found[(g, x)] for x in r))
                            for g, (r, n, v) in enumerate(zip(wanted[name], size, valid))]
    moments = {name: agg for name, agg in a.aggregates.items() if isinstance(agg, Moment)}
    if moments:
        sums = _sums(pieces, valid)
        for name, agg in moments.items():
            values[name] = [agg.value(s) for s in sums]
    table = pl.DataFrame([pl.Series(name, values[name], dtype=dtypes[name]) for name in a.aggregates])
    return table if groups is None else pl.concat([groups.to_frame(), table], how="horizontal")


# --- the passes (each runs where its piece lies) -------------------------------------------------


def _columns(frame: pl.DataFrame, a: Aggregation) -> pl.DataFrame:
    among = pl.lit(True) if a.among is None else a.among.fill_null(False)
    return frame.select(*([a.per] if a.per else []), a.x.alias(_X), among.alias(_IN))


def _distinct(frame: pl.DataFrame, per: str) -> pl.Series:
    return frame.get_column(per).unique()


def _groups(frames: Parts, per: str | None) -> pl.Series | None:
    """The groups of ``per`` in every piece, sorted (null last): the rows of the table."""
    if per is None:
        return None
    return pl.concat(frames.each(_distinct, per)).unique().sort(nulls_last=True)


def _piece(frame: pl.DataFrame, per: str | None, groups: pl.Series | None) -> _Piece:
    x = frame.get_column(_X)
    inside = frame.get_column(_IN)
    value = inside & x.is_not_null() & (x.is_not_nan() if x.dtype.is_float() else True)
    numbers = x.filter(value).to_numpy()
    if groups is None:
        size, valid = np.array([inside.sum()]), np.array([len(numbers)])
        gid = None
    else:  # replace_strict keys null, NaN and -0.0 as group_by groups them
        ids = frame.get_column(per).replace_strict(groups, pl.Series(np.arange(groups.len())), return_dtype=pl.Int64)
        size = np.bincount(ids.filter(inside).to_numpy(), minlength=groups.len())
        gid = ids.filter(value).to_numpy()
        valid = np.bincount(gid, minlength=groups.len())
    return _Piece(gid=gid, values=numbers, size=size, valid=valid, dtype=x.dtype)


def _counts(piece: _Piece) -> tuple[np.ndarray, np.ndarray, pl.DataType]:
    return piece.size, piece.valid, piece.dtype


def _keys(piece: _Piece | _Keys):
    """A piece's order keys and their groups, a chunk at a time: a whole column of keys would be a fresh
    8 bytes a value, and a cold process pays for every new page."""
    if isinstance(piece, _Keys):
        yield piece.keys, piece.gid
        return
    for at in range(0, len(piece.values), CHUNK):
        yield order_keys(piece.values[at:at + CHUNK]), None if piece.gid is None else piece.gid[at:at + CHUNK]


def _digits(piece: _Piece | _Keys, prefix: np.ndarray, active: np.ndarray, known: int, bits: int) -> np.ndarray:
    counts = np.zeros((int(active.sum()), 1 << bits), dtype=np.int64)
    for keys, gid in _keys(piece):
        counts += digit_counts(keys, gid, prefix, active, known, bits)
    return counts


def _bucket(piece: _Piece | _Keys, prefix: np.ndarray, wanted: np.ndarray, known: int):
    found = [in_buckets(keys, gid, prefix, wanted, known) for keys, gid in _keys(piece)]
    return (np.concatenate([f[0] for f in found] or [np.empty(0, np.int64)]),
            np.concatenate([f[1] for f in found] or [np.empty(0, np.uint64)]))


@dataclass(frozen=True)
class _Keys:
    """The keys of a piece still in some request's bucket, and their groups."""

    keys: np.ndarray
    gid: np.ndarray | None


def _narrowed(piece: _Piece | _Keys, prefix: np.ndarray, active: np.ndarray, known: int) -> _Keys:
    parts = [narrowed(keys, gid, prefix, active, known) for keys, gid in _keys(piece)]
    keys = np.concatenate([k for k, _ in parts] or [np.empty(0, np.uint64)])
    one_group = not parts or parts[0][1] is None
    return _Keys(keys, None if one_group else np.concatenate([g for _, g in parts]))


def _piece_sums(piece: _Piece, groups: int) -> list:
    v = piece.values
    gid = np.zeros(len(v), dtype=np.int64) if piece.gid is None else piece.gid
    if v.dtype.kind in "iu" and len(v) and np.abs(v.astype(np.float64)).max() >= 2.0 ** 53:
        out = []  # integers a float cannot hold: Python's
        for g in range(groups):
            ints = [int(i) for i in v[gid == g]]
            out.append((sum(ints), 0, sum(i * i for i in ints), 0, 0, 0))
        return out
    return exact_sums(v.astype(np.float64), gid, groups)


# --- the driver's side -------------------------------------------------------------------------


def _types(dtype: pl.DataType, a: Aggregation) -> tuple[str, dict[str, pl.DataType]]:
    """The kind of the values (NumPy's: ``f``, ``i``, ``u``) and each aggregate's dtype, as Polars gives it."""
    empty = pl.DataFrame(schema={_X: dtype})
    dtypes = empty.select(**{name: agg.expr(pl.col(_X)) for name, agg in a.aggregates.items()}).schema
    kind = "f" if dtype.is_float() else "u" if dtype.is_unsigned_integer() or dtype == pl.Boolean else "i"
    return kind, dict(dtypes)


def _elements(pieces: Parts, wanted: list[set[int]], kind: str) -> dict[tuple[int, int], Any]:
    """The value at each group's wanted ranks (from its smallest value), by radix select."""
    requests = np.array(sorted((g, r) for g, ranks in enumerate(wanted) for r in ranks), dtype=np.int64)
    if not len(requests):
        return {}
    want_g, want_r = requests[:, 0], requests[:, 1]
    first = np.searchsorted(want_g, want_g)  # a group's requests are columns 0, 1, ... of its row
    want_j = np.arange(len(requests)) - first
    groups, width = len(wanted), int(want_j.max()) + 1
    prefix = np.zeros((groups, width), dtype=np.uint64)
    rank = np.zeros((groups, width), dtype=np.int64)
    active = np.zeros((groups, width), dtype=bool)
    rank[want_g, want_j], active[want_g, want_j] = want_r, True
    keys = np.zeros((groups, width), dtype=np.uint64)
    known, candidates = 0, pieces
    while active.any():
        if known:  # the next passes read only the keys left in some bucket
            candidates = candidates.keep(_narrowed, prefix, active, known)
        g, j = np.nonzero(active)
        bits = digit_bits(len(g), known)
        counts = sum(candidates.each(_digits, prefix, active, known, bits))
        below = np.cumsum(counts, axis=1)
        digit = (below <= rank[g, j][:, None]).sum(axis=1)
        rank[g, j] -= np.where(digit > 0, below[np.arange(len(g)), np.maximum(digit - 1, 0)], 0)
        prefix[g, j] = (prefix[g, j] << np.uint64(bits)) | digit.astype(np.uint64)
        known += bits
        done = np.full(len(g), known == 64)
        keys[g[done], j[done]] = prefix[g[done], j[done]]
        fetch = np.zeros_like(active)
        left = counts[np.arange(len(g)), digit]
        small = ~done & (left[~done].sum() <= FETCH)  # every bucket at once, when they hold few keys together
        fetch[g[small], j[small]] = True
        active[g[done | small], j[done | small]] = False
        if fetch.any():
            request, key = (np.concatenate(c) for c in zip(*candidates.each(_bucket, prefix, fetch, known)))
            order = np.lexsort((key, request))  # each request's bucket, sorted, one after another
            fg, fj = np.nonzero(fetch)
            start = np.searchsorted(request[order], fg * width + fj)
            keys[fg, fj] = key[order][start + rank[fg, fj]]
    return dict(zip(zip(want_g.tolist(), want_r.tolist()), from_keys(keys[want_g, want_j], kind)))


def _sums(pieces: Parts, valid: np.ndarray) -> list[Sums]:
    """Each group's exact sums over every piece (``valid``: each group's count of values)."""
    totals = [[0, Fraction(0), Fraction(0), 0, 0] for _ in valid]
    for part in pieces.each(_piece_sums, len(valid)):
        for g, (total, base, squares, base2, plus, minus) in enumerate(part):
            t = totals[g]
            t[1] += Fraction(total) * Fraction(2) ** base
            t[2] += Fraction(squares) * Fraction(2) ** base2
            t[3] += plus
            t[4] += minus
    return [Sums(valid=int(n), total=t[1], squares=t[2], plus_inf=t[3], minus_inf=t[4]) for n, t in zip(valid, totals)]
