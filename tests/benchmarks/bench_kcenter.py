"""Benchmark: k-center greedy, the Numba kernel against NumPy doing the same algorithm.

200,000 x 256 float32 standard-normal embeddings (seeded), 5,000 centers from
row 0. Both sides compute exactly the same distances (float64 differences of
the float32 values) and the same greedy order (argmax, lowest index on ties),
so their picks must be identical. The NumPy side is the fastest direct form
we found: per step, blocks of 256 rows, ``X[s:e] - c`` into a preallocated
float64 buffer, ``einsum('ij,ij->i')`` and an in-place ``minimum`` (the
one-line ``((X64 - c) ** 2).sum(1)`` is about 3x slower; the block size was
tuned over 256..4096). The Gram expansion ``|x|^2 - 2 x.c + |c|^2`` is faster
in NumPy but is a different computation (it cancels digits, so picks may
differ); ``--expansion-steps`` times it over the first steps for context.

JIT compile is excluded (the kernel is warmed up on a small input first).
Times are wall clock (``*_s``) and this process's CPU time (``*_cpu_s``:
NumPy runs on one thread, the kernel on all of Numba's). Run it on an
otherwise idle machine; the load averages before, between and after are
printed because a shared machine skews the times:

    .venv/bin/python tests/benchmarks/bench_kcenter.py [--n 200000 --d 256 --k 5000]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numba
import numpy as np

from cbdsl.pipelines.engine.kernels.kcenter import kcenter_greedy


def kcenter_numpy(X: np.ndarray, k: int, first: int, block: int = 256) -> np.ndarray:
    """Farthest-first traversal, vectorized NumPy: one blocked pass over the rows per step."""
    n, d = X.shape
    mind = np.full(n, np.inf)
    picks = np.empty(k, dtype=np.int64)
    buf = np.empty((block, d))
    cur = first
    for t in range(k):
        picks[t] = cur
        mind[cur] = -1.0  # chosen: stays below every distance, never picked again
        if t == k - 1:
            break
        c = X[cur].astype(np.float64)
        for s in range(0, n, block):
            e = min(s + block, n)
            b = buf[: e - s]
            np.subtract(X[s:e], c, out=b)
            np.minimum(mind[s:e], np.einsum("ij,ij->i", b, b), out=mind[s:e])
        cur = int(np.argmax(mind))  # first maximum: the lowest index
    return picks


def kcenter_numpy_expansion(X: np.ndarray, k: int, first: int) -> np.ndarray:
    """The same traversal with distances from the Gram expansion (a BLAS matvec per step)."""
    X64 = X.astype(np.float64)
    sq = np.einsum("ij,ij->i", X64, X64)
    mind = np.full(X.shape[0], np.inf)
    picks = np.empty(k, dtype=np.int64)
    cur = first
    for t in range(k):
        picks[t] = cur
        mind[cur] = -1.0
        if t == k - 1:
            break
        c = X64[cur]
        np.minimum(mind, sq - 2.0 * (X64 @ c) + c @ c, out=mind)
        mind[picks[: t + 1]] = -1.0
        cur = int(np.argmax(mind))
    return picks


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--k", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block", type=int, default=256, help="rows per NumPy block")
    ap.add_argument("--expansion-steps", type=int, default=200, help="steps of the Gram-expansion variant to time (0: skip)")
    args = ap.parse_args(argv)

    X = np.random.default_rng(args.seed).standard_normal((args.n, args.d), dtype=np.float32)
    first = 0
    load_before = os.getloadavg()

    kcenter_greedy(X[:2000], 20, first)  # compile (or load from the cache) outside the timing

    t0, c0 = time.perf_counter(), time.process_time()
    picks_numba = kcenter_greedy(X, args.k, first)
    numba_s, numba_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    load_between = os.getloadavg()

    t0, c0 = time.perf_counter(), time.process_time()
    picks_numpy = kcenter_numpy(X, args.k, first, args.block)
    numpy_s, numpy_cpu_s = time.perf_counter() - t0, time.process_time() - c0

    result = {
        "benchmark": "kcenter_greedy",
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "seed": args.seed,
        "numba_s": round(numba_s, 3),
        "numpy_s": round(numpy_s, 3),
        "speedup": round(numpy_s / numba_s, 2),
        "picks_identical": bool(np.array_equal(picks_numba, picks_numpy)),
        "numba_cpu_s": round(numba_cpu_s, 3),
        "numpy_cpu_s": round(numpy_cpu_s, 3),
        "numba_ms_per_step": round(1000 * numba_s / args.k, 2),
        "numpy_ms_per_step": round(1000 * numpy_s / args.k, 2),
    }
    if args.expansion_steps:
        steps = min(args.expansion_steps, args.k)
        t0 = time.perf_counter()
        picks_exp = kcenter_numpy_expansion(X, steps, first)
        exp_s = time.perf_counter() - t0
        result["numpy_expansion_ms_per_step"] = round(1000 * exp_s / steps, 2)
        result["numpy_expansion_steps_timed"] = steps
        result["numpy_expansion_same_first_picks"] = bool(np.array_equal(picks_exp, picks_numba[:steps]))
    result.update(
        {
            "numba_threads": numba.get_num_threads(),
            "numba_threading_layer": numba.threading_layer(),
            "cpu_count": os.cpu_count(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_between": [round(x, 2) for x in load_between],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__,
            "machine": platform.processor() or platform.machine(),
        }
    )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
