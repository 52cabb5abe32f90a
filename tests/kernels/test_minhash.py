"""MinHash, word shingles and LSH banding (:mod:`cbdsl.pipelines.engine.kernels.minhash`) against references written here.

The references: signatures as the minimum of ``(a * x + b) mod (2**61 - 1)``
over each row's shingles, with ``a, b`` drawn from the SplitMix64 stream of
the hashing reference; shingles as hashed, lower-cased word n-grams; LSH
groups as a union-find over equal bands, each row labelled with the lowest
index of its group; the banding (b, r) by exact integration of the false
positive and false negative mass. Then hand-checked texts, and thread counts.
"""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numba
import numpy as np
import polars as pl
import pytest

from cbdsl.pipelines.engine.kernels import hashing, minhash
from test_hashing import M64, ref_hash_str, ref_splitmix  # the hashing family's reference

P61 = (1 << 61) - 1


# ---------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------


def ref_minhash(rows: list[list[int]], num_perm: int, seed: int) -> list[list[int]]:
    stream = ref_splitmix(seed, 2 * num_perm)
    a = [1 + v % (P61 - 1) for v in stream[0::2]]
    b = [v % P61 for v in stream[1::2]]
    out = []
    for shingles in rows:
        if not shingles:
            out.append([M64] * num_perm)
        else:
            out.append([min((a[p] * (x % P61) + b[p]) % P61 for x in shingles) for p in range(num_perm)])
    return out


def ref_lsh(sig: np.ndarray, bands: int, rows: int) -> list[int]:
    n = sig.shape[0]
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for band in range(bands):
        buckets: dict[tuple, list[int]] = {}
        for i in range(n):
            buckets.setdefault(tuple(int(v) for v in sig[i, band * rows : (band + 1) * rows]), []).append(i)
        for members in buckets.values():
            for i in members[1:]:
                ri, r0 = find(i), find(members[0])
                if ri != r0:
                    parent[max(ri, r0)] = min(ri, r0)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    out = [0] * n
    for members in groups.values():
        for i in members:
            out[i] = min(members)
    return out


def ref_shingles(texts, ngram):
    rows = []
    for t in texts:
        words = (t or "").lower().split()
        if len(words) < ngram:
            rows.append([ref_hash_str(" ".join(words))])
        else:
            rows.append([ref_hash_str(" ".join(words[i : i + ngram])) for i in range(len(words) - ngram + 1)])
    return rows


def ref_lsh_error(threshold: float, b: int, r: int) -> Fraction:
    """0.5 * (false positive + false negative mass), integrated exactly via the binomial expansion."""
    t = Fraction(threshold)
    # integral of (1 - s**r)**b from x0 to x1 = sum_k C(b,k) (-1)^k (x1^(rk+1) - x0^(rk+1)) / (rk+1)
    def integral(x0, x1):
        return sum(comb(b, k) * (-1) ** k * (x1 ** (r * k + 1) - x0 ** (r * k + 1)) / (r * k + 1) for k in range(b + 1))

    fp = t - integral(Fraction(0), t)
    fn = integral(t, Fraction(1))
    return (fp + fn) / 2


def ref_minhash_params(threshold, num_perm):
    best, opt = None, (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            e = ref_lsh_error(threshold, b, r)
            if best is None or e < best:
                best, opt = e, (b, r)
    return opt


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def to_csr(rows):
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    flat = np.array([x for r in rows for x in r], dtype=np.uint64)
    return offsets, flat


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 9, 40])
def test_minhash_matches_reference(n):
    rng = np.random.default_rng(n)
    rows = [
        [int(v) for v in rng.integers(0, 2**64, size=rng.integers(0, 6), dtype=np.uint64)] for _ in range(n)
    ]
    if n:
        rows[0] = []  # an empty row
        rows[-1] = [M64, P61, P61 - 1, 0, 2**61]  # values at the edges of the field
    offsets, flat = to_csr(rows)
    got = minhash.minhash_signatures(offsets, flat, 24, 5)
    assert got.shape == (n, 24) and got.dtype == np.uint64
    assert got.tolist() == ref_minhash(rows, 24, 5)


def test_minhash_permutations_are_a_prefix_stream():
    offsets, flat = to_csr([[1, 2, 3], [4, 5]])
    assert np.array_equal(minhash.minhash_signatures(offsets, flat, 64, 9)[:, :16], minhash.minhash_signatures(offsets, flat, 16, 9))
    assert not np.array_equal(minhash.minhash_signatures(offsets, flat, 16, 9), minhash.minhash_signatures(offsets, flat, 16, 10))


def test_minhash_estimates_jaccard():
    a = set(range(0, 1000))
    b = set(range(400, 1400))  # |a & b| = 600, |a | b| = 1400
    true = len(a & b) / len(a | b)
    keys = hashing.hash_u64(np.arange(1400, dtype=np.uint64), 0)  # spread the ints over 64 bits
    offsets, flat = to_csr([[int(keys[i]) for i in sorted(a)], [int(keys[i]) for i in sorted(b)]])
    sig = minhash.minhash_signatures(offsets, flat, 512, 1)
    assert abs(float(np.mean(sig[0] == sig[1])) - true) < 0.06
    same = minhash.minhash_signatures(*to_csr([[1, 2, 3], [3, 2, 1, 1]]), 64, 1)
    assert np.array_equal(same[0], same[1])  # a set: order and repeats do not matter


