"""Embedding-geometry scorers: k-means clusters and where each row sits in them.

Four population scorers over an embedding (a pool column such as ``emb``, or
a scorer such as ``image_embedding(image)``); each clusters every row of the
pool with the deterministic faiss k-means of :mod:`cbdsl.scorers.models.kmeans`
(the one ``dedup semantic`` uses too, on the rows that reach the dedup), and
the four share one fit for the same embedding and clustering parameters:

``kmeans(emb, clusters=100, seed=0, spherical=true, iterations=20, centroids="", assign="nearest")`` -> int
    The cluster of each row, 0..clusters-1. With ``centroids`` naming an
    asset of kind centroids (a ``.npy`` float matrix [k, d]), no clustering
    is fitted: each row goes to its nearest given centroid (DataComp's
    image-based filter with its released centroids; ``assign="dot"`` takes
    the largest raw inner product instead, as DataComp's ``apply_filter``
    does).
``centroid_distance(emb, ...)`` -> float
    Cosine distance ``1 - cos(x, c)`` of a row to its own centroid, in [0, 2].
``prototypicality(emb, ...)`` -> float
    Cosine similarity ``cos(x, c)`` to its own centroid: D4's SSL-prototypes
    score (Tirumala et al., 2023); ``select bottom prototypicality(emb)``
    keeps the least prototypical rows, which is what D4 keeps.
``density_weight(emb, ..., neighbors=20, temperature=0.5)`` -> float
    Density-based pruning (Abbas et al., 2024): a cluster's complexity
    ``C_j = d_inter_j * d_intra_j`` becomes its share of the budget
    ``P_j = softmax(C / temperature)_j``; each row gets ``P_j / |cluster j|``,
    so ``select weighted(density_weight(emb), seed=0)`` samples clusters in
    proportion to ``P_j``. See :func:`dbp_shares` for the exact formula.

Cosine is the geometry of all four whatever ``spherical`` says: it only
chooses cosine (true) or Euclidean (false) k-means for the clusters. Rows
whose embedding is null get null. Rows are clustered in the order of their
id hash, so the clusters do not depend on how the pool is sharded.

The catalogue entries ``semdedup``, ``d4``, ``density_pruning`` and
``datacomp_image_based`` name these scorers and say where each departs from
its paper.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from cbdsl.scorers.api import RunError
from cbdsl.scorers.registry import Input, Params, model_scorer

_DEFAULTS = {"clusters": 100, "seed": 0, "iterations": 20}


class ClusterParams(Params):
    clusters: int = Field(default=100, ge=1, le=1_000_000, description="number of k-means clusters (lowered to the number of rows when the pool is smaller)")
    seed: int = Field(default=0, ge=0, lt=2**31, description="seed of the k-means initialisation and subsampling")
    spherical: bool = Field(default=True, description="cosine (spherical) k-means on normalised rows; false: Euclidean k-means on the raw vectors")
    iterations: int = Field(default=20, ge=1, le=1000, description="Lloyd iterations of k-means")
    centroids: str = Field(default="", description="name of a centroids asset (.npy, k x d) to assign rows to instead of fitting k-means")

    @model_validator(mode="after")
    def _centroids_fix_the_clusters(self) -> ClusterParams:
        if self.centroids:
            changed = [name for name, default in _DEFAULTS.items() if getattr(self, name) != default]
            if changed:
                raise PydanticCustomError(
                    "centroids_fixed",
                    "`{names}` has no effect with `centroids`: the asset's centroids are used as they are",
                    {"names": "`, `".join(changed)},
                )
        return self


class KMeansParams(ClusterParams):
    assign: Literal["nearest", "dot"] = Field(
        default="nearest",
        description="nearest: the nearest centroid (cosine when spherical, else L2); dot: the largest raw inner product (DataComp's apply_filter)",
    )


class DensityParams(ClusterParams):
    neighbors: int = Field(default=20, ge=1, le=10_000, description="d_inter averages the distance to this many nearest other centroids (l in the paper)")
    temperature: float = Field(default=0.5, gt=0, le=1000, description="softmax temperature turning cluster complexity into budget shares")


EMB = Input("emb", "embedding")


@model_scorer("kmeans", inputs=[EMB], params=KMeansParams, output="int", population=True)
def kmeans(ctx, emb):
    """The k-means cluster of each row (or its nearest centroid of a centroids asset)."""
    import polars as pl

    g = _geometry(ctx, emb)
    return g.column(g.labels, pl.Int64)


@model_scorer("centroid_distance", inputs=[EMB], params=ClusterParams, output="float", population=True)
def centroid_distance(ctx, emb):
    """Cosine distance of each row to its k-means centroid (1 - cosine similarity)."""
    import polars as pl

    g = _geometry(ctx, emb)
    return g.column(1.0 - g.similarity, pl.Float64)


@model_scorer("prototypicality", inputs=[EMB], params=ClusterParams, output="float", population=True,
              method="d4")
def prototypicality(ctx, emb):
    """Cosine similarity of each row to its k-means centroid (D4's SSL prototypes; keep the lowest)."""
    import polars as pl

    g = _geometry(ctx, emb)
    return g.column(g.similarity, pl.Float64)


@model_scorer("density_weight", inputs=[EMB], params=DensityParams, output="float", population=True,
              method="density_pruning")
def density_weight(ctx, emb):
    """Each row's share of the budget under density-based pruning: P_cluster / cluster size."""
    import numpy as np
    import polars as pl

    g = _geometry(ctx, emb)
    p = ctx.params
    shares = dbp_shares(g.centroids, g.labels, g.similarity, neighbors=p.neighbors, temperature=p.temperature)
    sizes = np.bincount(g.labels, minlength=len(shares)).astype(np.float64)
    weights = shares[g.labels] / sizes[g.labels] if len(g.labels) else np.zeros(0)
    return g.column(weights, pl.Float64)


# --- the formulas ----------------------------------------------------------------------


def dbp_shares(centroids, labels, similarity, *, neighbors: int = 20, temperature: float = 0.5):
    """Density-based pruning's share of the budget per cluster, float64 [k] (sums to 1).

    Abbas et al. (2024), "Effective pruning of web-scale datasets based on
    complexity of concept clusters", section 3, as their released code
    computes it (compute_avg_dist_to_cluster_centroid.py,
    compute_centroid_distances.py, prune.py)::

        d_intra_j = mean over rows i of cluster j of (1 - cos(x_i, c_j))
        d_inter_j = mean over the l nearest other centroids c_m of (1 - cos(c_j, c_m)),
                    l = min(neighbors, k - 1)
        C_j       = d_inter_j * d_intra_j
        P_j       = exp(C_j / temperature) / sum_m exp(C_m / temperature)

    Clusters without rows get share 0 and are left out of the softmax's sum
    (they exist only when the final assignment leaves a centroid empty); the
    nearest-centroid neighbourhoods still include them, as in the reference
    code. With one cluster (k = 1, no neighbours) the share is 1. The paper
    then turns ``N * P_j`` into integer quotas with a quadratic program
    (capped by cluster sizes, at least half an even share per cluster) and
    keeps each cluster's hardest rows; ``density_weight`` instead hands
    ``P_j / |cluster j|`` to weighted sampling (see the catalogue entry).
    """
    import numpy as np

    c = _kmeans().normalize(np.ascontiguousarray(centroids, dtype=np.float32)).astype(np.float64)
    k = c.shape[0]
    labels = np.asarray(labels, dtype=np.int64)
    sizes = np.bincount(labels, minlength=k)
    present = sizes > 0
    if k == 1 or present.sum() <= 1:
        return present.astype(np.float64) / max(1, int(present.sum()))
    dist = 1.0 - np.asarray(similarity, dtype=np.float64)
    d_intra = np.zeros(k)
    np.add.at(d_intra, labels, dist)
    d_intra = np.divide(d_intra, sizes, out=np.zeros(k), where=present)
    sim = c @ c.T
    np.fill_diagonal(sim, -np.inf)  # a centroid is not its own neighbour
    l = min(int(neighbors), k - 1)
    # the l largest similarities of each row, ties by the lower index (a stable sort of -sim)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :l]
    d_inter = (1.0 - np.take_along_axis(sim, nearest, axis=1)).mean(axis=1)
    complexity = d_inter * d_intra
    z = np.where(present, complexity / float(temperature), -np.inf)
    e = np.exp(z - z[present].max())
    return e / e.sum()


# --- shared plumbing ---------------------------------------------------------------------


class _Geometry:
    """The clustering of the valid rows, in the caller's row order, and how to put values back."""

    def __init__(self, valid, labels, similarity, centroids):
        self.valid = valid  # bool [n]: rows with an embedding
        self.labels = labels  # int64 [m], m = valid.sum()
        self.similarity = similarity  # float64 [m]
        self.centroids = centroids  # float32 [k, d]

    def column(self, values, dtype):
        """``values`` of the valid rows as a Series over all rows (null where the embedding is null)."""
        import numpy as np
        import polars as pl

        if self.valid.all():
            return pl.Series("value", values, dtype=dtype)
        full = np.zeros(len(self.valid), dtype=np.asarray(values).dtype)
        full[self.valid] = values
        return pl.Series("value", full, dtype=dtype).scatter(np.flatnonzero(~self.valid), None)


def _geometry(ctx, emb) -> _Geometry:
    import numpy as np

    p = ctx.params
    x, valid = embedding_matrix(emb)
    ids = ctx.ids.filter(valid) if not valid.all() else ctx.ids
    order = _kmeans().canonical_order(ids)
    x = x[order]
    xs = _kmeans().prepare(x, p.spherical)  # unit rows when spherical, else x itself
    if p.centroids:
        metric = getattr(p, "assign", "nearest")
        cosine = p.spherical and metric == "nearest"
        centroids = centroid_asset(ctx, p.centroids, x.shape[1])
        labels = _kmeans().assign(xs if cosine else x, centroids, spherical=p.spherical, metric=metric, prepared=cosine)
    else:
        fitted = _kmeans().fit_cached(xs, p.clusters, seed=p.seed, spherical=p.spherical, niter=p.iterations,
                               workdir=ctx.workdir)
        centroids, labels = fitted.centroids, fitted.labels
    similarity = _kmeans().similarity(xs, centroids, labels, normalized=p.spherical)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    ctx.progress(len(valid))
    return _Geometry(valid, labels[back], similarity[back], centroids)


def embedding_matrix(series):
    """A column of embeddings as (float32 [m, d] of the non-null rows, bool [n] mask of those rows).

    Takes a fixed-size Array column (what ``write_pool`` stores) or a List
    column whose lists all have one length; anything else is a RunError.
    """
    import numpy as np
    import polars as pl

    valid = (~series.is_null()).to_numpy()
    s = series.filter(pl.Series(valid)) if not valid.all() else series
    if isinstance(s.dtype, pl.List):
        lengths = s.list.len()
        if len(s) and lengths.min() != lengths.max():
            raise RunError(f"the embeddings have different lengths ({lengths.min()} to {lengths.max()})",
                           ("every row's embedding must have the same number of values",))
        s = s.list.to_array(int(lengths.max()) if len(s) else 1)
    if not isinstance(s.dtype, pl.Array) or not s.dtype.inner.is_numeric():
        raise RunError(f"expected an embedding (a fixed-length list of numbers), got a column of {s.dtype}")
    width = s.dtype.size
    if len(s) and s.explode().null_count():
        raise RunError("an embedding has null values inside it", ("fill or drop those rows first",))
    x = s.to_numpy() if len(s) else np.zeros((0, width), dtype=np.float32)
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(s), width)), valid


def centroid_asset(ctx, name: str, width: int):
    """The centroids asset ``name`` as float32 [k, d], checked against the embeddings' width."""
    import numpy as np

    value = ctx.asset(name)
    if not isinstance(value, np.ndarray) or value.ndim != 2:
        raise RunError(f"asset {name!r} is not a centroids matrix",
                       ("register a .npy float matrix (k x d) with `cbdsl pool add-asset POOL NAME FILE --kind centroids`",))
    if value.shape[1] != width:
        raise RunError(f"asset {name!r} has centroids of {value.shape[1]} dimensions, but the embeddings have {width}",
                       ("use the centroids computed for this embedding model",))
    return np.ascontiguousarray(value, dtype=np.float32)


def _kmeans():
    """The model module `kmeans` (NumPy), imported when a scorer runs, not when `cbdsl check` loads this module."""
    import cbdsl.scorers.models.kmeans as kmeans  # NumPy: off `cbdsl check`

    return kmeans
