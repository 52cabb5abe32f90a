"""What a scorer gets from the engine, and the errors it may raise: the scorer API.

A model scorer's ``compute(ctx, *inputs)`` receives a :class:`ScoreContext`
(its parameters, the pool, the ids being scored, the device, a workdir and a
progress callback). A dedup method's or a select strategy's ``run(ctx)``
receives a :class:`DedupContext` or a :class:`SelectContext` (the rows, the
columns of its evaluated inputs, its parameters) and returns rows. A policy
that checks but cannot run what it asks for (a missing asset, too few rows)
raises :class:`RunError`, whose message and hints reach the user as they
are. Scorers import this module, never the engine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbdsl.compiler.signatures import Params
from cbdsl.compiler.types import BENCHMARK_FIX, BENCHMARK_KINDS, BENCHMARK_WHY
from cbdsl.pipelines.data.errors import PoolError

if TYPE_CHECKING:
    import numpy as np
    import polars as pl


class RunError(Exception):
    """A policy that checks but cannot select what it asks for (a budget shortfall, a missing asset)."""

    def __init__(self, message: str, hints: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.hints = hints


@dataclass
class ScoreContext:
    """What a scorer's ``compute`` gets besides its input columns."""

    params: Params
    pool: Any  # cbdsl.pipelines.data.pool.Pool: assets, paths
    ids: pl.Series  # the ids of the rows being scored, aligned with the inputs
    device: str = "cpu"
    workdir: Path = field(default_factory=lambda: Path("."))  # where a scorer keeps models it trains
    progress: Callable[[int], None] = lambda n: None  # advance by n rows
    columns: tuple[str | None, ...] = ()  # the pool column behind each input, None for an expression

    def asset(self, name: str, kinds: Sequence[str] = (), who: str = "this scorer"):
        """A pool asset a parameter names, parsed (see :func:`read_asset`)."""
        return read_asset(self.pool, name, kinds, who)

    def expect(self, total: int) -> None:
        """Say how many units ``progress`` will count in all (rows x passes, for a scorer that trains)."""
        setter = getattr(self.progress, "expect", None)
        if setter is not None:
            setter(total)


def read_asset(pool, name: str, kinds: Sequence[str] = (), who: str = "this scorer"):
    """A pool asset a parameter names, parsed (a model asset: its path); a RunError saying where, why and what
    to do when it is missing or of another kind than ``kinds`` (an ``eval`` or ``truth`` asset is never a
    policy's input, whatever ``kinds`` says)."""
    if pool is None:
        raise RunError(f"{who} names the asset `{name}`, but no pool is open to look it up in",
                       ("run the policy against a pool (`cbdsl run POLICY --pool POOL`)",))
    pool_asset(pool, name, kinds, who)
    try:
        return pool.read_asset(name)
    except PoolError as err:
        raise RunError(str(err), ((err.hint,) if err.hint else ())) from err


def pool_asset(pool, name: str, kinds: Sequence[str], who: str):
    """The card entry of the asset ``name`` that ``who`` (e.g. "`dsir` parameter `target`") needs, of one of
    ``kinds`` (any policy-readable kind when empty), or a RunError with the fix."""
    info = pool.card.assets.get(name)
    wanted = " or ".join(f"`{k}`" for k in kinds) or "any"
    if info is None:
        known = ", ".join(f"`{a}` ({i.kind})" for a, i in pool.card.assets.items()
                          if i.kind not in BENCHMARK_KINDS) or "none"
        raise RunError(f"{who} names the asset `{name}`, which pool `{pool.name}` does not have (its assets: {known})",
                       (f"register it with `cbdsl pool add-asset {pool.name} {name} FILE"
                        + (f" --kind {kinds[0]}`" if kinds else "`"),))
    if info.kind in BENCHMARK_KINDS:
        raise RunError(f"{who} names `{name}`, an asset of kind `{info.kind}`: {BENCHMARK_WHY}",
                       (BENCHMARK_FIX,))
    if kinds and info.kind not in kinds:
        raise RunError(f"{who} needs an asset of kind {wanted}, but `{name}` is of kind `{info.kind}`",
                       (f"register the file with `cbdsl pool add-asset {pool.name} NAME FILE --kind {kinds[0]}`",))
    return info


#: Asset kinds ``id in asset("name")`` reads: a list of ids, or the first column of a table.
ID_LIST_KINDS = ("ids", "labels", "table", "corpus")


def asset_ids(pool, name: str) -> list[str]:
    """The values of ``asset("name")`` in ``x in asset("name")``: the ids, or a table's first column, as strings."""
    import polars as pl  # off the `cbdsl check` path, which imports the scorer modules

    value = read_asset(pool, name, ID_LIST_KINDS, f'`asset("{name}")`')
    if isinstance(value, pl.DataFrame):
        value = value.get_column(value.columns[0])
    return [str(v) for v in value.to_list()]