@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_text_shingles_match_reference(ngram):
    texts = [
        "The quick brown fox jumps over the lazy dog",
        "  Hello\tWORLD  ",
        "",
        None,
        "one two three four five",
        "a b c d e f g h",
        "Ünïcode wörds here and there ok",
    ]
    offsets, flat = minhash.text_shingles(texts, ngram=ngram)
    expected = ref_shingles(texts, ngram)
    assert offsets.tolist() == [0, *np.cumsum([len(r) for r in expected]).tolist()]
    assert flat.tolist() == [x for r in expected for x in r]
    o2, f2 = minhash.text_shingles(pl.Series(texts, dtype=pl.String), ngram=ngram)
    assert np.array_equal(o2, offsets) and np.array_equal(f2, flat)


def test_text_shingles_empty():
    offsets, flat = minhash.text_shingles([])
    assert offsets.tolist() == [0] and flat.shape == (0,)


@pytest.mark.parametrize("n,bands,rows,alphabet", [(0, 2, 2, 2), (1, 3, 1, 2), (30, 4, 2, 2), (200, 3, 3, 3), (200, 8, 1, 50)])
def test_lsh_groups_match_reference(n, bands, rows, alphabet):
    rng = np.random.default_rng(n + bands)
    sig = rng.integers(0, alphabet, size=(n, bands * rows + 1)).astype(np.uint64)
    got = minhash.lsh_groups(sig, bands, rows)
    assert got.dtype == np.int64
    assert got.tolist() == ref_lsh(sig, bands, rows)


@pytest.mark.parametrize("n,bands,rows,alphabet", [(0, 2, 2, 2), (30, 4, 2, 2), (200, 3, 3, 3), (200, 8, 1, 50)])
def test_pair_groups_of_equal_bands_are_lsh_groups(n, bands, rows, alphabet):
    """The Ray engine's merge: pairs of rows equal in a band, joined transitively, give lsh_groups' groups."""
    rng = np.random.default_rng(n * 7 + bands)
    sig = rng.integers(0, alphabet, size=(n, bands * rows)).astype(np.uint64)
    left, right = [], []
    for b in range(bands):
        first: dict[tuple, int] = {}
        for i in range(n):
            key = tuple(sig[i, b * rows:(b + 1) * rows])
            left.append(first.setdefault(key, i))
            right.append(i)
    order = rng.permutation(len(left))  # the pairs' order changes nothing
    got = minhash.pair_groups(n, np.array(left, np.int64)[order], np.array(right, np.int64)[order])
    assert got.tolist() == minhash.lsh_groups(sig, bands, rows).tolist() == ref_lsh(sig, bands, rows)


def test_pair_groups_checks_its_pairs():
    with pytest.raises(ValueError, match="left has 1 rows and right 0"):
        minhash.pair_groups(3, [0], [])
    with pytest.raises(ValueError, match=r"a pair names a row outside 0..2"):
        minhash.pair_groups(3, [0], [3])
    assert minhash.pair_groups(4, [3, 1], [2, 2]).tolist() == [0, 1, 1, 1]


def test_lsh_groups_key_collisions_are_not_matches():
    # Force every band key to collide: only rows with equal band values may merge.
    sig = np.array([[1, 2], [3, 4], [1, 2], [3, 5], [3, 4]], dtype=np.uint64)
    keys = np.zeros((1, 5), dtype=np.uint64)
    orders = np.arange(5, dtype=np.int64)[None, :]
    assert minhash._union_bands(sig, keys, orders, 2).tolist() == [0, 1, 0, 3, 1]


def test_lsh_groups_exact_duplicates_together_unrelated_apart():
    texts = [
        "a photo of a red bicycle leaning against a brick wall in the city",
        "A photo of a red bicycle leaning against a brick wall in the city",  # exact after lowercase
        "two dogs playing fetch on a sandy beach at sunset with waves",
        "a photo of a red bicycle leaning against a brick wall in the town",  # near-duplicate
        "the quarterly report shows revenue growth across all business units",
        "two dogs playing fetch on a sandy beach at sunset with waves",
    ]
    offsets, flat = minhash.text_shingles(texts, ngram=3)
    sig = minhash.minhash_signatures(offsets, flat, 128, 0)
    bands, rows = minhash.minhash_params(0.5, 128)
    groups = minhash.lsh_groups(sig, bands, rows).tolist()
    assert groups[1] == groups[0] == 0 and groups[5] == groups[2] == 2
    assert groups[3] == 0  # Jaccard 10/12 of the 3-grams
    assert groups[4] == 4
    with pytest.raises(ValueError, match="exceeds"):
        minhash.lsh_groups(sig, 100, 2)


def test_minhash_lsh_same_for_any_thread_count(all_threads):
    rng = np.random.default_rng(5)
    rows = [[int(v) for v in rng.integers(0, 40, size=rng.integers(0, 8))] for _ in range(2000)]
    offsets, flat = to_csr(rows)
    numba.set_num_threads(1)
    sig1 = minhash.minhash_signatures(offsets, flat, 32, 3)
    g1 = minhash.lsh_groups(sig1, 8, 4)
    h1 = hashing.hash_strings([str(r) for r in rows])
    numba.set_num_threads(all_threads)
    sig2 = minhash.minhash_signatures(offsets, flat, 32, 3)
    assert np.array_equal(sig1, sig2)
    assert np.array_equal(minhash.lsh_groups(sig2, 8, 4), g1)
    assert np.array_equal(hashing.hash_strings([str(r) for r in rows]), h1)


def test_minhash_params():
    assert minhash.minhash_params(0.8, 128) == (9, 13)  # datasketch: MinHashLSH(threshold=0.8, num_perm=128)
    for threshold, num_perm in [(0.5, 16), (0.8, 32), (0.3, 24), (0.9, 48)]:
        assert minhash.minhash_params(threshold, num_perm) == ref_minhash_params(threshold, num_perm)
