"""`select weighted(w, seed)`: sampling without replacement with probability proportional to w (DSIR's resampling)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbdsl.scorers.registry import Input, strategy
from cbdsl.scorers.select import SeedParams

if TYPE_CHECKING:  # the context classes: scorers/api.py stays off the `cbdsl check` path
    from cbdsl.scorers.api import SelectContext


@strategy("weighted", inputs=[Input("weight", "number")], params=SeedParams, method="dsir", prefers="high")
def weighted(ctx: SelectContext):
    """A random sample without replacement, with probability proportional to the weight.

    Gumbel-top-k: each row's key is log(w) plus a Gumbel draw seeded by its id hash, and the largest
    keys are picked, which is sampling without replacement in proportion to w. A row whose weight is
    not positive (or null) is picked after every other.
    """
    import numpy as np
    import polars as pl  # off the `cbdsl check` path

    u = (ctx.draw(ctx.params.seed) >> np.uint64(11)).astype(np.float64) * 2.0**-53 + 2.0**-54
    gumbel = -np.log(-np.log(u)) if len(u) else np.zeros(0)
    w = ctx.arg(0).cast(pl.Float64).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(w > 0, np.log(w) + gumbel, -np.inf)
    return ctx.ranked(pl.Series(-k))
