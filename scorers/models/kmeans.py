"""Deterministic k-means with faiss: the one clustering behind the embedding-geometry scorers and SemDeDup.

``kmeans``, ``centroid_distance``, ``prototypicality`` and ``density_weight``
(:mod:`cbdsl.scorers.geometry`) and ``dedup semantic`` all cluster with
:func:`fit`, so a policy that names several of them clusters the same way
(and, through :func:`fit_cached`, only once).

What is computed, exactly:

- **Training** is ``faiss.Kmeans`` (Lloyd's algorithm): ``niter`` iterations
  from ``k`` distinct rows drawn with ``seed``; with more than
  ``max_points_per_centroid * k`` rows, faiss trains on a seeded random
  subsample of that many rows (faiss's default of 256 per centroid;
  DataComp's own clustering trained on every row). Empty clusters
  are split by faiss's seeded rule. ``spherical`` is cosine k-means: rows are
  L2-normalised first and the centroids are renormalised after each update
  (faiss's ``spherical=True`` with an inner-product index); otherwise it is
  Euclidean k-means on the raw vectors.
- **Assignment** of every row (training rows too) is done here in NumPy, in
  blocks: the nearest centroid by cosine (spherical), by L2 distance, or by
  the largest raw inner product (``metric="dot"``, what DataComp's
  ``apply_filter`` does with its released centroids). Ties go to the lowest
  centroid index. NumPy's BLAS is several times faster than the one the
  faiss wheel bundles, and one code path serves fitted and given centroids.

Determinism (DESIGN.md, semantics 7): the result is a function of the rows,
``k``, ``seed`` and the options, whatever the thread count. faiss splits its
centroid update by centroid ranges, so every sum runs over the rows in the
same order, and the BLAS libraries split matrix products by output blocks,
not inside a dot product. This is checked rather than assumed:
``tests/test_geometry.py`` compares 1 and 2 threads byte for byte, and the
benchmark compared 1, 4 and 16 threads on 200k and 1M rows. Results may differ across CPU families (the BLAS
kernels differ in their summation order), which the score cache absorbs: a
pool's scores are computed once.

Rows are clustered in the order given; callers that want a result that does
not depend on the pool's row order sort first (:func:`canonical_order`).
Nothing here imports faiss until a function needs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from cbdsl.pipelines.engine.kernels.hashing import hash_strings

NITER = 20  # Lloyd iterations: DataComp's setting
MAX_POINTS_PER_CENTROID = 256  # faiss's default subsample per centroid
_BLOCK_BYTES = 64 << 20  # score block of the assignment (rows x k float32)
_ROWS = 1 << 15  # rows per block of the row-wise passes

Metric = Literal["nearest", "dot"]


@dataclass(frozen=True)
class KMeans:
    """A clustering: centroids (float32 [k, d], unit rows when spherical) and each row's cluster (int64 [n])."""

    centroids: np.ndarray
    labels: np.ndarray
    spherical: bool

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def sizes(self) -> np.ndarray:
        """Rows per cluster, int64 [k] (a cluster may be empty after the final assignment)."""
        return np.bincount(self.labels, minlength=self.k).astype(np.int64)


