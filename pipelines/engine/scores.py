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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from cbdsl.compiler.ir import Col, Score, map_pexpr, pexpr_text
from cbdsl.scorers.api import Progress, ScoreContext, device
from cbdsl.compiler.signatures import Registry
from cbdsl.scorers.registry import Entry

VALUE = "value"


def expand(e, definitions: Mapping[str, Any]) -> str:
    """An input expression with every derived column replaced by its definition, as text.

    ``let y = x * 2`` and ``let y = x * 3`` give different keys although both read ``y``.
    """
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


def compute_scores(entry: Entry, step: Score, pool, inputs: pl.DataFrame, id_col: str, workdir: Path) -> pl.DataFrame:
    """``step``'s values for the rows of ``inputs`` (:func:`score_inputs`): the frame (id, value) its cache holds."""
    ids = inputs.get_column(id_col)
    progress = Progress(f"scoring {step.column}", inputs.height)

    ctx = ScoreContext(params=entry.params.model_validate(step.params), pool=pool, ids=ids,
                       device=device(), workdir=workdir, progress=progress,
                       columns=tuple(a.name if isinstance(a, Col) else None for a in step.args))
    try:
        values = entry.compute(ctx, *(_input(pool, a, inputs.get_column(f"#in{i}")) for i, a in enumerate(step.args)))
    finally:
        progress.close()
    values = values if isinstance(values, pl.Series) else pl.Series(values)
    if len(values) != inputs.height:
        raise RuntimeError(f"scorer {step.scorer} returned {len(values)} values for {inputs.height} rows")
    return pl.DataFrame({id_col: ids.cast(pl.String), VALUE: values})


def _input(pool, arg, values: pl.Series) -> pl.Series:
    """A scorer's input column; an ``image`` column (paths into the pool's image folder) as the images' bytes."""
    if isinstance(arg, Col) and pool.schema.get(arg.name) == "image":
        return pl.Series(values.name, pool.read_images(values.to_list(), column=arg.name), dtype=pl.Binary)
    return values


def _write_cache(path: Path, frame: pl.DataFrame, id_col: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.sort(id_col).write_parquet(tmp, compression="zstd")
    os.replace(tmp, path)


def provide(frame: pl.LazyFrame, steps: Sequence[Score], pool, lower_expr, workdir: Path | None = None, *,
            definitions: Mapping[str, Any] | None = None,
            population: Callable[[Score], pl.LazyFrame] | None = None, registry: Registry) -> pl.LazyFrame:
    """Join each score step's column into ``frame``, computing only what the cache lacks.

    ``definitions`` maps derived columns to their steps (for the cache key);
    ``population(step)`` gives the whole pool with the columns the step's inputs
    read, for population scorers (default: the pool's own columns); ``registry`` holds the scorers (the one
    the plan was lowered with).
    """
    for step in steps:
        entry = scorer(registry, step)
        if entry.population:
            source = population(step) if population is not None else pool.scan()
        else:
            source = frame
        cached = ensure(step, pool, score_inputs(source, step, pool.id_column, lower_expr), registry,
                        definitions=definitions, workdir=workdir)
        frame = join_scores(frame, step, cached.lazy(), pool.id_column)
    return frame


def scorer(registry: Registry, step: Score) -> Entry:
    """The registry entry that computes ``step``."""
    entry = registry.get(step.scorer, "expr")
    if entry is None or entry.compute is None:
        raise RuntimeError(f"scorer {step.scorer} has no batch function")
    return entry


def score_inputs(frame: pl.LazyFrame, step: Score, id_col: str, lower_expr) -> pl.LazyFrame:
    """What a scorer reads from ``frame``: the id (as a string) and its inputs as ``#in0``, ``#in1``, ..."""
    inputs = [lower_expr(a).alias(f"#in{i}") for i, a in enumerate(step.args)]
    return frame.select(pl.col(id_col).cast(pl.String), *inputs)


def ensure(step: Score, pool, wanted: pl.LazyFrame, registry: Registry, *,
           definitions: Mapping[str, Any] | None = None, workdir: Path | None = None,
           compute: Callable[..., pl.DataFrame] | None = None) -> pl.DataFrame:
    """``step``'s cache, computing and writing the rows of ``wanted`` (:func:`score_inputs`) it lacks first, with
    ``compute`` (:func:`compute_scores`'s signature; default: it, in this process)."""
    id_col = pool.id_column
    entry = scorer(registry, step)
    path = cache_path(pool, step, entry, definitions)
    cached = pl.read_parquet(path) if path.is_file() else None
    if cached is not None:
        wanted = wanted.join(cached.lazy().select(id_col), on=id_col, how="anti")
    missing = wanted.collect()
    if missing.height:
        fresh = (compute or compute_scores)(entry, step, pool, missing, id_col,
                                           workdir or Path(pool.scores_dir) / "models")
        cached = fresh if cached is None else pl.concat([cached, fresh.cast(cached.schema)])
        _write_cache(path, cached, id_col)
    return cached


def join_scores(frame: pl.LazyFrame, step: Score, cached: pl.LazyFrame, id_col: str) -> pl.LazyFrame:
    """``frame`` with ``step``'s column from its cache (``id``, ``value``), in ``frame``'s row order; NaN is a
    missing score (DESIGN rule 9), as null is."""
    value = pl.col(VALUE)
    if cached.collect_schema()[VALUE].is_float():
        value = value.fill_nan(None)
    scores = cached.select(pl.col(id_col).alias("#idstr"), value.alias(step.column))
    return frame.with_columns(pl.col(id_col).cast(pl.String).alias("#idstr")).join(
        scores, on="#idstr", how="left", maintain_order="left"
    ).drop("#idstr")
