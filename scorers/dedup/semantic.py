"""`dedup semantic(embedding, ...)`: SemDeDup (Abbas et al., 2023), duplicates by cosine distance within k-means clusters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from cbdsl.scorers.registry import Input, Params, dedup_method

if TYPE_CHECKING:  # the context classes: scorers/api.py stays off the `cbdsl check` path
    from cbdsl.scorers.api import DedupContext


class SemanticParams(Params):
    eps: float = Field(default=0.05, gt=0, lt=1, description="cosine distance (1 - similarity) under which two rows are duplicates")
    clusters: int | None = Field(default=None, ge=1, description="k-means clusters to search within; chosen from the pool size when absent")
    keep: Literal["hard", "easy", "random"] = Field(
        default="hard", description="which row of a duplicate group stays: farthest from its cluster centroid, nearest, or random"
    )
    seed: int = Field(default=0, ge=0, lt=2**31, description="seed of the k-means initialisation and of keep=\"random\"")


@dedup_method("semantic", inputs=[Input("embedding", "embedding")], params=SemanticParams, cost="cpu_model",
              method="semdedup")
def semantic(ctx: DedupContext):
    """Semantic duplicates: embeddings within cosine distance eps, searched inside k-means clusters.

    Spherical k-means (the faiss k-means of the geometry scorers), then within-cluster pruning at
    cosine similarity > 1 - eps. Clusters are fitted on the rows in id-hash order, so they depend on
    which rows reach the dedup, not on the select score that orders ``ctx.rows``. ``keep`` decides
    which row of a duplicate group stays: ``hard`` (the paper's default) the farthest from its
    centroid, ``easy`` the nearest, ``random`` the first in preference order (the id-hash order
    unless the select strategy has a score).
    """
    import math

    import numpy as np
    import polars as pl

    import cbdsl.pipelines.engine.kernels.semdedup as semdedup  # numba: off the `cbdsl check` path
    import cbdsl.scorers.models.kmeans as km  # numpy (faiss in its functions): off the `cbdsl check` path

    p: SemanticParams = ctx.params
    ordered = ctx.rows
    emb = ctx.embeddings()
    n = emb.shape[0]
    if n == 0:
        return ordered
    emb = km.prepare(emb, spherical=True)  # unit float32 rows (zero rows stay zero)
    k = p.clusters or max(1, int(round(math.sqrt(n / 2))))
    by_hash = np.argsort(ordered[ctx.hash].to_numpy(), kind="stable")
    fitted = km.fit(emb[by_hash], min(k, n), seed=p.seed, spherical=True, prepared=True)
    labels = np.empty(n, dtype=np.int64)
    labels[by_hash] = fitted.labels
    similarity = km.similarity(emb, fitted.centroids, labels, normalized=True)
    if p.keep == "hard":  # farthest from the centroid stays (the paper's default)
        order = np.argsort(similarity, kind="stable")
    elif p.keep == "easy":
        order = np.argsort(-similarity, kind="stable")
    else:
        order = np.arange(n)  # preference order = id hash order already
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    keep = semdedup.semdedup_keep(emb, labels, ranks, p.eps)
    return ordered.filter(pl.Series(keep))
