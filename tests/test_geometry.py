"""Embedding-geometry scorers and the faiss k-means behind them.

Each scorer is checked against an independent NumPy computation of its
formula on a small case: k-means labels against the nearest centroid,
distances and prototypicality against float64 cosines, density-based pruning
(Abbas et al., 2024) on a hand-made three-cluster case with given centroids.
Policies run through the public API (``compile_source`` -> ``lower`` ->
``execute``); a scorer's values are read back with ``select top SCORER``
and no budget, whose manifest holds every row with its score.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from threadpoolctl import threadpool_limits

from cbdsl.stages import check_source
from cbdsl.scorers.api import RunError
from cbdsl.pipelines.data.writing import add_asset
from cbdsl.scorers.geometry import dbp_shares
from cbdsl.scorers.models import kmeans as km
from conftest_pools import make_pool, policy, run_policy

# --- data -------------------------------------------------------------------------------------


def unit(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def blobs(n: int, d: int, k: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n float32 rows around k random unit directions (Gaussian noise of `spread` per dimension)."""
    rng = np.random.default_rng(seed)
    directions = unit(rng.standard_normal((k, d)))
    truth = rng.integers(0, k, n)
    x = directions[truth] + spread * rng.standard_normal((n, d))
    return x.astype(np.float32), truth


def ids(n: int) -> list[str]:
    return [f"r{i:04d}" for i in range(n)]


def emb_pool(path, x: np.ndarray, **columns):
    return make_pool(path, {"id": ids(len(x)), "emb": [list(map(float, r)) for r in x], **columns})


def scores(text_score: str, pool) -> dict[str, float | None]:
    """Every row's value of a score expression, read from `select top EXPR` without a budget."""
    _compiled, result = run_policy(policy(f"select top {text_score}"), pool)
    sel = result.selection
    return dict(zip(sel.get_column("id").to_list(), sel.get_column("score").to_list()))


