"""k-center greedy over embeddings (Sener & Savarese 2018): farthest-point selection, tiled and parallel, identical for every thread count."""

from __future__ import annotations

import numpy as np
from numba import prange

from cbdsl.pipelines.engine.kernels.boundary import jit, as_array, as_int


_KC_TILE = 128  # rows per parallel task; fixed, so no result depends on the thread count
_KC_COPY_LIMIT = 1 << 30  # bytes: up to this size the embeddings get a tiled copy (the fast path)


@jit()
def _kc_tiles(emb):
    # The embeddings in tiles of _KC_TILE rows, each stored transposed
    # (tile, column, row), so distance loops can run over rows in SIMD lanes.
    # Made once per call, so serial (a parallel loop costs compile time).
    n, d = emb.shape
    ntiles = (n + _KC_TILE - 1) // _KC_TILE
    tiles = np.zeros((ntiles, d, _KC_TILE), dtype=np.float32)
    for tile in range(ntiles):
        lo = tile * _KC_TILE
        m = min(lo + _KC_TILE, n) - lo
        for r0 in range(0, m, 16):
            r1 = min(r0 + 16, m)
            for j in range(d):
                for r in range(r0, r1):
                    tiles[tile, j, r] = emb[lo + r, j]
    return tiles


@jit(parallel=True)
def _kc_pass4(tiles, n, centers, mind, spec_dist, tmax, targ):
    # One read of the embeddings for four centers: row 0 of `centers` is the
    # new center (it lowers every row's min distance), rows 1-3 are guesses
    # at the next centers (their distances go to `spec_dist`, for later).
    # The inner loop runs over the rows of a tile and vectorizes; each
    # distance is still summed column by column, as in _kc_pass1. Also
    # reports each tile's (max, lowest argmax) of the updated distances.
    d = tiles.shape[1]
    for tile in prange(tmax.shape[0]):
        lo = tile * _KC_TILE
        m = min(lo + _KC_TILE, n) - lo
        a0 = np.zeros(_KC_TILE)
        a1 = np.zeros(_KC_TILE)
        a2 = np.zeros(_KC_TILE)
        a3 = np.zeros(_KC_TILE)
        for j in range(d):
            c0 = centers[0, j]
            c1 = centers[1, j]
            c2 = centers[2, j]
            c3 = centers[3, j]
            col = tiles[tile, j]
            for r in range(m):
                x = np.float64(col[r])
                t0 = x - c0
                t1 = x - c1
                t2 = x - c2
                t3 = x - c3
                a0[r] += t0 * t0
                a1[r] += t1 * t1
                a2[r] += t2 * t2
                a3[r] += t3 * t3
        best = -np.inf
        arg = -1
        for r in range(m):
            i = lo + r
            spec_dist[0, i] = a1[r]
            spec_dist[1, i] = a2[r]
            spec_dist[2, i] = a3[r]
            v = mind[i]
            if a0[r] < v:
                v = a0[r]
                mind[i] = v
            if v > best:
                best = v
                arg = i
        tmax[tile] = best
        targ[tile] = arg


@jit(parallel=True)
def _kc_pass1(emb, center, mind, tmax, targ):
    # The same update for one center, read row by row from the caller's
    # array: the path for embeddings too large to copy.
    n, d = emb.shape
    for tile in prange(tmax.shape[0]):
        lo = tile * _KC_TILE
        hi = min(lo + _KC_TILE, n)
        best = -np.inf
        arg = -1
        for i in range(lo, hi):
            s = 0.0
            for j in range(d):
                t = np.float64(emb[i, j]) - center[j]
                s += t * t
            v = mind[i]
            if s < v:
                v = s
                mind[i] = v
            if v > best:
                best = v
                arg = i
        tmax[tile] = best
        targ[tile] = arg


@jit()
def _kc_apply(dist, mind, tmax, targ):
    # Lower the min distances with a center whose distances are known, and
    # report each tile's (max, lowest argmax). Serial: a pass over two
    # float64 vectors is too short to pay for waking threads.
    n = mind.shape[0]
    for tile in range(tmax.shape[0]):
        lo = tile * _KC_TILE
        hi = min(lo + _KC_TILE, n)
        best = -np.inf
        arg = -1
        for i in range(lo, hi):
            v = mind[i]
            if dist[i] < v:
                v = dist[i]
                mind[i] = v
            if v > best:
                best = v
                arg = i
        tmax[tile] = best
        targ[tile] = arg


@jit()
def _kc_argmax(tmax, targ):
    best = -np.inf
    arg = -1
    for tile in range(tmax.shape[0]):
        if tmax[tile] > best:
            best = tmax[tile]
            arg = targ[tile]
    return arg


@jit()
def _kc_top3(mind):
    # The three rows with the largest min distance (ties: lowest index), -1
    # where fewer rows are left; chosen rows hold -1 and are never among them.
    top = np.full(3, -1, dtype=np.int64)
    val = np.full(3, -1.0)
    for i in range(mind.shape[0]):
        v = mind[i]
        if v > val[2]:
            if v > val[1]:
                val[2] = val[1]
                top[2] = top[1]
                if v > val[0]:
                    val[1] = val[0]
                    top[1] = top[0]
                    val[0] = v
                    top[0] = i
                else:
                    val[1] = v
                    top[1] = i
            else:
                val[2] = v
                top[2] = i
    return top


