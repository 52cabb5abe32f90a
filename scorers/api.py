"""What a scorer gets from the engine, and the errors it may raise: the scorer API.

A model scorer's ``compute(ctx, *inputs)`` receives a :class:`ScoreContext`
(its parameters, the pool, the ids being scored, the device, a workdir and a
progress callback). A policy that checks but cannot run what it asks for (a
missing asset, too few rows) raises :class:`RunError`, whose message and hints
reach the user as they are. Scorers import this module, never the engine.
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
