"""SemDeDup (Abbas et al. 2023): within each k-means cluster, keep a row unless a better-ranked row is within cosine distance eps."""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from cbdsl.pipelines.engine.kernels.boundary import jit, as_array


@jit(parallel=True)
def _semdedup_kernel(emb, seg_start, threshold):
    # emb rows are in (cluster, order) order; seg_start[q] is the first
    # position of q's cluster. Each item only reads earlier items, never
    # their decisions, so every item is decided on its own.
    n, d = emb.shape
    keep = np.empty(n, dtype=np.bool_)
    for q in prange(n):
        kept = True
        for p in range(seg_start[q], q):
            s = 0.0
            for j in range(d):
                s += np.float64(emb[p, j]) * np.float64(emb[q, j])
            if s > threshold:
                kept = False
                break
        keep[q] = kept
    return keep


def semdedup_keep(emb, cluster, order, eps: float) -> np.ndarray:
    """SemDeDup (Abbas et al. 2023): which rows survive semantic deduplication, bool[n].

    Within each cluster (say, k-means on the embeddings), items are taken in
    the caller's preference order: ascending ``order``, ties by row index
    (``order`` is a rank key, not a permutation; rank by distance to the
    centroid for the paper's choice, or by the select score). An item is
    removed when its cosine similarity to any EARLIER item of its cluster
    exceeds ``1 - eps``: the paper's column-wise max over the upper triangle
    of the pairwise similarity matrix. Earlier items count whether or not
    they are removed themselves, so the first item of each cluster is kept.

    ``emb`` is float32[n, d], rows L2-normalised (not checked: the caller
    normalises); the similarity is the dot product of the float32 values
    multiplied exactly in float64 and summed in column order. ``cluster`` and
    ``order`` are int64[n]; ``eps >= 0``. Each item is decided on its own
    (it reads earlier items, not their decisions), in parallel.
    """
    emb = as_array(emb, np.float32, 2, "emb")
    n = emb.shape[0]
    cluster = as_array(cluster, np.int64, 1, "cluster")
    order = as_array(order, np.int64, 1, "order")
    eps = float(eps)
    if cluster.shape[0] != n or order.shape[0] != n:
        raise ValueError(f"emb, cluster and order must have the same length, got {n}, {cluster.shape[0]}, {order.shape[0]}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if n == 0:
        return np.empty(0, dtype=np.bool_)
    if not np.isfinite(emb).all():
        raise ValueError("emb holds NaN or infinite values")
    perm = np.lexsort((np.arange(n), order, cluster))
    c_sorted = cluster[perm]
    is_start = np.ones(n, dtype=bool)
    is_start[1:] = c_sorted[1:] != c_sorted[:-1]
    seg_start = np.maximum.accumulate(np.where(is_start, np.arange(n), 0))
    keep_sorted = _semdedup_kernel(np.ascontiguousarray(emb[perm]), seg_start, 1.0 - eps)
    keep = np.empty(n, dtype=np.bool_)
    keep[perm] = keep_sorted
    return keep