def _kcenter_run(emb: np.ndarray, k: int, first: int, already: np.ndarray, tiled: bool) -> np.ndarray:
    # The greedy loop, one iteration per center (never per row): each step
    # is one or two whole-column kernel calls.
    n, d = emb.shape
    mind = np.full(n, np.inf)
    ntiles = (n + _KC_TILE - 1) // _KC_TILE
    tmax = np.empty(ntiles)
    targ = np.empty(ntiles, dtype=np.int64)
    picks = np.empty(k, dtype=np.int64)

    if not tiled:
        for c in already:
            _kc_pass1(emb, emb[c].astype(np.float64), mind, tmax, targ)
        mind[already] = -1.0  # chosen: never picked again
        cur = first if first >= 0 else int(np.argmax(mind))  # first maximum: lowest index
        for t in range(k):
            picks[t] = cur
            mind[cur] = -1.0
            if t < k - 1:
                _kc_pass1(emb, emb[cur].astype(np.float64), mind, tmax, targ)
                cur = _kc_argmax(tmax, targ)
        return picks

    tiles = _kc_tiles(emb)
    spec_dist = np.empty((3, n))
    centers = np.empty((4, d))
    # Pre-selected centers four to a pass: the first through the pass, the
    # other three from the distances the pass computed for them.
    for start in range(0, already.shape[0], 4):
        group = already[start : start + 4]
        centers[:] = emb[group[np.minimum(np.arange(4), group.shape[0] - 1)]]
        _kc_pass4(tiles, n, centers, mind, spec_dist, tmax, targ)
        for q in range(1, group.shape[0]):
            _kc_apply(spec_dist[q - 1], mind, tmax, targ)
    mind[already] = -1.0
    cur = first if first >= 0 else int(np.argmax(mind))
    t = 0
    while True:
        picks[t] = cur
        mind[cur] = -1.0
        t += 1
        if t == k:
            return picks
        # Guess that the next centers are the current runners-up: their
        # distances come with the same read of the embeddings. A guess is
        # used only when it is the true next argmax, so the order is exactly
        # that of one pass per center.
        guesses = _kc_top3(mind)
        centers[0] = emb[cur]
        for q in range(3):
            centers[q + 1] = emb[guesses[q] if guesses[q] >= 0 else cur]
        _kc_pass4(tiles, n, centers, mind, spec_dist, tmax, targ)
        cur = _kc_argmax(tmax, targ)
        used = [False, False, False]
        while True:
            hit = next((q for q in range(3) if guesses[q] == cur and not used[q]), -1)
            if hit < 0:
                break
            used[hit] = True
            picks[t] = cur
            mind[cur] = -1.0
            t += 1
            if t == k:
                return picks
            _kc_apply(spec_dist[hit], mind, tmax, targ)
            cur = _kc_argmax(tmax, targ)


def kcenter_greedy(emb, k: int, first: int | None, already=None) -> np.ndarray:
    """Farthest-first traversal: the k-center greedy core set (Sener & Savarese 2018).

    ``select kcenter(EMB, seed)`` picks a diverse subset: each new center is
    the row farthest from all centers chosen so far. Start from row ``first``
    (the caller derives it from the seed), keep each row's minimum squared
    Euclidean distance to the chosen centers, and pick the row with the
    largest one at each step; ties go to the lowest row index. ``already``
    (int64 row indices) are centers chosen before (say, a labelled set): they
    count as centers but are not returned. With ``already`` non-empty,
    ``first=None`` starts from the row farthest from them, as the paper does.
    Chosen rows are never picked again; once every distinct row is a center,
    duplicates follow in index order.

    Distances are accumulated in float64 from the float32 embeddings, column
    by column: ``d(i, c) = sum over j in order of (float64(x[i, j]) -
    float64(x[c, j]))**2``, so the picks equal those of the plain algorithm
    with one full pass per step (``tests/kernels/test_kcenter.py`` has it).

    Speed: each step is a pass over all n x d values, bound by memory
    bandwidth, so the kernel makes fewer passes. Every pass also computes the
    distances to the three current runners-up (the rows with the next largest
    minimum distances); when the next argmax turns out to be one of them, its
    distances are already known and that step needs no pass. A guess is only
    ever used when it is the true argmax, so the order is exactly the greedy
    one; on random data most guesses hit. The pass runs over a tiled,
    transposed copy of the embeddings (the inner loop over rows vectorizes),
    which costs one more copy of ``emb`` in memory (plus 24 bytes a row);
    pre-selected centers go four to a pass the same way. Above 1 GiB of
    embeddings the kernel reads the caller's array instead, one pass per
    center. Rows are updated in parallel, each on its own, and the argmax is
    reduced serially over fixed tiles of 128 rows, so the result does not
    depend on the thread count. The loop over steps is Python (one or two
    kernel calls per center, never a loop per row).

    ``emb`` is float32[n, d] and finite; returns the k new picks, int64[k],
    in the order chosen.
    """
    emb = as_array(emb, np.float32, 2, "emb")
    n = emb.shape[0]
    k = as_int(k, "k")
    already = as_array(np.empty(0, np.int64) if already is None else already, np.int64, 1, "already")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if already.size and (already.min() < 0 or already.max() >= n):
        raise ValueError(f"already holds row indices outside [0, {n})")
    if np.unique(already).size != already.size:
        raise ValueError("already holds a row index twice")
    if k + already.size > n:
        raise ValueError(f"cannot pick {k} new centers: only {n - already.size} rows are not centers already")
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if first is None:
        if not already.size:
            raise ValueError("first=None needs pre-selected centers in `already`")
        first_i = -1
    else:
        first_i = as_int(first, "first")
        if not 0 <= first_i < n:
            raise ValueError(f"first must be a row index in [0, {n}), got {first_i}")
        if already.size and (already == first_i).any():
            raise ValueError(f"first={first_i} is already a center")
    if not np.isfinite(emb).all():
        raise ValueError("emb holds NaN or infinite values")
    return _kcenter_run(emb, k, first_i, already, emb.nbytes <= _KC_COPY_LIMIT)
