"""SemDeDup pruning (:mod:`cbdsl.pipelines.engine.kernels.semdedup`) against a NumPy reference written here.

The reference walks each cluster's members in order (order key, then index)
and drops a member whose cosine similarity to an earlier one exceeds
``1 - eps``, similarities summed column by column as the kernel does. Seeded
data has near-copies, exact duplicates and ties in the order key.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from cbdsl.pipelines.engine.kernels import semdedup


# ---------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------


def ref_semdedup(E, cluster, order, eps):
    n, d = E.shape
    E64 = E.astype(np.float64)
    keep = np.ones(n, dtype=bool)
    for c in np.unique(cluster):
        members = sorted(np.flatnonzero(cluster == c), key=lambda i: (order[i], i))
        sub = E64[members]
        sim = np.zeros((len(members), len(members)))
        for j in range(d):  # summed column by column, like the kernel
            sim += np.outer(sub[:, j], sub[:, j])
        for q in range(1, len(members)):
            if sim[:q, q].max() > 1 - eps:
                keep[members[q]] = False
    return keep


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def semdedup_data(rng, n, d, n_clusters):
    base = rng.standard_normal((n, d))
    dup = rng.random(n) < 0.3  # a third are near-copies of an earlier row
    for i in np.flatnonzero(dup):
        if i:
            base[i] = base[rng.integers(0, i)] + rng.normal(0, 0.02, d)
    if n:
        base[n // 2 :: 7] = base[n // 2]  # exact duplicates too
    E = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
    cluster = rng.integers(0, n_clusters, size=n)
    order = rng.integers(0, max(1, n // 3), size=n)  # ties in the order key
    return E, cluster, order


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n,d,n_clusters", [(0, 4, 1), (1, 4, 1), (12, 3, 1), (150, 8, 3), (400, 16, 10)])
@pytest.mark.parametrize("eps", [0.0, 0.01, 0.1])
def test_semdedup_matches_reference(n, d, n_clusters, eps):
    rng = np.random.default_rng(n + d)
    E, cluster, order = semdedup_data(rng, n, d, n_clusters)
    got = semdedup.semdedup_keep(E, cluster, order, eps)
    assert got.dtype == np.bool_ and got.shape == (n,)
    assert got.tolist() == ref_semdedup(E, cluster, order, eps).tolist()


def test_semdedup_keeps_the_earliest_of_duplicates():
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    # Order prefers row 3, then 2, then 0: row 3 is kept, 0 and 2 removed; row 1 is in another cluster.
    keep = semdedup.semdedup_keep(v, np.array([0, 1, 0, 0]), np.array([5, 0, 1, 0]), 0.01)
    assert keep.tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="same length"):
        semdedup.semdedup_keep(v, np.array([0, 1]), np.array([0, 1, 2, 3]), 0.1)


def test_semdedup_same_for_any_thread_count(all_threads):
    E, cluster, order = semdedup_data(np.random.default_rng(9), 3000, 8, 4)
    numba.set_num_threads(1)
    one = semdedup.semdedup_keep(E, cluster, order, 0.05)
    numba.set_num_threads(all_threads)
    assert np.array_equal(semdedup.semdedup_keep(E, cluster, order, 0.05), one)
