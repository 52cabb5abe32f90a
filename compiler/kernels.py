"""Numba kernels the evaluator calls on whole columns.

Lowering uses native Polars expressions wherever one exists; this module holds
only what Polars cannot do: stable hashing, k-center greedy, near-duplicate
search (MinHash LSH, SemDeDup), mix-quota allocation and DataComp's threshold.
Every function takes and returns NumPy arrays for a whole column, validates
shapes and dtypes here at the Python boundary, and handles empty inputs.

Determinism is a promise of the language (DESIGN.md, semantics 7): the same
inputs give byte-identical outputs for every thread count (and, as floats
are plain IEEE operations in a fixed order, without fast-math, on every
machine). So ``prange`` is used only where each iteration writes its own outputs
from its own inputs (per row, per band, per chunk with a fixed size), and
every reduction across iterations runs serially in index order; no result
depends on scheduling. Ties are broken by the lowest index everywhere.

Only the evaluator imports this module (``cbdsl check`` must never import
numba or numpy). Kernels are compiled with ``cache=True``: a second process
loads the machine code from ``__pycache__`` instead of compiling. Where the
source tree is read-only Numba falls back to its user-wide cache directory,
and where no cache directory is writable at all the kernels are compiled
without a cache (see :func:`_jit`).

Array arguments are converted only when the conversion is safe (``int32``
offsets to ``int64``, ``float16`` embeddings to ``float32``); anything else
raises ``TypeError`` rather than silently changing the values.
"""

from __future__ import annotations

import math
import operator
from fractions import Fraction
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
from numba import njit, prange

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "QuotaAllocation",
    "allocate_quotas",
    "datacomp_threshold",
    "hash_ids",
    "hash_strings",
    "hash_u64",
    "kcenter_greedy",
    "lsh_groups",
    "minhash_params",
    "minhash_signatures",
    "semdedup_keep",
    "text_shingles",
]


def _jit(parallel: bool = False):
    """``njit(cache=True)``, or ``njit`` without a cache where no cache directory is writable.

    Numba looks for a cache directory when the function is decorated: next to
    the source (``__pycache__``), then a user-wide one (``NUMBA_CACHE_DIR`` or
    the platform cache). Only if none is writable does it raise, and a kernel
    that compiles on every process start is better than an evaluator that
    cannot import.
    """

    def decorate(fn):
        try:
            return njit(cache=True, parallel=parallel, nogil=True)(fn)
        except RuntimeError:
            return njit(cache=False, parallel=parallel, nogil=True)(fn)

    return decorate


# ---------------------------------------------------------------------------
# Boundary checks
# ---------------------------------------------------------------------------


def _array(x, dtype, ndim: int, name: str) -> np.ndarray:
    """``x`` as a C-contiguous array of ``dtype``, converting only where the conversion is safe."""
    a = np.asarray(x)
    dtype = np.dtype(dtype)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {a.shape}")
    if a.dtype != dtype:
        # An empty list comes in as float64: any dtype will do for no values.
        if a.size and not np.can_cast(a.dtype, dtype, casting="safe"):
            raise TypeError(f"{name} must be {dtype} (got {a.dtype}); convert it explicitly")
        a = a.astype(dtype)
    return np.ascontiguousarray(a)


def _int(x, name: str) -> int:
    if isinstance(x, bool):
        raise TypeError(f"{name} must be an integer, got {x!r}")
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {x!r}") from None


def _check_offsets(offsets: np.ndarray, n_values: int, name: str) -> None:
    if offsets.shape[0] == 0:
        raise ValueError(f"{name} must have n+1 >= 1 entries (Arrow-style offsets), got none")
    if offsets[0] < 0 or offsets[-1] > n_values:
        raise ValueError(
            f"{name} must lie within [0, {n_values}] (the length of the values), "
            f"got {int(offsets[0])}..{int(offsets[-1])}"
        )
    if offsets.shape[0] > 1 and (np.diff(offsets) < 0).any():
        raise ValueError(f"{name} must be non-decreasing")


