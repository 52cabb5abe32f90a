"""`dedup exact(*cols)`: rows with equal values of all the given columns are duplicates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbdsl.scorers.registry import Input, dedup_method

if TYPE_CHECKING:  # the context classes: scorers/api.py stays off the `cbdsl check` path
    from cbdsl.scorers.api import DedupContext


def _bands(ctx: DedupContext):
    """One band: the inputs themselves (equal in all of them is a duplicate; nulls equal, as in ``unique``)."""
    return [ctx.rows.select(list(ctx.args))]


@dedup_method("exact", inputs=[Input("cols", "key", variadic=True, min_count=1)], method="exact_dedup",
              bands=_bands)
def exact(ctx: DedupContext):
    """Rows with equal values of all the given columns are duplicates.

    The first row of each group stays: the best by the select score (the rows come in preference order).
    """
    return ctx.rows.unique(subset=list(ctx.args), keep="first", maintain_order=True)