def canonical(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows in the order the scorers cluster them (by id hash), and that order."""
    order = km.canonical_order(pl.Series(ids(len(x))))
    return x[order], order


# --- the k-means model ---------------------------------------------------------------------------


def test_spherical_fit_labels_are_the_nearest_centroids() -> None:
    x, _ = blobs(1500, 16, 8, 0.3, seed=1)
    fitted = km.fit(x, 12, seed=0, spherical=True)
    c = fitted.centroids.astype(np.float64)
    assert fitted.centroids.dtype == np.float32 and fitted.labels.dtype == np.int64
    assert np.allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)  # spherical centroids are unit
    cos = unit(x) @ unit(c).T  # independent: float64 cosines
    best = cos.max(axis=1)
    chosen = cos[np.arange(len(x)), fitted.labels]
    assert np.all(chosen >= best - 1e-6)  # float32 BLAS may only differ on near-ties
    assert (fitted.labels == cos.argmax(axis=1)).mean() > 0.999
    assert set(np.unique(fitted.labels)) <= set(range(12))


def test_euclidean_fit_labels_are_the_nearest_centroids() -> None:
    x, _ = blobs(1200, 8, 5, 0.2, seed=2)
    x = 3.0 * x  # raw vectors, not unit: Euclidean k-means works on them as they are
    fitted = km.fit(x, 5, seed=3, spherical=False)
    d2 = ((x.astype(np.float64)[:, None, :] - fitted.centroids.astype(np.float64)[None]) ** 2).sum(-1)
    chosen = d2[np.arange(len(x)), fitted.labels]
    assert np.all(chosen <= d2.min(axis=1) + 1e-4)
    # Lloyd's fixed point: each centroid is (close to) the mean of its final members
    for j in range(5):
        members = x[fitted.labels == j]
        if len(members):
            assert np.allclose(members.mean(0), fitted.centroids[j], atol=0.05)


def test_fit_is_deterministic_and_seeded() -> None:
    x, _ = blobs(2000, 16, 30, 0.4, seed=4)
    a, b = km.fit(x, 20, seed=7), km.fit(x, 20, seed=7)
    assert a.centroids.tobytes() == b.centroids.tobytes() and a.labels.tobytes() == b.labels.tobytes()
    c = km.fit(x, 20, seed=8)
    assert c.centroids.tobytes() != a.centroids.tobytes()


def test_threads_do_not_change_the_clustering() -> None:
    """1 against 2 threads, for faiss's OpenMP and both BLAS libraries: byte-identical results."""
    x, _ = blobs(6000, 32, 40, 0.5, seed=5)
    runs = []
    for n in (1, 2):
        with threadpool_limits(n):
            fitted = km.fit(x, 24, seed=0, threads=n)
            sim = km.similarity(x, fitted.centroids, fitted.labels)
            given = km.assign(x, fitted.centroids, spherical=False)
        runs.append((fitted.centroids.tobytes(), fitted.labels.tobytes(), sim.tobytes(), given.tobytes()))
    assert runs[0] == runs[1]


def test_small_inputs() -> None:
    x = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    fitted = km.fit(x, 10)  # more clusters than rows: each row its own cluster
    assert fitted.k == 3 and sorted(fitted.labels.tolist()) == [0, 1, 2]
    empty = km.fit(np.zeros((0, 4), np.float32), 5)
    assert empty.labels.shape == (0,) and empty.centroids.shape == (0, 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        km.fit(np.array([[1, np.nan]], dtype=np.float32), 1)


def test_assignment_metrics() -> None:
    """Cosine, L2 and raw inner product pick different centroids for the same row."""
    x = np.array([[1.0, 0.0]], dtype=np.float32)
    cl = np.array([[3.0, 0.0], [0.8, 0.6]], dtype=np.float32)  # cos 1 vs 0.8; L2 2 vs 0.63
    assert km.assign(x, cl, spherical=True).tolist() == [0]
    assert km.assign(x, cl, spherical=False).tolist() == [1]
    cd = np.array([[0.5, 0.0], [2.0, 1.0]], dtype=np.float32)  # cos 1 vs 0.89; dot 0.5 vs 2
    assert km.assign(x, cd, spherical=True).tolist() == [0]
    assert km.assign(x, cd, spherical=True, metric="dot").tolist() == [1]
    tie = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    assert km.assign(x, tie).tolist() == [0]  # ties go to the lowest index


def test_fit_cached_reuses_the_fit(tmp_path) -> None:
    x = km.prepare(blobs(500, 8, 4, 0.2, seed=6)[0], True)
    km._MEMO.clear()
    first = km.fit_cached(x, 4, seed=0, workdir=tmp_path)
    files = list(tmp_path.glob("kmeans-*.npz"))
    assert len(files) == 1
    km._MEMO.clear()
    again = km.fit_cached(x, 4, seed=0, workdir=tmp_path)  # from the file
    assert again.labels.tobytes() == first.labels.tobytes()
    assert again.centroids.tobytes() == first.centroids.tobytes()


# --- the scorers against independent computations --------------------------------------------


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """400 rows around 5 directions in 12-D, with the rows' embeddings."""
    x, _ = blobs(400, 12, 5, 0.25, seed=11)
    return emb_pool(tmp_path_factory.mktemp("geom") / "p", x), x


def test_kmeans_centroid_distance_and_prototypicality(clustered) -> None:
    pool, x = clustered
    labels = scores("kmeans(emb, clusters=6)", pool)
    dist = scores("centroid_distance(emb, clusters=6)", pool)
    proto = scores("prototypicality(emb, clusters=6)", pool)
    # independent: the same fit (rows in id-hash order), then cosines in float64 with NumPy
    xs, order = canonical(x)
    fitted = km.fit(xs, 6, seed=0)
    cos = (unit(xs) * unit(fitted.centroids.astype(np.float64))[fitted.labels]).sum(1)
    for pos, row in enumerate(order):
        rid = f"r{row:04d}"
        assert labels[rid] == fitted.labels[pos]
        assert proto[rid] == pytest.approx(cos[pos], abs=1e-6)
        assert dist[rid] == pytest.approx(1.0 - cos[pos], abs=1e-6)
    # each row's centroid is its nearest one
    c = unit(fitted.centroids.astype(np.float64))
    assert np.all((unit(xs) @ c.T).max(1) <= cos + 1e-6)


def test_clusters_do_not_depend_on_row_order(tmp_path, clustered) -> None:
    _pool, x = clustered
    perm = np.random.default_rng(0).permutation(len(x))
    shuffled = make_pool(tmp_path / "shuffled", {"id": [f"r{i:04d}" for i in perm],
                                                  "emb": [list(map(float, x[i])) for i in perm]})
    assert scores("kmeans(emb, clusters=6)", shuffled) == scores("kmeans(emb, clusters=6)", _pool)


# the hand-made case: three centroids in 3-D; c0 and c2 are 45 degrees apart, c1 is orthogonal to both
C3 = unit([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """30 rows: 6 tight around c0, 12 spread around c1, 12 medium around c2; the centroids as an asset."""
    rng = np.random.default_rng(3)
    parts = [(0, 6, 0.05), (1, 12, 0.3), (2, 12, 0.15)]
    x = np.concatenate([C3[j] + s * rng.standard_normal((m, 3)) for j, m, s in parts]).astype(np.float32)
    root = tmp_path_factory.mktemp("three")
    pool = emb_pool(root / "p", x)
    np.save(root / "c3.npy", C3.astype(np.float32))
    pool = add_asset(pool.path, "hand-centroids", root / "c3.npy", kind="centroids")
    return pool, x


def dbp_by_hand(x: np.ndarray, c: np.ndarray, neighbors: int, temperature: float) -> np.ndarray:
    """Each row's density weight, written from the paper's definitions with plain loops."""
    cos_rows = unit(x) @ c.T
    labels = cos_rows.argmax(1)
    k = len(c)
    shares_num = []
    for j in range(k):
        members = [i for i in range(len(x)) if labels[i] == j]
        d_intra = sum(1.0 - cos_rows[i, j] for i in members) / len(members)
        others = sorted((1.0 - float(c[j] @ c[m]) for m in range(k) if m != j))[:min(neighbors, k - 1)]
        d_inter = sum(others) / len(others)
        shares_num.append(np.exp(d_inter * d_intra / temperature))
    p = np.array(shares_num) / sum(shares_num)
    sizes = np.bincount(labels, minlength=k)
    return p[labels] / sizes[labels]


@pytest.mark.parametrize(("neighbors", "temperature"), [(20, 0.5), (1, 0.05), (2, 0.01)])
def test_density_weight_on_three_hand_made_clusters(three, neighbors, temperature) -> None:
    pool, x = three
    got = scores(f'density_weight(emb, centroids="hand-centroids", neighbors={neighbors}, '
                 f'temperature={temperature})', pool)
    want = dbp_by_hand(x, C3, neighbors, temperature)
    assert [got[f"r{i:04d}"] for i in range(len(x))] == pytest.approx(want.tolist(), rel=1e-6)
    assert sum(got.values()) == pytest.approx(1.0)
    # the cluster shares are not uniform: complexity moves the budget
    labels = (unit(x) @ C3.T).argmax(1)
    shares = [sum(got[f"r{i:04d}"] for i in range(len(x)) if labels[i] == j) for j in range(3)]
    assert max(shares) - min(shares) > 0.01


def test_dbp_shares_edge_cases() -> None:
    one = dbp_shares(np.array([[1.0, 0.0]]), np.array([0, 0, 0]), np.array([0.9, 0.8, 0.7]))
    assert one.tolist() == [1.0]
    # an empty cluster gets no share, and the rest still sum to 1
    s = dbp_shares(C3, np.array([0, 0, 2, 2]), np.array([0.9, 0.8, 0.7, 0.9]))
    assert s[1] == 0.0 and s.sum() == pytest.approx(1.0)
    # a huge temperature spreads the budget evenly over the clusters
    s = dbp_shares(C3, np.array([0, 1, 2, 2]), np.array([0.9, 0.5, 0.7, 0.9]), temperature=1000.0)
    assert s == pytest.approx([1 / 3] * 3, rel=1e-3)


def test_centroids_asset_assignment(three) -> None:
    pool, x = three
    labels = scores('kmeans(emb, centroids="hand-centroids")', pool)
    assert [labels[f"r{i:04d}"] for i in range(len(x))] == (unit(x) @ C3.T).argmax(1).tolist()
    dot = scores('kmeans(emb, centroids="hand-centroids", spherical=false, assign="dot")', pool)
    assert [dot[f"r{i:04d}"] for i in range(len(x))] == (x.astype(np.float64) @ C3.T).argmax(1).tolist()


def test_centroids_asset_errors(tmp_path, three) -> None:
    pool, _x = three
    np.save(tmp_path / "c2d.npy", np.eye(2, dtype=np.float32))
    pool = add_asset(pool.path, "flat-centroids", tmp_path / "c2d.npy", kind="centroids")
    with pytest.raises(RunError, match="2 dimensions, but the embeddings have 3"):
        scores('kmeans(emb, centroids="flat-centroids")', pool)
    _p, diags = check_source('filter kmeans(emb, clusters=5, centroids="c") == 1\n', "x.cur",
                             {"id": "str", "emb": "embedding"})
    assert [d.code for d in diags] == ["E209"] and "no effect with `centroids`" in diags[0].message


def test_null_embeddings_get_null(tmp_path) -> None:
    x, _ = blobs(60, 4, 2, 0.1, seed=9)
    emb = [None if i % 10 == 0 else list(map(float, r)) for i, r in enumerate(x)]
    pool = make_pool(tmp_path / "nulls", {"id": ids(60), "emb": emb})
    assert pool.schema["emb"] == "embedding"
    got = scores("centroid_distance(emb, clusters=2)", pool)
    assert sorted(rid for rid, v in got.items() if v is None) == sorted(f"r{i:04d}" for i in range(0, 60, 10))
    _c, result = run_policy(policy("filter centroid_distance(emb, clusters=2) < 2"), pool)
    assert result.selection.height == 54


# --- policies end to end ----------------------------------------------------------------------


def test_filter_on_centroid_distance(clustered) -> None:
    pool, x = clustered
    dist = scores("centroid_distance(emb, clusters=6)", pool)
    threshold = float(np.median(list(dist.values())))
    _c, result = run_policy(policy(f"filter centroid_distance(emb, clusters=6) < {threshold}"), pool)
    assert sorted(result.selection.get_column("id").to_list()) == sorted(k for k, v in dist.items() if v < threshold)


def test_select_bottom_prototypicality_keeps_the_least_prototypical(clustered) -> None:
    pool, _x = clustered
    proto = scores("prototypicality(emb)", pool)
    _c, result = run_policy(policy("budget 40", "select bottom prototypicality(emb)"), pool)
    picked = result.selection.get_column("id").to_list()
    assert set(picked) == set(sorted(proto, key=proto.__getitem__)[:40])
    assert [proto[r] for r in picked] == sorted(proto[r] for r in picked)  # rank 1 is the least prototypical
    again = run_policy(policy("budget 40", "select bottom prototypicality(emb)"), pool)[1]
    assert again.selection_hash() == result.selection_hash()


def test_weighted_density_sampling_follows_the_cluster_shares(tmp_path) -> None:
    """`select weighted(density_weight(emb), seed=0)`: clusters fill in proportion to P_j."""
    rng = np.random.default_rng(5)
    spreads = [0.02, 0.4, 0.15]  # tight, loose, medium: d_intra differs, so P_j differs
    x = np.concatenate([C3[j] + s * rng.standard_normal((300, 3)) for j, s in enumerate(spreads)]).astype(np.float32)
    pool = emb_pool(tmp_path / "p", x)
    np.save(tmp_path / "c3.npy", C3.astype(np.float32))
    pool = add_asset(pool.path, "hand-centroids", tmp_path / "c3.npy", kind="centroids")
    expr = 'density_weight(emb, centroids="hand-centroids", temperature=0.05)'
    _c, result = run_policy(policy("budget 150", f"select weighted({expr}, seed=0)"), pool)
    labels = (unit(x) @ C3.T).argmax(1)
    picked = [int(r[1:]) for r in result.selection.get_column("id").to_list()]
    counts = np.bincount(labels[picked], minlength=3)
    p = dbp_shares(C3, labels, (unit(x) * C3[labels]).sum(1), temperature=0.05)
    assert counts.sum() == 150
    assert np.argsort(counts).tolist() == np.argsort(p).tolist()
    assert np.abs(counts / 150 - p).max() < 0.1
