"""`select deita(score, emb, threshold=0.9)`: DEITA's score-first, diversity-aware selection (Liu et al., ICLR 2024).

DEITA (hkust-nlp/deita, ``IterativeFilter.filter``) sorts the pool by score,
best first, and walks it: a row is taken unless its cosine similarity to a
row already taken is above the threshold (0.9 in the paper and its scripts;
a row exactly at the threshold is taken), until the budget is met. The
greedy runs in :mod:`cbdsl.pipelines.engine.kernels.deita`.

In cbdsl: ties in the score go by id hash, then id, as `top` orders them; a
null score is walked last (DESIGN.md, semantics 9). A row without an
embedding (null, or holding NaN or an infinite value) is never taken: it has
no similarity to compare. When the rows run out before the group's quota,
DEITA stops, and so does this strategy: it returns fewer rows, and the run
reports the shortfall as a warning (the selection is then smaller than the
budget, which `cbdsl submit` refuses in a sandbox: raise `threshold`, or
lower the budget). With a token budget the walk goes on until the quota's
number of rows (each row has at least one token), and the engine cuts it
where the tokens run out: the greedy is prefix stable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from cbdsl.scorers.registry import Input, Params, strategy

if TYPE_CHECKING:  # the context classes: scorers/api.py stays off the `cbdsl check` path
    from cbdsl.scorers.api import SelectContext


class DeitaParams(Params):
    threshold: float = Field(default=0.9, ge=-1, le=1,
                             description="a row is skipped when its cosine similarity to a row already taken is above "
                                         "this (DEITA: 0.9); a cosine, between -1 and 1")


@strategy("deita", inputs=[Input("score", "number"), Input("embedding", "embedding")], params=DeitaParams,
          cost="cpu_model", method="deita", prefers="high")
def deita(ctx: SelectContext):
    """Walk the rows by score, best first, taking each one not too similar to those taken (DEITA).

    Returns the picks in pick order (at most ``quota``; fewer when no other row passes the threshold).
    """
    import numpy as np
    import polars as pl

    import cbdsl.pipelines.engine.kernels.deita as kernels  # numba: off the `cbdsl check` path

    score, emb = ctx.args
    rows = ctx.ranked(-pl.col(score).cast(pl.Float64).fill_nan(None))
    if ctx.quota == 0 or rows.height == 0:
        return rows.head(0)
    rows = rows.filter(pl.col(emb).is_not_null())
    x = ctx.embeddings(rows.get_column(emb)) if rows.height else np.zeros((0, 0), np.float32)
    usable = np.isfinite(x).all(axis=1)
    if not usable.all():
        rows, x = rows.filter(pl.Series(usable)), x[usable]
    picks = kernels.deita_greedy(np.ascontiguousarray(x, dtype=np.float32), min(ctx.quota, rows.height),
                                 ctx.params.threshold)
    return rows[picks].with_columns(pl.Series(ctx.key, np.arange(len(picks), dtype=np.float64)))