def prepare(x, spherical: bool) -> np.ndarray:
    """``x`` as C-contiguous float32 [n, d]; with ``spherical``, rows L2-normalised (zero rows stay zero).

    Works in blocks of rows, so the only full-size allocation is the result
    (none when ``x`` is already float32 and not normalised).
    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (rows, dimensions), got shape {a.shape}")
    if a.size and a.dtype.kind not in "fiu":
        raise TypeError(f"embeddings must be numbers, got {a.dtype}")
    for lo in range(0, a.shape[0], _ROWS):
        sums = np.einsum("ij->i", a[lo:lo + _ROWS], dtype=np.float64)  # NaN or inf anywhere in a row shows here
        if not np.isfinite(sums).all():
            bad = lo + int(np.argmax(~np.isfinite(sums)))
            raise ValueError(f"embedding row {bad} has NaN or infinite values")
    if spherical:
        return normalize(a)
    return np.ascontiguousarray(a, dtype=np.float32)


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` divided by their L2 norm, computed in float64 and rounded once to float32.

    Zero rows stay zero. Blocks of rows keep the float64 temporaries small.
    """
    out = np.empty(x.shape, dtype=np.float32)
    for lo in range(0, x.shape[0], _ROWS):
        rows = np.asarray(x[lo:lo + _ROWS], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        out[lo:lo + _ROWS] = rows / np.where(norms == 0, 1.0, norms)[:, None]
    return out


@contextlib.contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """Run faiss with ``n`` OpenMP threads (None: leave it), restoring the previous count after."""
    if n is None:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def fit(x, k: int, *, seed: int = 0, spherical: bool = True, niter: int = NITER,
        max_points_per_centroid: int = MAX_POINTS_PER_CENTROID, threads: int | None = None,
        prepared: bool = False) -> KMeans:
    """k-means of the rows of ``x`` (see the module docstring): centroids and every row's label.

    ``k`` larger than the number of rows is lowered to it (each row its own
    cluster). ``seed`` is a whole number in [0, 2**31). ``threads`` sets
    faiss's thread count for this call (the result does not depend on it).
    ``prepared`` says ``x`` already went through :func:`prepare` with this
    ``spherical`` (it is then used as it is, without a copy).
    """
    import faiss

    if not prepared:
        x = prepare(x, spherical)
    n, d = x.shape
    if n == 0:
        return KMeans(np.zeros((0, d), np.float32), np.zeros(0, np.int64), spherical)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not 0 <= seed < 2**31:
        raise ValueError(f"seed must be in [0, 2**31), got {seed}")
    k = min(int(k), n)
    km = faiss.Kmeans(d, k, niter=int(niter), seed=int(seed), spherical=bool(spherical),
                      max_points_per_centroid=int(max_points_per_centroid), min_points_per_centroid=1,
                      verbose=False)
    with faiss_threads(threads):
        km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    return KMeans(centroids, assign(x, centroids, spherical=spherical, prepared=True), spherical)


def assign(x, centroids, *, spherical: bool = True, metric: Metric = "nearest", prepared: bool = False) -> np.ndarray:
    """The cluster of each row of ``x`` among ``centroids``: int64 [n], ties to the lowest index.

    ``metric="nearest"``: the largest cosine similarity when ``spherical``
    (rows and centroids normalised), else the smallest L2 distance.
    ``metric="dot"``: the largest inner product of the raw vectors.
    ``prepared`` says ``x`` already went through :func:`prepare`.
    """
    c = np.asarray(centroids)
    if c.ndim != 2 or c.shape[0] < 1:
        raise ValueError(f"centroids must be a non-empty 2-D array (k, dimensions), got shape {c.shape}")
    cosine = spherical and metric == "nearest"
    if not prepared:
        x = prepare(x, cosine)
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"the embeddings have {x.shape[1]} dimensions but the centroids have {c.shape[1]}")
    c = prepare(c, cosine)
    n, k = x.shape[0], c.shape[0]
    labels = np.empty(n, dtype=np.int64)
    if n == 0:
        return labels
    ct = np.ascontiguousarray(c.T)
    # L2: argmin |x - c|^2 = argmax (x.c - |c|^2 / 2); |x|^2 is the same for every centroid.
    half_sq = 0.5 * np.einsum("ij,ij->i", c, c, dtype=np.float64).astype(np.float32) if metric == "nearest" and not cosine else None
    block = max(1, _BLOCK_BYTES // (4 * k))
    for lo in range(0, n, block):
        scores = x[lo:lo + block] @ ct
        if half_sq is not None:
            scores -= half_sq
        labels[lo:lo + block] = np.argmax(scores, axis=1)
    return labels


def similarity(x, centroids, labels, *, normalized: bool = False) -> np.ndarray:
    """Cosine similarity of each row of ``x`` to its own centroid ``centroids[labels]``, float64 [n].

    Computed in float64 from the float32 values, row by row (no BLAS),
    so the value does not depend on threads or blocking. A zero row or
    centroid has similarity 0. ``normalized`` says the rows of ``x`` are unit float32 already.
    """
    x = x if normalized else prepare(x, True)
    c = normalize(np.ascontiguousarray(centroids, dtype=np.float32))
    out = np.empty(x.shape[0], dtype=np.float64)
    for lo in range(0, x.shape[0], _ROWS):
        rows = x[lo:lo + _ROWS].astype(np.float64)
        out[lo:lo + _ROWS] = np.einsum("ij,ij->i", rows, c[labels[lo:lo + _ROWS]].astype(np.float64))
    return out


def canonical_order(ids) -> np.ndarray:
    """The permutation that sorts rows by the stable id hash (then by id): clustering in this order
    makes the result a function of the set of (id, embedding) rows, not of the pool's row order."""
    import polars as pl

    s = (ids if isinstance(ids, pl.Series) else pl.Series("id", list(ids))).cast(pl.String)
    if len(s) == 0:
        return np.zeros(0, dtype=np.int64)
    frame = pl.DataFrame({"h": hash_strings(s), "id": s}).with_row_index("i")
    return frame.sort(["h", "id"]).get_column("i").to_numpy().astype(np.int64)


def digest(*arrays: np.ndarray, **options) -> str:
    """A short content hash of arrays and options: the key of a cached fit."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    h.update(repr(sorted(options.items())).encode())
    return h.hexdigest()


_MEMO: dict[str, KMeans] = {}
_MEMO_SIZE = 4


def fit_cached(x: np.ndarray, k: int, *, seed: int = 0, spherical: bool = True, niter: int = NITER,
               workdir: str | os.PathLike | None = None) -> KMeans:
    """:func:`fit`, remembered by the content of ``x`` and the options: in this process, and as
    ``kmeans-<hash>.npz`` under ``workdir`` when given, so the scorers of one policy (and the next
    run over the same pool) fit once. ``x`` must already be prepared (:func:`prepare`)."""
    key = digest(x, k=int(k), seed=int(seed), spherical=bool(spherical), niter=int(niter),
                 mppc=MAX_POINTS_PER_CENTROID, format=1)
    if key in _MEMO:
        return _MEMO[key]
    path = Path(workdir) / f"kmeans-{key}.npz" if workdir is not None else None
    result = None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                result = KMeans(z["centroids"], z["labels"], bool(z["spherical"]))
        except (OSError, ValueError, KeyError):
            result = None  # a torn or foreign file: fit again and overwrite it
    if result is None:
        result = fit(x, k, seed=seed, spherical=spherical, niter=niter, prepared=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
            np.savez(tmp, centroids=result.centroids, labels=result.labels, spherical=np.bool_(spherical))
            os.replace(tmp, path)
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = result
    return result
