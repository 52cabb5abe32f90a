"""`select kcenter(emb, seed)`: the greedy k-center core-set (Sener & Savarese, 2018)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbdsl.scorers.registry import Input, strategy
from cbdsl.scorers.select import SeedParams

if TYPE_CHECKING:  # the context classes: scorers/api.py stays off the `cbdsl check` path
    from cbdsl.scorers.api import SelectContext


@strategy("kcenter", inputs=[Input("embedding", "embedding")], params=SeedParams, cost="cpu_model",
          method="kcenter")
def kcenter(ctx: SelectContext):
    """Greedy k-center: each pick is the row farthest from those already picked.

    The first center is the first row of the seeded random order; returns the ``quota`` picks in pick order.
    """
    import numpy as np
    import polars as pl

    import cbdsl.pipelines.engine.kernels.kcenter as kernels  # numba: off the `cbdsl check` path

    rows = ctx.shuffled(ctx.params.seed)
    if ctx.quota == 0 or rows.height == 0:
        return rows.head(0)
    rows = rows.sort([ctx.key, ctx.hash])  # the seeded order: the first row is the first center
    emb = ctx.embeddings(rows.get_column(ctx.args[0]))
    picks = kernels.kcenter_greedy(np.ascontiguousarray(emb, dtype=np.float32), ctx.quota, 0)
    order = np.empty(rows.height, dtype=np.float64)
    order.fill(np.inf)
    order[picks] = np.arange(len(picks))
    return rows.with_columns(pl.Series(ctx.key, order)).filter(pl.col(ctx.key).is_finite()).sort(ctx.key)
