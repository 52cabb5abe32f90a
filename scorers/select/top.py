"""`select top x`: the rows with the largest x."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbdsl.scorers.registry import Input, strategy

if TYPE_CHECKING:  # the context classes: scorers/api.py stays off the `cbdsl check` path
    from cbdsl.scorers.api import SelectContext


@strategy("top", inputs=[Input("x", "number")], prefers="high")
def top(ctx: SelectContext):
    """Keep the rows with the largest x.

    Ties go by id hash; a null or NaN x is picked last (DESIGN.md, semantics 9).
    """
    import polars as pl  # off the `cbdsl check` path

    return ctx.ranked(-pl.col(ctx.args[0]).cast(pl.Float64))
