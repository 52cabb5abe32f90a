"""`select stratified(col)`: an equal share of each group of a column."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbdsl.scorers.registry import Input, strategy
from cbdsl.scorers.select import SeedParams

if TYPE_CHECKING:  # the context classes: scorers/api.py stays off the `cbdsl check` path
    from cbdsl.scorers.api import SelectContext


@strategy("stratified", inputs=[Input("group", "column")], params=SeedParams)
def stratified(ctx: SelectContext):
    """An equal share from each group of a column (as many as a small group has).

    Water-filled when a stratum is small, random within each (the seeded order); a null value is a
    stratum of its own. Returns each stratum's picks in turn, the key counting within the stratum.
    """
    import numpy as np
    import polars as pl

    from cbdsl.pipelines.engine.kernels.quotas import allocate_quotas  # numba: off the `cbdsl check` path

    rows = ctx.shuffled(ctx.params.seed)
    k = ctx.quota
    if k == 0 or rows.height == 0:
        return rows.head(0)
    rows = rows.with_columns(pl.col(ctx.args[0]).cast(pl.String).fill_null("(null)").alias("#stratum"))
    strata = sorted(rows["#stratum"].unique().to_list())
    counts = dict(rows.group_by("#stratum").len().iter_rows())
    alloc = allocate_quotas(np.ones(len(strata)), np.array([counts[x] for x in strata], dtype=np.int64), k)
    parts = []
    for x, q in zip(strata, alloc.quota):
        part = rows.filter(pl.col("#stratum") == x).sort([ctx.key, ctx.hash]).head(int(q))
        parts.append(part.with_columns(pl.int_range(pl.len()).cast(pl.Float64).alias(ctx.key)))
    return pl.concat(parts).drop("#stratum")
