"""Benchmark: SemDeDup on CPU, faiss k-means plus the within-cluster pruning kernel.

What ``dedup semantic(emb, eps=0.05)`` runs, step by step, on synthetic
clustered embeddings (seeded): ``--true-clusters`` random unit directions,
each row a direction plus Gaussian noise (``--noise`` per dimension, so two
rows of one direction have cosine similarity far below 1 - eps), and a
``--dup-fraction`` of rows planted as near-copies of another row (noise
``--dup-noise`` per dimension: cosine similarity above 0.999; copies and
sources are disjoint, so each planted pair stays a pair). Then:

1. normalise the rows (:func:`cbdsl.scorers.models.kmeans.prepare`);
2. spherical k-means with faiss, k = round(sqrt(n / 2)) unless ``--clusters``
   (:func:`cbdsl.scorers.models.kmeans.fit`: training on faiss's subsample of
   256 rows per centroid, then every row assigned in NumPy);
3. each row's cosine similarity to its centroid, ranked (keep="hard");
4. :func:`cbdsl.pipelines.engine.kernels.semdedup.semdedup_keep` with ``eps``.

Numba's compile time is excluded (the kernel is warmed up on a small input).
Peak memory is the process's resident set, sampled every 20 ms from
/proc/self/statm (and ``ru_maxrss``), reported before and during the dedup.
``--threads 1,16`` also re-runs k-means at each thread count (faiss's OpenMP
and the BLAS pools, through threadpoolctl) and reports whether centroids and
labels are byte-identical to the first run's (all threads). ``--baseline`` times the
NumPy k-means that ``pipelines/engine/execute.py`` used before (same k, 20 Lloyd
iterations over every row, float64).

    python tests/benchmarks/bench_semdedup.py [--rows 1000000 --dim 256 --eps 0.05]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import threading
import time

import numpy as np


class PeakRSS:
    """The largest resident set size seen while running, sampled from /proc/self/statm."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def synthetic(rows: int, dim: int, true_clusters: int, noise: float, dup_fraction: float, dup_noise: float,
              seed: int) -> tuple[np.ndarray, int]:
    """Clustered float32 embeddings with planted near-duplicates: (x [rows, dim], planted count)."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((true_clusters, dim), dtype=np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    x = np.empty((rows, dim), dtype=np.float32)
    block = 1 << 16
    for lo in range(0, rows, block):
        hi = min(lo + block, rows)
        x[lo:hi] = directions[rng.integers(0, true_clusters, hi - lo)]
        x[lo:hi] += noise * rng.standard_normal((hi - lo, dim), dtype=np.float32)
    planted = int(rows * min(dup_fraction, 0.5))
    if planted:
        perm = rng.permutation(rows)
        copies, sources = perm[:planted], perm[planted:2 * planted]  # disjoint: every pair stays a pair
        for lo in range(0, planted, block):
            c, s = copies[lo:lo + block], sources[lo:lo + block]
            x[c] = x[s] + dup_noise * rng.standard_normal((len(c), dim), dtype=np.float32)
    return x, planted


def numpy_kmeans_baseline(x: np.ndarray, k: int, seed: int, iterations: int = 20):
    """The NumPy spherical k-means ``pipelines/engine/execute.py`` used before faiss (copied for comparison)."""
    rng = np.random.default_rng(seed)
    centroids = x[np.sort(rng.choice(x.shape[0], size=k, replace=False))].astype(np.float64)
    labels = np.zeros(x.shape[0], dtype=np.int64)
    for _ in range(iterations):
        labels = np.argmax(x @ centroids.T, axis=1)
        for j in range(k):
            members = x[labels == j]
            if len(members):
                c = members.sum(0)
                centroids[j] = c / (np.linalg.norm(c) or 1)
    return labels, centroids


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=0, help="k-means clusters (0: round(sqrt(rows / 2)), the dedup default)")
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--true-clusters", type=int, default=5000)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--dup-fraction", type=float, default=0.2)
    ap.add_argument("--dup-noise", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", default="", help="comma-separated faiss thread counts to check for identical k-means (e.g. 1,16)")
    ap.add_argument("--baseline", action="store_true", help="also time the old NumPy k-means")
    args = ap.parse_args(argv)

    import faiss
    import numba

    from cbdsl.pipelines.engine.kernels.semdedup import semdedup_keep
    from cbdsl.scorers.models import kmeans as km

    out: dict = {
        "benchmark": "semdedup", "rows": args.rows, "dim": args.dim, "eps": args.eps,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(), "faiss": faiss.__version__, "numpy": np.__version__,
                    "numba": numba.__version__, "faiss_threads": faiss.omp_get_max_threads(),
                    "numba_threads": numba.get_num_threads(), "loadavg_before": os.getloadavg()},
    }
    semdedup_keep(np.eye(4, dtype=np.float32), np.zeros(4, np.int64), np.arange(4), 0.05)  # JIT warm-up

    t0 = time.perf_counter()
    x, planted = synthetic(args.rows, args.dim, args.true_clusters, args.noise, args.dup_fraction,
                           args.dup_noise, args.seed)
    out["generate_s"] = round(time.perf_counter() - t0, 3)
    out["planted_duplicates"] = planted
    k = args.clusters or max(1, int(round(math.sqrt(args.rows / 2))))
    out["clusters"] = k

    probe = PeakRSS()
    rss_before = probe.rss()
    times: dict[str, float] = {}
    with probe:
        t = time.perf_counter()
        xn = km.prepare(x, True)
        times["normalize_s"] = time.perf_counter() - t
        t = time.perf_counter()
        fitted = km.fit(xn, k, seed=args.seed, spherical=True, prepared=True)
        times["kmeans_s"] = time.perf_counter() - t
        t = time.perf_counter()
        sim = km.similarity(xn, fitted.centroids, fitted.labels, normalized=True)
        ranks = np.empty(len(sim), dtype=np.int64)
        ranks[np.argsort(sim, kind="stable")] = np.arange(len(sim))
        times["rank_s"] = time.perf_counter() - t
        t = time.perf_counter()
        keep = semdedup_keep(xn, fitted.labels, ranks, args.eps)
        times["semdedup_keep_s"] = time.perf_counter() - t
    times["total_s"] = sum(times.values())
    out.update({name: round(v, 3) for name, v in times.items()})
    sizes = fitted.sizes()
    out.update({
        "kept": int(keep.sum()), "removed": int((~keep).sum()),
        "cluster_sizes": {"min": int(sizes.min()), "median": int(np.median(sizes)), "max": int(sizes.max()),
                          "sum_of_squares": int((sizes.astype(np.int64) ** 2).sum())},
        "rss_before_mb": round(rss_before / 2**20, 1), "peak_rss_mb": round(probe.peak / 2**20, 1),
        "peak_increase_mb": round((probe.peak - rss_before) / 2**20, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "embeddings_mb": round(x.nbytes / 2**20, 1),
        "labels_sha": _sha(fitted.labels), "centroids_sha": _sha(fitted.centroids), "keep_sha": _sha(keep),
    })
    if args.threads:
        from threadpoolctl import threadpool_limits

        checks = {}
        for n in [int(v) for v in args.threads.split(",") if v]:
            t = time.perf_counter()
            with threadpool_limits(n):  # faiss's OpenMP and both BLAS libraries
                again = km.fit(xn, k, seed=args.seed, spherical=True, threads=n, prepared=True)
            checks[str(n)] = {"seconds": round(time.perf_counter() - t, 3),
                              "identical": bool(np.array_equal(again.labels, fitted.labels)
                                                and np.array_equal(again.centroids, fitted.centroids))}
        out["thread_check"] = checks
    if args.baseline:
        t = time.perf_counter()
        numpy_kmeans_baseline(xn, k, args.seed)
        out["baseline_numpy_kmeans_s"] = round(time.perf_counter() - t, 3)
    out["machine"]["loadavg_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
