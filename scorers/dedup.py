"""Dedup methods: which rows count as duplicates (`dedup METHOD(...)`).

``exact(*cols)`` groups rows with equal values of the columns;
``minhash(text, ...)`` groups texts whose estimated Jaccard similarity of
word n-grams is at least ``threshold`` (Lee et al., 2022); ``semantic(emb,
...)`` groups rows whose embeddings lie within cosine distance ``eps`` of
each other inside k-means clusters (SemDeDup, Abbas et al., 2023). Each
group keeps one row (DESIGN.md: the best by the `select` score, ties by id
hash, unless the method's ``keep`` says otherwise).

These are steps of the plan, lowered by the planner (with kernels for the
near-duplicate search), so their entries have no ``lower`` function.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from cbdsl.compiler.types import UNKNOWN
from cbdsl.scorers.registry import Entry, Input, Params, register


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


class SemanticParams(Params):
    eps: float = Field(default=0.05, gt=0, lt=1, description="cosine distance (1 - similarity) under which two rows are duplicates")
    clusters: int | None = Field(default=None, ge=1, description="k-means clusters to search within; chosen from the pool size when absent")
    keep: Literal["hard", "easy", "random"] = Field(
        default="hard", description="which row of a duplicate group stays: farthest from its cluster centroid, nearest, or random"
    )
    seed: int = Field(default=0, ge=0, lt=2**31, description="seed of the k-means initialisation and of keep=\"random\"")


for _entry in (
    Entry("exact", "dedup", inputs=(Input("cols", "key", variadic=True, min_count=1),), output=UNKNOWN,
          method="exact_dedup", summary="Rows with equal values of all the given columns are duplicates."),
    Entry("minhash", "dedup", inputs=(Input("text", "str"),), params=MinhashParams, output=UNKNOWN,
          cost="cpu_model", method="minhash_dedup",
          summary="Near-duplicate texts by MinHash LSH over word n-grams."),
    Entry("semantic", "dedup", inputs=(Input("embedding", "embedding"),), params=SemanticParams, output=UNKNOWN,
          cost="cpu_model", method="semdedup",
          summary="Semantic duplicates: embeddings within cosine distance eps, searched inside k-means clusters."),
):
    register(_entry)
