"""`dedup minhash(text, ...)`: near-duplicate texts by MinHash LSH over word n-grams (Lee et al., 2022)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from cbdsl.scorers.registry import Input, Params, dedup_method

if TYPE_CHECKING:  # the context classes: scorers/api.py stays off the `cbdsl check` path
    from cbdsl.scorers.api import DedupContext


class MinhashParams(Params):
    threshold: float = Field(default=0.8, gt=0, le=1, description="estimated Jaccard similarity at which two texts are duplicates")
    num_perm: int = Field(default=128, ge=1, le=16384, description="number of hash permutations in each signature")
    ngram: int = Field(default=5, ge=1, le=64, description="words per shingle")
    bands: int | None = Field(default=None, ge=1, description="LSH bands (must divide num_perm); chosen from threshold when absent")

    @model_validator(mode="after")
    def _bands_divide(self) -> MinhashParams:
        if self.bands is not None and self.num_perm % self.bands:
            raise PydanticCustomError(
                "bands_divide", "`bands` ({bands}) must divide `num_perm` ({num_perm})",
                {"bands": self.bands, "num_perm": self.num_perm},
            )
        return self


def _signatures(ctx: DedupContext):
    """The rows' MinHash signatures (uint64[n, num_perm]) and the LSH shape (bands, rows a band)."""
    import cbdsl.pipelines.engine.kernels.minhash as kernels  # numba: off the `cbdsl check` path

    p: MinhashParams = ctx.params
    offsets, shingles = kernels.text_shingles(ctx.arg(0).fill_null(""), ngram=p.ngram)
    signatures = kernels.minhash_signatures(offsets, shingles, num_perm=p.num_perm, seed=0)
    if p.bands:
        return signatures, (p.bands, p.num_perm // p.bands)
    return signatures, kernels.minhash_params(p.threshold, p.num_perm)


def _bands(ctx: DedupContext):
    """Each LSH band's signature values, a column per value: rows equal in every value of a band meet."""
    import polars as pl

    signatures, (bands, rows) = _signatures(ctx)
    return [pl.DataFrame(signatures[:, b * rows:(b + 1) * rows], schema=[f"v{q}" for q in range(rows)])
            for b in range(bands)]


@dedup_method("minhash", inputs=[Input("text", "str")], params=MinhashParams, cost="cpu_model",
              method="minhash_dedup", bands=_bands)
def minhash(ctx: DedupContext):
    """Near-duplicate texts by MinHash LSH over word n-grams.

    Rows whose signatures agree on every row of some LSH band are one group (transitively); the
    group's first row, the best by the select score, stays. A null text counts as the empty text.
    """
    import numpy as np
    import polars as pl

    import cbdsl.pipelines.engine.kernels.minhash as kernels  # numba: off the `cbdsl check` path

    signatures, (bands, rows) = _signatures(ctx)
    groups = kernels.lsh_groups(signatures, bands, rows)
    # group id = smallest row index of the group = its best row (rows are in preference order)
    return ctx.rows.filter(pl.Series(groups == np.arange(len(groups))))
