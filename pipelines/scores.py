"""Model scores: computed in batches, cached beside the pool, joined into the plan's frame.

A score step of the plan (``Score``) names a model scorer of the registry
(``Entry.compute``). Its values are cached under the pool's ``scores/`` as
parquet, one file per key: the pool's content hash, the scorer id, its
parameters, its input expressions and the identity of its weights
(``Entry.version``). A second run with the same scores computes nothing.

Row-local scorers are computed only for the rows that reach them (the
optimizer may have run cheap filters first) and the cache grows as other
rows are asked for; population scorers (a proxy trained on the pool, k-means
over it) are computed for every row at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from cbdsl.compiler.plan import Score, pexpr_text
from cbdsl.compiler.types import BENCHMARK_FIX, BENCHMARK_KINDS, BENCHMARK_WHY
from cbdsl.scorers.registry import Entry, Params, Registry, registry as process_registry

VALUE = "value"


@dataclass
class ScoreContext:
    """What a scorer's ``compute`` gets besides its input columns."""

    params: Params
    pool: Any  # cbdsl.pipelines.pool.Pool: assets, paths
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
    from cbdsl.pipelines.execute import RunError
    from cbdsl.pipelines.pool import PoolError

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
    from cbdsl.pipelines.execute import RunError

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


def expand(e, definitions: Mapping[str, Any]) -> str:
    """An input expression with every derived column replaced by its definition, as text.

    ``let y = x * 2`` and ``let y = x * 3`` give different keys although both read ``y``.
    """
    from cbdsl.compiler.plan import Col, map_pexpr

    def sub(node):
        if isinstance(node, Col) and node.name in definitions:
            step = definitions[node.name]
            inner = getattr(step, "expr", None)
            if inner is not None:
                return Col(name=f"({expand(inner, definitions)})")
            return Col(name=json.dumps(step.model_dump(mode="json"), sort_keys=True))
        return node

    return pexpr_text(map_pexpr(e, sub))


def cache_key(pool, step: Score, entry: Entry, definitions: Mapping[str, Any] | None = None) -> str:
    params = entry.params.model_validate(step.params)
    version = entry.version(params) if entry.version is not None else ""
    named = [n for v in step.params.values() for n in (v if isinstance(v, list) else [v])]
    assets = {v: pool.card.assets[v].sha256 for v in named
              if isinstance(v, str) and v in pool.card.assets}  # a replaced asset invalidates the scores
    payload = {
        "pool": pool.content_hash, "scorer": step.scorer, "params": step.params, "assets": assets,
        "inputs": [expand(a, definitions or {}) for a in step.args], "version": version, "format": 1,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cache_path(pool, step: Score, entry: Entry, definitions: Mapping[str, Any] | None = None) -> Path:
    return Path(pool.scores_dir) / f"{step.scorer}-{cache_key(pool, step, entry, definitions)}.parquet"


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


def _compute(entry: Entry, step: Score, pool, inputs: pl.DataFrame, id_col: str, workdir: Path) -> pl.DataFrame:
    ids = inputs.get_column(id_col)
    progress = Progress(f"scoring {step.column}", inputs.height)
    from cbdsl.compiler.plan import Col

    ctx = ScoreContext(params=entry.params.model_validate(step.params), pool=pool, ids=ids,
                       device=device(), workdir=workdir, progress=progress,
                       columns=tuple(a.name if isinstance(a, Col) else None for a in step.args))
    try:
        values = entry.compute(ctx, *(inputs.get_column(f"#in{i}") for i in range(len(step.args))))
    finally:
        progress.close()
    values = values if isinstance(values, pl.Series) else pl.Series(values)
    if len(values) != inputs.height:
        raise RuntimeError(f"scorer {step.scorer} returned {len(values)} values for {inputs.height} rows")
    return pl.DataFrame({id_col: ids.cast(pl.String), VALUE: values})


def _write_cache(path: Path, frame: pl.DataFrame, id_col: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.sort(id_col).write_parquet(tmp, compression="zstd")
    os.replace(tmp, path)


def provide(frame: pl.LazyFrame, steps: Sequence[Score], pool, lower_expr, workdir: Path | None = None, *,
            definitions: Mapping[str, Any] | None = None,
            population: Callable[[Score], pl.LazyFrame] | None = None,
            registry: Registry | None = None) -> pl.LazyFrame:
    """Join each score step's column into ``frame``, computing only what the cache lacks.

    ``definitions`` maps derived columns to their steps (for the cache key);
    ``population(step)`` gives the whole pool with the columns the step's inputs
    read, for population scorers (default: the pool's own columns); ``registry`` holds the scorers
    (default: the process registry).
    """
    id_col = pool.id_column
    workdir = workdir or Path(pool.scores_dir) / "models"
    entries = registry if registry is not None else process_registry()
    for step in steps:
        entry = entries.get(step.scorer, "expr")
        if entry is None or entry.compute is None:
            raise RuntimeError(f"scorer {step.scorer} has no batch function")
        path = cache_path(pool, step, entry, definitions)
        cached = pl.read_parquet(path) if path.is_file() else None
        if entry.population:
            source = population(step) if population is not None else pool.scan()
        else:
            source = frame
        wanted = source.select(pl.col(id_col).cast(pl.String),
                               *(lower_expr(a).alias(f"#in{i}") for i, a in enumerate(step.args)))
        if cached is not None:
            wanted = wanted.join(cached.lazy().select(id_col), on=id_col, how="anti")
        missing = wanted.collect()
        if missing.height:
            fresh = _compute(entry, step, pool, missing, id_col, workdir)
            cached = fresh if cached is None else pl.concat([cached, fresh.cast(cached.schema)])
            _write_cache(path, cached, id_col)
        value = pl.col(VALUE)
        if cached.schema[VALUE].is_float():  # NaN is a missing score (DESIGN rule 9), as null is
            value = value.fill_nan(None)
        scores = cached.lazy().select(id_col, value.alias(step.column))
        frame = frame.with_columns(pl.col(id_col).cast(pl.String).alias("#idstr")).join(
            scores.rename({id_col: "#idstr"}), on="#idstr", how="left", maintain_order="left"
        ).drop("#idstr")
    return frame
