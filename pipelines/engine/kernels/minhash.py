"""MinHash signatures and LSH banding (near-duplicate text), with the band/row choice of datasketch's ``_optimal_param``."""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from cbdsl.pipelines.engine.kernels.boundary import jit, as_array, as_int, check_offsets
from cbdsl.pipelines.engine.kernels.hashing import GAMMA, MASK64, as_string_series, hash_strings, splitmix64_stream
from cbdsl.pipelines.engine.kernels.hashing_jit import mix64


_P61 = np.uint64((1 << 61) - 1)  # the Mersenne prime 2**61 - 1
_EMPTY_SIG = np.uint64(MASK64)  # the signature value of a row without shingles
_M29 = np.uint64((1 << 29) - 1)
_M32 = np.uint64((1 << 32) - 1)
_S3 = np.uint64(3)
_S29 = np.uint64(29)
_S32 = np.uint64(32)
_S61 = np.uint64(61)


@jit()
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


@jit(parallel=True)
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
    stream = splitmix64_stream(seed, 2 * num_perm)
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
    offsets = as_array(offsets, np.int64, 1, "offsets")
    shingles = as_array(shingles, np.uint64, 1, "shingles")
    num_perm = as_int(num_perm, "num_perm")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    check_offsets(offsets, shingles.shape[0], "offsets")
    a, b = _permutations(num_perm, as_int(seed, "seed"))
    if offsets.shape[0] == 1:
        return np.empty((0, num_perm), dtype=np.uint64)
    return _minhash_kernel(offsets, shingles, a, b)


@jit(parallel=True)
def _band_keys(sig, bands, rows):
    # A 64-bit key of each row's values in each band: rows with equal band
    # values get equal keys (unequal values almost never do).
    n = sig.shape[0]
    keys = np.empty((bands, n), dtype=np.uint64)
    for i in prange(n):
        for band in range(bands):
            h = np.uint64(band)
            for q in range(rows):
                h = mix64(h ^ sig[i, band * rows + q]) + GAMMA
            keys[band, i] = h
    return keys


@jit()
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


@jit()
def _band_equal(sig, i, j, lo, hi):
    for q in range(lo, hi):
        if sig[i, q] != sig[j, q]:
            return False
    return True


@jit()
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


@jit()
def _union_pairs(n, left, right):
    parent = np.arange(n)
    for k in range(len(left)):
        ri = _find(parent, left[k])
        rj = _find(parent, right[k])
        if ri < rj:
            parent[rj] = ri
        elif rj < ri:
            parent[ri] = rj
    groups = np.empty(n, dtype=np.int64)
    for i in range(n):
        groups[i] = _find(parent, i)
    return groups


def pair_groups(n: int, left, right) -> np.ndarray:
    """The groups of ``n`` rows that the pairs ``(left[k], right[k])`` join, transitively: int64[n], each
    row's group id the smallest row index of its group (as :func:`lsh_groups` gives them)."""
    n = as_int(n, "n")
    left = as_array(left, np.int64, 1, "left")
    right = as_array(right, np.int64, 1, "right")
    if len(left) != len(right):
        raise ValueError(f"left has {len(left)} rows and right {len(right)}")
    if len(left) and (min(left.min(), right.min()) < 0 or max(left.max(), right.max()) >= n):
        raise ValueError(f"a pair names a row outside 0..{n - 1}")
    return _union_pairs(n, left, right)


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
    sig = as_array(signatures, np.uint64, 2, "signatures")
    bands = as_int(bands, "bands")
    rows = as_int(rows, "rows")
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
    num_perm = as_int(num_perm, "num_perm")
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


    ngram = as_int(ngram, "ngram")
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    s = as_string_series(texts, "texts").fill_null("")
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
