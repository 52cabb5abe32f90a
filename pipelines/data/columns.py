"""What a card says of a frame's columns: each column's type name, and its statistics.

The type name is the checker's word for a Polars dtype (``TypeName`` of
:mod:`cbdsl.pipelines.data.card`); the statistics are what agents read in
POOL.md before they write a policy (null counts, ranges, quantiles, value
counts), computed in one pass over the frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import polars as pl

QUANTILES = (0.01, 0.5, 0.99)
MAX_VALUE_COUNTS = 50
EXACT_DISTINCT_ROWS = 2_000_000  # above this, distinct counts are HyperLogLog estimates


def type_name(dtype: pl.DataType) -> str:
    """The checker's type name for a Polars dtype ("any" when the DSL has no word for it)."""
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return "str"
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_float() or dtype.is_decimal():
        return "float"
    if dtype == pl.Binary:
        return "binary"
    if isinstance(dtype, pl.Array) and len(dtype.shape) == 1 and dtype.inner.is_float():
        return "embedding"
    if isinstance(dtype, pl.List) and dtype.inner == pl.String:
        return "list[str]"
    return "any"


def _json_number(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def column_stats(frame: pl.DataFrame, schema: Mapping[str, str], id_column: str | None = None
                 ) -> dict[str, dict[str, Any]]:
    """Per-column statistics for the card, computed in one pass over the frame.

    Every column: ``null_count``. Numbers: min, max, mean, std, quantiles
    (0.01/0.5/0.99; NaN excluded and counted in ``nan_count``). Strings: mean,
    min and max length in characters, ``distinct`` (a HyperLogLog estimate
    above 2M rows, flagged by ``distinct_is_estimate``), and ``value_counts``
    when there are at most 50 distinct values (never for the id column). Embeddings: ``dim``. Lists:
    mean length. Binary: mean, min and max size in bytes.
    """
    rows = frame.height
    exprs: list[pl.Expr] = []
    plans: dict[str, list[str]] = {}

    def add(col: str, key: str, expr: pl.Expr) -> None:
        exprs.append(expr.alias(f"{col}\x00{key}"))
        plans.setdefault(col, []).append(key)

    for col, kind in schema.items():
        c = pl.col(col)
        add(col, "null_count", c.null_count())
        if kind in ("int", "float"):
            if kind == "float":
                c = c.cast(pl.Float64)
                add(col, "nan_count", c.is_nan().sum())
                c = c.fill_nan(None)
            add(col, "min", c.min())
            add(col, "max", c.max())
            add(col, "mean", c.cast(pl.Float64).mean())
            add(col, "std", c.cast(pl.Float64).std())
            for q in QUANTILES:
                add(col, f"q{q}", c.cast(pl.Float64).quantile(q, interpolation="linear"))
        elif kind == "bool":
            add(col, "true_count", c.sum())
        elif kind == "image":
            add(col, "mean_length", c.cast(pl.String).str.len_chars().mean())
        elif kind == "str":
            length = c.cast(pl.String).str.len_chars()
            add(col, "mean_length", length.mean())
            add(col, "min_length", length.min())
            add(col, "max_length", length.max())
            nonnull = c.cast(pl.String).drop_nulls()
            add(col, "distinct", nonnull.n_unique() if rows <= EXACT_DISTINCT_ROWS else nonnull.approx_n_unique())
        elif kind == "list[str]":
            add(col, "mean_items", c.list.len().mean())
        elif kind == "binary":
            size = c.bin.size()
            add(col, "mean_bytes", size.mean())
            add(col, "min_bytes", size.min())
            add(col, "max_bytes", size.max())

    values = frame.select(exprs).row(0) if exprs else ()
    flat = dict(zip([e.meta.output_name() for e in exprs], values, strict=True))
    stats: dict[str, dict[str, Any]] = {}
    for col, keys in plans.items():
        kind = schema[col]
        entry: dict[str, Any] = {}
        quantiles: dict[str, Any] = {}
        for key in keys:
            value = _json_number(flat[f"{col}\x00{key}"])
            if key.startswith("q"):
                quantiles[key[1:]] = value
            else:
                entry[key] = value
        if quantiles:
            entry["quantiles"] = quantiles
        if kind == "int":
            for key in ("min", "max"):
                if entry.get(key) is not None:
                    entry[key] = int(entry[key])
        if kind == "str":
            entry["distinct_is_estimate"] = rows > EXACT_DISTINCT_ROWS
            if col != id_column and entry["distinct"] is not None and entry["distinct"] <= MAX_VALUE_COUNTS + 10:
                counts = (frame.get_column(col).cast(pl.String).drop_nulls().value_counts(name="n")
                          .sort(["n", col], descending=[True, False]))
                if counts.height <= MAX_VALUE_COUNTS:
                    entry["distinct"] = counts.height
                    entry["distinct_is_estimate"] = False
                    entry["value_counts"] = dict(zip(counts[col].to_list(), counts["n"].to_list(), strict=True))
        if kind == "embedding":
            entry["dim"] = int(frame.schema[col].shape[0])
        stats[col] = entry
    return stats