def device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu`` (torch is imported only here, and only for model scorers)."""
    forced = os.environ.get("CBDSL_DEVICE")
    if forced:
        return forced
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


class Progress:
    """A rich progress bar with rows/s and ETA, shown only for work that takes more than a second.

    It draws on stderr, so ``--json`` output on stdout stays clean, and only where rich finds a terminal
    (``TTY_COMPATIBLE=1 TTY_INTERACTIVE=1`` force one); ``CBDSL_PROGRESS=0`` turns it off."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done = label, total, 0
        self.start = time.monotonic()
        self._bar = None
        self._task = None

    def expect(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def __call__(self, n: int) -> None:
        self.done += n
        if self._bar is None and time.monotonic() - self.start > 1.0 and os.environ.get("CBDSL_PROGRESS", "1") != "0":
            from rich.console import Console
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress as RichProgress, TaskProgressColumn, TextColumn,
                TimeRemainingColumn,
            )

            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[rate]} rows/s"), TimeRemainingColumn(), transient=True,
                console=Console(stderr=True),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, rate="-")
        if self._bar is not None:
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            self._bar.update(self._task, completed=self.done, rate=f"{rate:,.0f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --- dedup methods and select strategies ---------------------------------------------------


@dataclass(frozen=True)
class RowsContext:
    """What a dedup method's or a select strategy's ``run`` gets: rows that survived the filters, and its call.

    ``rows`` has the id column (``id``), the stable id hash (``hash``, u64) and one column per
    positional input of the call, evaluated over the filter-stage population: ``args[i]`` names the
    column of the i-th input (``x`` of `select top x`; every column of `dedup exact(a, b)`).
    ``params`` is the entry's parameter model, validated. Other columns may be there for the engine:
    keep them, and never rely on them.
    """

    rows: pl.DataFrame
    args: tuple[str, ...]
    params: Params
    id: str
    hash: str
    pool: Any = None  # cbdsl.pipelines.data.pool.Pool, for a method that reads an asset (ctx.asset)

    def arg(self, i: int = 0) -> pl.Series:
        """The values of the i-th input, aligned with ``rows``."""
        return self.rows.get_column(self.args[i])

    def draw(self, seed: int) -> np.ndarray:
        """A seeded u64 per row, a function of the row's id hash alone (DESIGN.md, semantics 7: every
        random choice is seeded and does not depend on the row order)."""
        import numpy as np

        import cbdsl.pipelines.engine.kernels.hashing as hashing  # numba: off the `cbdsl check` path

        h = self.rows.get_column(self.hash).to_numpy()
        return hashing.hash_u64(h, seed) if len(h) else np.zeros(0, dtype=np.uint64)

    def embeddings(self, values: pl.Series | None = None) -> np.ndarray:
        """The first input's embeddings (or those of ``values``, a column of the same kind: say, of the
        rows reordered) as a float32 [n, d] matrix; a RunError for a column that holds none."""
        import numpy as np
        import polars as pl  # off the `cbdsl check` path

        values = self.arg(0) if values is None else values
        if values.dtype == pl.Array:
            return values.to_numpy().astype(np.float32)
        if values.dtype == pl.List:
            return np.asarray(values.to_list(), dtype=np.float32)
        raise RunError(f"expected an embedding column, got {values.dtype}")

    def asset(self, name: str, kinds: Sequence[str] = (), who: str = "this method"):
        """A pool asset a parameter names, parsed (see :func:`read_asset`)."""
        return read_asset(self.pool, name, kinds, who)


@dataclass(frozen=True)
class DedupContext(RowsContext):
    """What a dedup method's ``run(ctx) -> pl.DataFrame`` gets; it returns the rows it keeps.

    ``rows`` are the survivors in preference order: the best by the select score first (see
    :attr:`~cbdsl.compiler.signatures.Entry.prefers`), ties by id hash. ``run`` returns a subset of
    them in the same order, one row per duplicate group; DESIGN.md (semantics 3) keeps the first,
    the best, unless the method says otherwise (`dedup semantic(keep=...)`). The engine drops the
    input columns afterwards.
    """


def in_pick_order(frame: "pl.DataFrame", key: str, hash: str, id: str) -> "pl.DataFrame":
    """``frame`` sorted by ``(key, hash, id)``, a null key last: the order of every pick.

    Sorted by the float key alone when it has no tie, which is then the same order: a random key
    rarely ties, and one float column sorts much faster than the three, whose last compares strings."""
    by_key = frame.sort(key, nulls_last=True)
    k = by_key.get_column(key)
    if k.null_count() == 0 and (len(k) < 2 or bool((k.slice(1) > k.slice(0, len(k) - 1)).all())):
        return by_key  # strictly increasing (a NaN or an infinity twice is not): no tie to break
    return frame.sort([key, hash, id], nulls_last=True)


@dataclass(frozen=True)
class SelectContext(RowsContext):
    """What a select strategy's ``run(ctx) -> pl.DataFrame`` gets: one mix group's rows (every
    survivor of the dedup when there is no `mix`), and how much of the budget the group gets.

    ``run`` returns the rows in pick order, the first pick first, each with the column ``key``
    (Float64, lower is picked first): the engine takes the first ``quota`` rows (with a token budget,
    the first rows whose tokens fit in ``quota``) and ranks the picks of every group by
    ``(key, hash, id)``. It may return only the rows it picks (`kcenter` stops at ``quota``).
    A strategy that orders rows by a key returns :meth:`ranked`.
    """

    quota: int = 0  # rows, or tokens with a token budget (then `tokens` names the rows' token counts)
    key: str = "#key"
    tokens: str | None = None

    def ranked(self, key: pl.Expr | pl.Series) -> pl.DataFrame:
        """``rows`` with ``key`` (lower first) as the key column, in pick order: by key, then id hash,
        then id; a null key sorts last."""
        import polars as pl  # off the `cbdsl check` path

        return in_pick_order(self.rows.with_columns(key.cast(pl.Float64).alias(self.key)), self.key, self.hash, self.id)

    def shuffled(self, seed: int) -> pl.DataFrame:
        """``rows`` with a seeded random key (:meth:`draw` as a float), in their given order."""
        import numpy as np
        import polars as pl  # off the `cbdsl check` path

        return self.rows.with_columns(pl.Series(self.key, self.draw(seed).astype(np.float64)))
