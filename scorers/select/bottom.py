"""`select bottom x`: the rows with the smallest x."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbdsl.scorers.registry import Input, strategy

if TYPE_CHECKING:  # the context classes: scorers/api.py stays off the `cbdsl check` path
    from cbdsl.scorers.api import SelectContext


@strategy("bottom", inputs=[Input("x", "number")], prefers="low")
def bottom(ctx: SelectContext):
    """Keep the rows with the smallest x.

    Ties go by id hash; a null x is picked last.
    """
    import polars as pl  # off the `cbdsl check` path

    return ctx.ranked(pl.col(ctx.args[0]).cast(pl.Float64))