# ---------------------------------------------------------------------------
# 1. Hashing
# ---------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x00000100000001B3)
_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment (the golden ratio)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)


@_jit()
def _mix64(z):
    # splitmix64's finalizer (Stafford's Mix13): a bijection on uint64.
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@_jit(parallel=True)
def _hash_ids_kernel(offsets, data):
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.uint64)
    for i in prange(n):
        h = _FNV_OFFSET
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * _FNV_PRIME
        out[i] = _mix64(h)
    return out


@_jit()
def _hash_u64_kernel(x, salt):
    # Serial: a few instructions per value, memory-bound; threads would not pay.
    out = np.empty(x.shape[0], dtype=np.uint64)
    for i in range(x.shape[0]):
        out[i] = _mix64(x[i] ^ salt)
    return out


def _mix64_py(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _splitmix64_stream(seed: int, count: int) -> list[int]:
    """The first ``count`` outputs of splitmix64 seeded with ``seed`` (mod 2**64)."""
    state = seed & _MASK64
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        out.append(_mix64_py(state))
    return out


def hash_ids(offsets, data) -> np.ndarray:
    """A stable 64-bit hash of each UTF-8 string of an Arrow-style string column.

    Row ids are hashed to break every tie and to derive every seeded random
    key, so selections depend on this exact function forever; Polars' own
    ``hash()`` may change between Polars versions, so it is not used. The
    function, for the bytes ``b[0..L)`` of one string:

        h = 0xcbf29ce484222325                      # FNV-1a 64, offset basis
        for each byte c: h = (h XOR c) * 0x100000001b3   (mod 2**64)
        z = h                                       # splitmix64 finalizer
        z = (z XOR (z >> 30)) * 0xbf58476d1ce4e5b9  (mod 2**64)
        z = (z XOR (z >> 27)) * 0x94d049bb133111eb  (mod 2**64)
        hash = z XOR (z >> 31)

    FNV-1a alone mixes the last bytes poorly into the high bits; the finalizer
    fixes that, so the hash can be sorted on or cut into bands directly.
    Pinned in ``tests/test_kernels.py``: ``""`` hashes to
    ``0xf52a15e9a9b5e89b`` and ``"abc"`` to ``0x0dd490490804b508``.

    ``offsets`` is int64[n+1] (string i is ``data[offsets[i]:offsets[i+1]]``;
    ``offsets[0]`` need not be 0, as in a sliced Arrow array), ``data`` is
    uint8[m]. Returns uint64[n].
    """
    offsets = _array(offsets, np.int64, 1, "offsets")
    data = _array(data, np.uint8, 1, "data")
    _check_offsets(offsets, data.shape[0], "offsets")
    if offsets.shape[0] == 1:
        return np.empty(0, dtype=np.uint64)
    return _hash_ids_kernel(offsets, data)


def _as_string_series(values, name: str) -> "pl.Series":
    import polars as pl

    if isinstance(values, pl.Series):
        s = values
    else:
        s = pl.Series(name, list(values) if not isinstance(values, np.ndarray) else values, dtype=pl.String)
    if isinstance(s.dtype, (pl.Categorical, pl.Enum)):
        s = s.cast(pl.String)
    if s.dtype != pl.String:
        raise TypeError(f"{name} must be strings, got a column of {s.dtype}")
    return s


def _string_buffers(s: "pl.Series", use_arrow: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Arrow-style (offsets, bytes) of a String Series without nulls, without a Python loop per row.

    With pyarrow (not a dependency of cbdsl, but usually present) the buffers
    are read in place; without it, Polars concatenates the strings into one
    and reports the byte lengths. Both give the same arrays.
    """
    if use_arrow:
        try:
            import pyarrow as pa
        except ImportError:
            use_arrow = False
    if use_arrow:
        arr = s.rechunk().to_arrow()
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.type != pa.large_string():
            arr = arr.cast(pa.large_string())
        buffers = arr.buffers()
        offsets = np.frombuffer(buffers[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
        data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
        return offsets, data
    lengths = s.str.len_bytes().to_numpy().astype(np.int64)
    offsets = np.zeros(len(s) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    joined = s.str.join("").item() if len(s) else ""
    data = np.frombuffer((joined or "").encode("utf-8"), dtype=np.uint8)
    return offsets, data


def hash_strings(values: "Sequence[str] | pl.Series") -> np.ndarray:
    """:func:`hash_ids` of a Polars String Series (or a sequence of str): uint64[n].

    The convenience the evaluator uses on the id column. Null values raise
    ``ValueError``: an id must exist to break a tie by it.
    """
    s = _as_string_series(values, "values")
    if s.null_count():
        raise ValueError(f"cannot hash {s.null_count()} null value(s); fill or drop them first")
    if len(s) == 0:
        return np.empty(0, dtype=np.uint64)
    offsets, data = _string_buffers(s)
    return hash_ids(offsets, data)


def hash_u64(x, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each uint64 value: the keys of every seeded random choice.

    ``random(seed)`` selects by sorting on ``hash_u64(hash_ids(id), seed)``:
    a permutation that depends only on the ids and the seed, never on row
    order or thread count. The function, with ``seed`` taken mod 2**64:

        salt = splitmix64(seed)      = mix64(seed + 0x9e3779b97f4a7c15)
        hash = mix64(x XOR salt)

    where ``mix64`` is the splitmix64 finalizer of :func:`hash_ids`. As
    ``mix64`` is a bijection, distinct values keep distinct keys for every
    seed. ``x`` is uint64[n]; returns uint64[n].
    """
    x = _array(x, np.uint64, 1, "x")
    salt = np.uint64(_splitmix64_stream(_int(seed, "seed"), 1)[0])
    if x.shape[0] == 0:
        return np.empty(0, dtype=np.uint64)
    return _hash_u64_kernel(x, salt)


# ---------------------------------------------------------------------------
# 2. k-center greedy
# ---------------------------------------------------------------------------

_KC_TILE = 128  # rows per parallel task; fixed, so no result depends on the thread count
_KC_COPY_LIMIT = 1 << 30  # bytes: up to this size the embeddings get a tiled copy (the fast path)


@_jit()
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


@_jit(parallel=True)
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


@_jit(parallel=True)
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


@_jit()
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


@_jit()
def _kc_argmax(tmax, targ):
    best = -np.inf
    arg = -1
    for tile in range(tmax.shape[0]):
        if tmax[tile] > best:
            best = tmax[tile]
            arg = targ[tile]
    return arg


@_jit()
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
    with one full pass per step (``tests/test_kernels.py`` has it).

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
    emb = _array(emb, np.float32, 2, "emb")
    n = emb.shape[0]
    k = _int(k, "k")
    already = _array(np.empty(0, np.int64) if already is None else already, np.int64, 1, "already")
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
        first_i = _int(first, "first")
        if not 0 <= first_i < n:
            raise ValueError(f"first must be a row index in [0, {n}), got {first_i}")
        if already.size and (already == first_i).any():
            raise ValueError(f"first={first_i} is already a center")
    if not np.isfinite(emb).all():
        raise ValueError("emb holds NaN or infinite values")
    return _kcenter_run(emb, k, first_i, already, emb.nbytes <= _KC_COPY_LIMIT)


# ---------------------------------------------------------------------------
# 3. MinHash and LSH
# ---------------------------------------------------------------------------

_P61 = np.uint64((1 << 61) - 1)  # the Mersenne prime 2**61 - 1
_EMPTY_SIG = np.uint64(_MASK64)  # the signature value of a row without shingles
_M29 = np.uint64((1 << 29) - 1)
_M32 = np.uint64((1 << 32) - 1)
_S3 = np.uint64(3)
_S29 = np.uint64(29)
_S32 = np.uint64(32)
_S61 = np.uint64(61)


@_jit()
def _mulmod61(a, x):
    # (a * x) mod 2**61-1 for a, x < 2**61-1 without 128-bit integers: split
    # into 32-bit halves and fold with 2**61 = 1 (mod p), so 2**64 = 8.
    a_hi = a >> _S32
    a_lo = a & _M32
    x_hi = x >> _S32
    x_lo = x & _M32
    lo = a_lo * x_lo
    cross = a_hi * x_lo + a_lo * x_hi  # < 2**62
    hi = a_hi * x_hi  # < 2**58
    r = (hi << _S3) + (cross >> _S29) + ((cross & _M29) << _S32) + (lo >> _S61) + (lo & _P61)
    r = (r & _P61) + (r >> _S61)
    if r >= _P61:
        r -= _P61
    return r


@_jit(parallel=True)
def _minhash_kernel(offsets, shingles, a, b):
    n = offsets.shape[0] - 1
    num_perm = a.shape[0]
    out = np.empty((n, num_perm), dtype=np.uint64)
    for i in prange(n):
        for p in range(num_perm):
            out[i, p] = _EMPTY_SIG
        for s in range(offsets[i], offsets[i + 1]):
            x = shingles[s] % _P61
            for p in range(num_perm):
                v = _mulmod61(a[p], x) + b[p]
                if v >= _P61:
                    v -= _P61
                if v < out[i, p]:
                    out[i, p] = v
    return out


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of the universal hashes: a in [1, p-1], b in [0, p-1], from splitmix64(seed).

    Drawn interleaved (a0, b0, a1, b1, ...) so the first m permutations of a
    larger num_perm are the m permutations of a smaller one.
    """
    p = (1 << 61) - 1
    stream = _splitmix64_stream(seed, 2 * num_perm)
    a = np.array([1 + v % (p - 1) for v in stream[0::2]], dtype=np.uint64)
    b = np.array([v % p for v in stream[1::2]], dtype=np.uint64)
    return a, b


def minhash_signatures(offsets, shingles, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures of per-row shingle sets: uint64[n, num_perm].

    Near-duplicate text is found by comparing signatures instead of texts:
    the share of equal signature values estimates the Jaccard similarity of
    two rows' shingle sets. Row i's shingles are
    ``shingles[offsets[i]:offsets[i+1]]`` (CSR form, from :func:`text_shingles`).

    Permutation p is the universal hash ``h_p(x) = (a_p * (x mod P) + b_p) mod P``
    with the Mersenne prime ``P = 2**61 - 1`` (as datasketch does, but exact:
    the product is reduced without overflow), and signature value p of a row
    is the minimum of ``h_p`` over its shingles. ``a_p`` and ``b_p`` come from
    splitmix64 seeded with ``seed`` (mod 2**64): outputs are drawn in pairs,
    ``a_p = 1 + out[2p] mod (P-1)``, ``b_p = out[2p+1] mod P``. A row without
    shingles gets the value 2**64-1 in every column (no real value reaches it).
    """
    offsets = _array(offsets, np.int64, 1, "offsets")
    shingles = _array(shingles, np.uint64, 1, "shingles")
    num_perm = _int(num_perm, "num_perm")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    _check_offsets(offsets, shingles.shape[0], "offsets")
    a, b = _permutations(num_perm, _int(seed, "seed"))
    if offsets.shape[0] == 1:
        return np.empty((0, num_perm), dtype=np.uint64)
    return _minhash_kernel(offsets, shingles, a, b)


@_jit(parallel=True)
def _band_keys(sig, bands, rows):
    # A 64-bit key of each row's values in each band: rows with equal band
    # values get equal keys (unequal values almost never do).
    n = sig.shape[0]
    keys = np.empty((bands, n), dtype=np.uint64)
    for i in prange(n):
        for band in range(bands):
            h = np.uint64(band)
            for q in range(rows):
                h = _mix64(h ^ sig[i, band * rows + q]) + _GAMMA
            keys[band, i] = h
    return keys


@_jit()
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


@_jit()
def _band_equal(sig, i, j, lo, hi):
    for q in range(lo, hi):
        if sig[i, q] != sig[j, q]:
            return False
    return True


@_jit()
def _union_bands(sig, keys, orders, rows):
    bands, n = keys.shape
    parent = np.arange(n)
    for band in range(bands):
        key = keys[band]
        order = orders[band]
        lo = band * rows
        hi = lo + rows
        s = 0
        while s < n:
            e = s + 1
            while e < n and key[order[e]] == key[order[s]]:
                e += 1
            # Rows s..e share the key; union those whose band values are equal
            # (the key only finds candidates; a 64-bit collision is not a match).
            for p in range(s + 1, e):
                i = order[p]
                for q in range(s, p):
                    j = order[q]
                    if _band_equal(sig, i, j, lo, hi):
                        ri = _find(parent, i)
                        rj = _find(parent, j)
                        if ri < rj:
                            parent[rj] = ri
                        elif rj < ri:
                            parent[ri] = rj
                        break
            s = e
    groups = np.empty(n, dtype=np.int64)
    for i in range(n):
        groups[i] = _find(parent, i)
    return groups


def lsh_groups(signatures, bands: int, rows: int) -> np.ndarray:
    """Near-duplicate groups from MinHash signatures by banded LSH: int64[n].

    Signature columns ``[b*rows, (b+1)*rows)`` form band b; two rows whose
    values are all equal in any band are candidates, and candidates are
    merged transitively (union-find with path halving, always linking the
    larger root under the smaller). A row's group id is therefore the
    smallest row index of its group, whatever order the work was done in;
    a row without near-duplicates is its own group. Band equality is exact
    (a 64-bit key finds candidates, the values decide). ``bands * rows`` may
    be less than num_perm (the rest is unused, as in datasketch).

    Note that rows without shingles (all values 2**64-1) match each other.
    """
    sig = _array(signatures, np.uint64, 2, "signatures")
    bands = _int(bands, "bands")
    rows = _int(rows, "rows")
    if bands < 1 or rows < 1:
        raise ValueError(f"bands and rows must be >= 1, got bands={bands}, rows={rows}")
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands * rows = {bands * rows} exceeds the {sig.shape[1]} signature columns")
    n = sig.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    keys = _band_keys(sig, bands, rows)
    orders = np.argsort(keys, axis=1, kind="stable")  # rows with equal keys become neighbours
    return _union_bands(sig, keys, orders, rows)


def _gauss_legendre(f, lo: float, hi: float, nodes: np.ndarray, weights: np.ndarray) -> float:
    x = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
    return float(0.5 * (hi - lo) * np.dot(weights, f(x)))


def minhash_params(
    threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) for LSH at a Jaccard ``threshold``, as datasketch's ``_optimal_param`` picks them.

    A pair with Jaccard similarity s becomes a candidate with probability
    ``P(s) = 1 - (1 - s**rows)**bands``. The false-positive mass is the
    integral of P over [0, threshold], the false-negative mass the integral
    of 1 - P over [threshold, 1]; the pick minimises their weighted sum over
    all ``bands * rows <= num_perm``, scanning bands then rows in increasing
    order and keeping the first minimum. P is a polynomial of degree at most
    num_perm, so Gauss-Legendre quadrature with ``num_perm // 2 + 1`` nodes
    integrates it exactly (up to rounding; capped at 256 nodes).
    """
    threshold = float(threshold)
    num_perm = _int(num_perm, "num_perm")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    nodes, weights = np.polynomial.legendre.leggauss(min(num_perm // 2 + 1, 256))
    best, opt = math.inf, (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _gauss_legendre(lambda s: 1.0 - (1.0 - s**r) ** b, 0.0, threshold, nodes, weights)
            fn = _gauss_legendre(lambda s: (1.0 - s**r) ** b, threshold, 1.0, nodes, weights)
            error = fp * false_positive_weight + fn * false_negative_weight
            if error < best:
                best, opt = error, (b, r)
    return opt


def text_shingles(texts, ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Word n-gram shingle hashes of each text, in CSR form: (offsets int64[n+1], shingles uint64[m]).

    The input of :func:`minhash_signatures`. Each text is lowercased and
    split on whitespace (Unicode ``\\s``); each run of ``ngram`` consecutive
    words, joined by single spaces, is hashed with :func:`hash_ids`. A text
    with fewer than ``ngram`` words is one shingle: its words joined by single
    spaces (so an empty or blank text is the shingle ``""``). Nulls count as
    empty texts. Shingles keep their order in the text and are not
    deduplicated (a minimum does not care). Vectorized with Polars: no Python
    loop per row.
    """
    import polars as pl

    ngram = _int(ngram, "ngram")
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    s = _as_string_series(texts, "texts").fill_null("")
    n = len(s)
    if n == 0:
        return np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.uint64)
    words = s.str.to_lowercase().str.extract_all(r"\S+")
    n_words = words.list.len().to_numpy().astype(np.int64)
    long = n_words >= ngram
    counts = np.where(long, n_words - ngram + 1, 1)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    out = np.empty(int(offsets[-1]), dtype=np.uint64)
    in_long_row = np.repeat(long, counts)
    if long.any():
        lw = n_words[long]
        flat = words.filter(pl.Series(long)).explode()  # no empty lists left: version-proof
        pos = np.arange(flat.len()) - np.repeat(np.cumsum(lw) - lw, lw)
        starts = pos <= np.repeat(lw, lw) - ngram
        frame = pl.DataFrame({"w": flat})
        grams = frame.select(
            pl.concat_str([pl.col("w").shift(-j) for j in range(ngram)], separator=" ")
        ).to_series().filter(pl.Series(starts))
        out[in_long_row] = hash_strings(grams)
    if not long.all():
        out[~in_long_row] = hash_strings(words.filter(pl.Series(~long)).list.join(" "))
    return offsets, out


# ---------------------------------------------------------------------------
# 4. SemDeDup
# ---------------------------------------------------------------------------


@_jit(parallel=True)
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
    emb = _array(emb, np.float32, 2, "emb")
    n = emb.shape[0]
    cluster = _array(cluster, np.int64, 1, "cluster")
    order = _array(order, np.int64, 1, "order")
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


# ---------------------------------------------------------------------------
# 5. Mix quotas
# ---------------------------------------------------------------------------


class QuotaAllocation(NamedTuple):
    """Rows per mix group, and what each group could not supply."""

    quota: np.ndarray  # int64[g]: rows to select from each group; sums to the budget
    shortfall: np.ndarray  # float64[g]: nominal share minus the water-filled share, >= 0


def allocate_quotas(weights, available, budget: int) -> QuotaAllocation:
    """Split an exact ``budget`` over mix groups by weight, within what each group has.

    ``mix by source {...}`` with ``budget N`` (DESIGN.md semantics 4 and 5).
    A group's nominal share is ``budget * w_i / sum(w)``. A group with fewer
    rows than its share gives all it has, and the rest of the budget is
    spread over the other groups in proportion to their weights, repeatedly,
    until no group is asked for more than it has (water-filling). The
    water-filled shares are then rounded by the largest-remainder (Hamilton)
    method so the quotas sum to the budget exactly: every group gets the
    floor of its share, and the rows left over go one each to the groups with
    the largest fractional parts, ties to the lower group index. Rounding up
    never exceeds a group's availability (a fractional share lies strictly
    below an integer availability).

    Worked example: budget 10, weights (0.5, 0.3, 0.2), available (100, 1, 100).
    Nominal shares are (5, 3, 2), but group 1 has 1 row: it gives 1, and its
    shortfall of 2 goes to groups 0 and 2 in the ratio 0.5 : 0.2, so the
    water-filled shares are (5 + 10/7, 1, 2 + 4/7) = (6.43, 1, 2.57). Floors
    (6, 1, 2) sum to 9; the one row left goes to the largest remainder, group
    2 (0.57 > 0.43). Quotas (6, 1, 3); shortfall (0, 2, 0).

    Arithmetic is exact: each weight is read as the shortest decimal that
    prints it (0.7 is 7/10, as the policy wrote it), and all are converted to
    integers over a common denominator, so ties in remainders are real ties
    and no rounding error can move a row. Groups of weight 0
    get nothing. Raises ValueError when the groups of positive weight hold
    fewer rows than the budget (the message names both totals).

    ``weights`` float64[g] (finite, >= 0), ``available`` int64[g] (>= 0).
    Returns ``QuotaAllocation(quota int64[g], shortfall float64[g])``, where
    ``shortfall[i] = max(0, nominal share - water-filled share)``, the rows a
    short group could not supply (for the warning).
    """
    w = _array(weights, np.float64, 1, "weights")
    avail = _array(available, np.int64, 1, "available")
    budget = _int(budget, "budget")
    g = w.shape[0]
    if avail.shape[0] != g:
        raise ValueError(f"weights and available must have the same length, got {g} and {avail.shape[0]}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    if (avail < 0).any():
        raise ValueError("available must be >= 0")
    quota = [0] * g
    shortfall = np.zeros(g, dtype=np.float64)
    if budget == 0:
        return QuotaAllocation(np.zeros(g, dtype=np.int64), shortfall)
    active = [i for i in range(g) if w[i] > 0]
    if not active:
        raise ValueError(f"no mix group has a positive weight, so none of the budget of {budget} can be allocated")
    total = sum(int(avail[i]) for i in active)
    if total < budget:
        raise ValueError(
            f"the mix groups hold {total} rows in total, fewer than the budget of {budget}"
        )
    # Weights as the decimals a policy wrote (0.7 is 7/10, not the binary float just below it),
    # so a tie written in the policy is a real tie, broken by group order.
    fracs = [Fraction(repr(float(w[i]))) for i in range(g)]
    den = math.lcm(*(f.denominator for f in fracs))
    num = [f.numerator * (den // f.denominator) for f in fracs]
    a = [int(v) for v in avail]
    n_all = sum(num[i] for i in active)

    # Water-filling in one pass: a group is capped exactly when its rows per
    # unit weight are below the final level; capping raises the level, so in
    # increasing a/w order the capped groups come first.
    capped = set()
    rest, n_rest = int(budget), n_all  # Python ints: exact, no int64 overflow
    for i in sorted(active, key=lambda i: (Fraction(a[i], num[i]), i)):
        if rest * num[i] <= a[i] * n_rest:
            break
        capped.add(i)
        quota[i] = a[i]
        rest -= a[i]
        n_rest -= num[i]
    remainder = {}
    for i in active:
        if i not in capped:
            quota[i], remainder[i] = divmod(rest * num[i], n_rest)
    left = budget - sum(quota)
    for i in sorted(remainder, key=lambda i: (-remainder[i], i))[:left]:
        quota[i] += 1
    for i in capped:
        nominal = Fraction(int(budget) * num[i], n_all)
        if nominal > a[i]:
            shortfall[i] = float(nominal - a[i])
    return QuotaAllocation(np.array(quota, dtype=np.int64), shortfall)


# ---------------------------------------------------------------------------
# 6. DataComp threshold
# ---------------------------------------------------------------------------


def datacomp_threshold(values, fraction: float) -> float:
    """The value that keeps the top ``fraction`` of ``values``: DataComp's ``get_threshold``.

    DataComp's CLIP-score baselines keep rows with ``value >= threshold``
    where ``threshold = -np.sort(-values)[int(n * fraction)]``: the value at
    index ``floor(n * fraction)`` of the descending sort, so ties at the
    threshold are all kept. The index is clamped to ``n - 1`` (DataComp
    raises at ``fraction = 1``). NaN values are dropped first (DataComp
    would count them in n and sort them last); with no value left, or
    ``fraction`` outside [0, 1], raises ValueError. Uses a partition, not a
    full sort: same value, O(n).
    """
    v = _array(values, np.float64, 1, "values")
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    v = v[~np.isnan(v)]
    n = v.shape[0]
    if n == 0:
        raise ValueError("no values to take a threshold of (all are null or NaN)")
    index = min(int(n * fraction), n - 1)  # into the descending order
    ascending = n - 1 - index
    return float(np.partition(v, ascending)[ascending])
