"""`select random(seed)`: a uniform random sample; also what a policy without `select` does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbdsl.scorers.registry import strategy
from cbdsl.scorers.select import SeedParams

if TYPE_CHECKING:  # the context classes: scorers/api.py stays off the `cbdsl check` path
    from cbdsl.scorers.api import SelectContext


@strategy("random", params=SeedParams, method="random")
def random(ctx: SelectContext):
    """A uniform random sample without replacement.

    Rows in the order of a seeded hash of their id hash, so a row's place does not depend on the others.
    """
    import numpy as np
    import polars as pl  # off the `cbdsl check` path

    return ctx.ranked(pl.Series(ctx.draw(ctx.params.seed).astype(np.float64)))
