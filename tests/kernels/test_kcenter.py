"""k-center greedy (:mod:`cbdsl.pipelines.engine.kernels.kcenter`) against a per-step NumPy reference written here.

The reference is farthest-first with one full pass per step, distances summed
column by column in float64 as the kernel does, so the picks must be equal:
on seeded embeddings with ties and duplicate rows, with pre-selected centers,
on both kernel paths (the tiled copy with speculation, and one pass per step
over the caller's rows), and for any thread count.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from cbdsl.pipelines.engine.kernels import kcenter


# ---------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------


def ref_kcenter(X, k, first, already=()):
    """Farthest-first, one full NumPy pass per step; distances summed column by column."""
    X64 = X.astype(np.float64)
    n, d = X.shape

    def dist(c):
        acc = np.zeros(n)
        for j in range(d):
            t = X64[:, j] - X64[c, j]
            acc += t * t
        return acc

    mind = np.full(n, np.inf)
    chosen = np.zeros(n, dtype=bool)
    for a in already:
        mind = np.minimum(mind, dist(a))
        chosen[a] = True
    cur = first if first is not None else int(np.argmax(np.where(chosen, -1.0, mind)))
    picks = []
    for _ in range(k):
        picks.append(cur)
        chosen[cur] = True
        mind = np.minimum(mind, dist(cur))
        cur = int(np.argmax(np.where(chosen, -1.0, mind)))  # first maximum: lowest index
    return picks


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def random_emb(rng, n, d, kind):
    if kind == "normal":
        return rng.standard_normal((n, d)).astype(np.float32)
    if kind == "ties":  # a small integer grid: many equal distances
        return rng.integers(0, 3, size=(n, d)).astype(np.float32)
    if kind == "dups":  # many duplicate rows
        base = rng.standard_normal((max(1, n // 4), d)).astype(np.float32)
        return base[rng.integers(0, base.shape[0], size=n)]
    raise ValueError(kind)


@pytest.fixture(params=["tiled", "rows"])
def kc_path(request, monkeypatch):
    """Both k-center paths: the tiled copy with speculation, and one pass per step over the caller's rows."""
    if request.param == "rows":
        monkeypatch.setattr(kcenter, "_KC_COPY_LIMIT", -1)
    return request.param


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "ties", "dups"])
@pytest.mark.parametrize("n,d,k", [(1, 3, 1), (2, 1, 2), (40, 5, 10), (300, 8, 60), (50, 4, 50)])
def test_kcenter_matches_reference(kind, n, d, k, kc_path):
    rng = np.random.default_rng(n * 31 + d)
    X = random_emb(rng, n, d, kind)
    first = int(rng.integers(0, n))
    got = kcenter.kcenter_greedy(X, k, first)
    assert got.dtype == np.int64
    assert got.tolist() == ref_kcenter(X, k, first)
    assert len(set(got.tolist())) == k  # never the same row twice, even among duplicates


@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_kcenter_with_already_selected(kind, kc_path):
    rng = np.random.default_rng(7)
    X = random_emb(rng, 200, 6, kind)
    already = np.array([5, 17, 150, 99])
    assert kcenter.kcenter_greedy(X, 20, None, already=already).tolist() == ref_kcenter(X, 20, None, already)
    assert kcenter.kcenter_greedy(X, 20, 3, already=already).tolist() == ref_kcenter(X, 20, 3, already)
    # Many pre-selected centers: the blocked pass over them gives the same distances.
    many = rng.choice(200, size=150, replace=False)
    assert kcenter.kcenter_greedy(X, 30, None, already=many).tolist() == ref_kcenter(X, 30, None, many)


def test_kcenter_edges_and_errors():
    X = np.zeros((5, 2), dtype=np.float32)
    assert kcenter.kcenter_greedy(X, 0, 0).shape == (0,)
    assert kcenter.kcenter_greedy(np.zeros((0, 3), np.float32), 0, None).shape == (0,)
    assert kcenter.kcenter_greedy(X, 5, 2).tolist() == [2, 0, 1, 3, 4]  # all equal: index order
    with pytest.raises(ValueError, match="cannot pick 6"):
        kcenter.kcenter_greedy(X, 6, 0)
    with pytest.raises(ValueError, match="first must be"):
        kcenter.kcenter_greedy(X, 1, 5)
    with pytest.raises(ValueError, match="already a center"):
        kcenter.kcenter_greedy(X, 1, 1, already=[1])
    with pytest.raises(ValueError, match="needs pre-selected"):
        kcenter.kcenter_greedy(X, 1, None)
    with pytest.raises(TypeError, match="float32"):
        kcenter.kcenter_greedy(X.astype(np.float64), 1, 0)
    bad = X.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kcenter.kcenter_greedy(bad, 1, 0)


def test_kcenter_same_picks_for_any_thread_count(all_threads, kc_path):
    X = random_emb(np.random.default_rng(11), 5000, 16, "ties")
    numba.set_num_threads(1)
    one = kcenter.kcenter_greedy(X, 40, 0)
    numba.set_num_threads(all_threads)
    assert np.array_equal(kcenter.kcenter_greedy(X, 40, 0), one)
