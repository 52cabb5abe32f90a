"""The Numba kernels against plain reference implementations written here.

Each reference is written independently of ``cbdsl.pipelines.engine.kernels``, as
plainly as possible (pure Python or per-step NumPy), and the kernels must
match it exactly on seeded random inputs: empty, one row, ties, duplicates.
Then hand-checked cases, determinism across thread counts, and the compile
cache. Sizes are small so the file, JIT compile included, stays fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from fractions import Fraction
from math import comb
from pathlib import Path

import numba
import numpy as np
import polars as pl
import pytest

from cbdsl.pipelines.engine.kernels import hashing, kcenter, minhash, quotas, semdedup, thresholds

M64 = (1 << 64) - 1
P61 = (1 << 61) - 1


# ---------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------


def ref_mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_hash_bytes(b: bytes) -> int:
    h = 0xCBF29CE484222325
    for c in b:
        h = ((h ^ c) * 0x100000001B3) & M64
    return ref_mix64(h)


def ref_hash_str(s: str) -> int:
    return ref_hash_bytes(s.encode("utf-8"))


def ref_splitmix(seed: int, count: int) -> list[int]:
    state, out = seed % (1 << 64), []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) % (1 << 64)
        out.append(ref_mix64(state))
    return out


def ref_hash_u64(x: int, seed: int) -> int:
    return ref_mix64(x ^ ref_splitmix(seed, 1)[0])


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


def ref_quotas(weights, available, budget):
    """Water-filling by repeated capping, then Hamilton rounding, in exact fractions."""
    g = len(weights)
    w = [Fraction(repr(float(x))) for x in weights]  # weights are the decimals the policy wrote
    available = [int(v) for v in available]  # Python ints: a Fraction against np.int64 can overflow
    share = [Fraction(0)] * g
    capped = set()
    free = [i for i in range(g) if w[i] > 0]
    rest = Fraction(budget)
    while True:
        total = sum(w[i] for i in free)
        over = [i for i in free if rest * w[i] / total > available[i]]
        if not over:
            for i in free:
                share[i] = rest * w[i] / total
            break
        for i in over:
            share[i] = Fraction(int(available[i]))
            capped.add(i)
            rest -= int(available[i])
        free = [i for i in free if i not in over]
    quota = [int(s) for s in share]  # floor: shares are >= 0
    left = budget - sum(quota)
    for i in sorted(range(g), key=lambda i: (-(share[i] - quota[i]), i))[:left]:
        quota[i] += 1
    wt = sum(w)
    shortfall = [float(max(Fraction(0), budget * w[i] / wt - share[i])) for i in range(g)]
    return quota, shortfall


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

ALPHABET = list("abcdefghij ") + ["é", "ß", "日本", "\t", "🙂"]


def random_strings(rng, n, max_len=12):
    return ["".join(rng.choice(ALPHABET, size=rng.integers(0, max_len + 1))) for _ in range(n)]


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


@pytest.fixture
def all_threads():
    yield numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


# ---------------------------------------------------------------------------
# 1. Hashing
# ---------------------------------------------------------------------------


def test_hash_pinned_values():
    # The documented function, written out in pure Python above, pinned for good:
    # every selection that breaks a tie by id depends on these bits.
    assert ref_hash_str("") == 0xF52A15E9A9B5E89B
    assert ref_hash_str("abc") == 0x0DD490490804B508
    assert hashing.hash_strings(["", "abc"]).tolist() == [0xF52A15E9A9B5E89B, 0x0DD490490804B508]


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_hash_strings_matches_reference(n):
    rng = np.random.default_rng(n)
    values = random_strings(rng, n) + (["abc", "abc", ""] if n else [])
    got = hashing.hash_strings(values)
    assert got.dtype == np.uint64 and got.shape == (len(values),)
    assert got.tolist() == [ref_hash_str(v) for v in values]
    assert hashing.hash_strings(pl.Series(values, dtype=pl.String)).tolist() == got.tolist()


def test_hash_strings_arrow_and_fallback_buffers_agree():
    rng = np.random.default_rng(1)
    s = pl.concat([pl.Series(random_strings(rng, 50)), pl.Series(random_strings(rng, 30))], rechunk=False)
    s = s.slice(3, 60)  # a sliced, multi-chunk column
    o1, d1 = hashing._string_buffers(s, use_arrow=True)
    o2, d2 = hashing._string_buffers(s, use_arrow=False)
    h1, h2 = hashing.hash_ids(o1, d1), hashing.hash_ids(o2, d2)
    assert h1.tolist() == h2.tolist() == [ref_hash_str(v) for v in s.to_list()]


def test_hash_ids_offsets_need_not_start_at_zero():
    data = np.frombuffer(b"xxabcdef", dtype=np.uint8)
    got = hashing.hash_ids(np.array([2, 5, 5, 8]), data)
    assert got.tolist() == [ref_hash_bytes(b"abc"), ref_hash_bytes(b""), ref_hash_bytes(b"def")]


def test_hash_ids_validates_its_inputs():
    data = np.zeros(4, dtype=np.uint8)
    with pytest.raises(ValueError, match="non-decreasing"):
        hashing.hash_ids(np.array([0, 3, 2]), data)
    with pytest.raises(ValueError, match="within"):
        hashing.hash_ids(np.array([0, 5]), data)
    with pytest.raises(TypeError, match="offsets must be int64"):
        hashing.hash_ids(np.array([0.0, 1.0]), data)
    with pytest.raises(ValueError, match="null"):
        hashing.hash_strings(pl.Series(["a", None]))
    assert hashing.hash_ids(np.array([0]), data).shape == (0,)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**64 - 1, -1])
def test_hash_u64_matches_reference(seed):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.integers(0, 2**63, size=200, dtype=np.uint64) * np.uint64(2), np.array([0, 1, M64], dtype=np.uint64)])
    got = hashing.hash_u64(x, seed)
    assert got.tolist() == [ref_hash_u64(int(v), seed) for v in x]
    assert hashing.hash_u64(np.empty(0, np.uint64), seed).shape == (0,)


def test_hash_u64_seeds_give_different_orders():
    ids = hashing.hash_strings([f"row-{i}" for i in range(1000)])
    a, b = np.argsort(hashing.hash_u64(ids, 1)), np.argsort(hashing.hash_u64(ids, 2))
    assert not np.array_equal(a, b)
    assert np.array_equal(np.argsort(hashing.hash_u64(ids, 1)), a)


# ---------------------------------------------------------------------------
# 2. k-center greedy
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


# ---------------------------------------------------------------------------
# 3. MinHash, shingles, LSH
# ---------------------------------------------------------------------------


def to_csr(rows):
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    flat = np.array([x for r in rows for x in r], dtype=np.uint64)
    return offsets, flat


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


# ---------------------------------------------------------------------------
# 4. SemDeDup
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


# ---------------------------------------------------------------------------
# 5. Quotas
# ---------------------------------------------------------------------------


def test_quotas_worked_example():
    # 10 rows over {0.5, 0.3, 0.2}; group 1 has a single row.
    quota, shortfall = quotas.allocate_quotas([0.5, 0.3, 0.2], [100, 1, 100], 10)
    assert quota.tolist() == [6, 1, 3]
    assert shortfall.tolist() == [0.0, 2.0, 0.0]
    quota, shortfall = quotas.allocate_quotas([0.5, 0.3, 0.2], [100, 100, 100], 10)
    assert quota.tolist() == [5, 3, 2] and shortfall.tolist() == [0.0, 0.0, 0.0]


def test_quotas_ties_go_to_the_lower_index():
    assert quotas.allocate_quotas([1, 1, 1], [10, 10, 10], 10).quota.tolist() == [4, 3, 3]
    assert quotas.allocate_quotas([0.1, 0.1, 0.1, 0.1], [5, 5, 5, 5], 7).quota.tolist() == [2, 2, 2, 1]


def test_quotas_errors():
    with pytest.raises(ValueError, match=r"hold 7 rows in total, fewer than the budget of 10"):
        quotas.allocate_quotas([0.5, 0.5], [3, 4], 10)
    with pytest.raises(ValueError, match="hold 3 rows"):  # a group of weight 0 gives nothing
        quotas.allocate_quotas([1.0, 0.0], [3, 100], 10)
    with pytest.raises(ValueError, match="weights must be finite"):
        quotas.allocate_quotas([1.0, -1.0], [3, 3], 1)
    assert quotas.allocate_quotas([], [], 0).quota.shape == (0,)


@pytest.mark.parametrize("seed", range(40))
def test_quotas_match_reference(seed):
    rng = np.random.default_rng(seed)
    g = int(rng.integers(1, 9))
    kind = seed % 4
    if kind == 0:
        weights = rng.random(g)
    elif kind == 1:  # equal weights: remainder ties
        weights = np.full(g, 0.25)
    elif kind == 2:  # some zero weights
        weights = rng.integers(0, 3, size=g).astype(float)
        weights[0] = 1.0
    else:  # the decimal weights a policy writes
        weights = rng.choice([0.1, 0.2, 0.3, 0.4, 0.05], size=g)
    available = rng.integers(0, 30, size=g)
    capacity = int(available[weights > 0].sum())
    budget = int(rng.integers(0, capacity + 1))
    quota, shortfall = quotas.allocate_quotas(weights, available, budget)
    ref_q, ref_s = ref_quotas(weights, available, budget)
    assert quota.tolist() == ref_q
    assert shortfall.tolist() == ref_s
    assert quota.sum() == budget and (quota <= available).all()


# ---------------------------------------------------------------------------
# 6. DataComp threshold
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 10, 101])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_datacomp_threshold_matches_get_threshold(n, fraction):
    rng = np.random.default_rng(n)
    values = rng.integers(0, 5, size=n).astype(np.float64)  # ties
    got = thresholds.datacomp_threshold(values, fraction)
    expected = -np.sort(-values)[min(int(n * fraction), n - 1)]  # DataComp's get_threshold, clamped
    assert got == expected
    with_nan = np.concatenate([values, [np.nan, np.nan]])
    assert thresholds.datacomp_threshold(with_nan, fraction) == expected


def test_datacomp_threshold_errors():
    with pytest.raises(ValueError, match="no values"):
        thresholds.datacomp_threshold(np.array([np.nan]), 0.3)
    with pytest.raises(ValueError, match="fraction"):
        thresholds.datacomp_threshold(np.array([1.0]), 1.5)


# ---------------------------------------------------------------------------
# The compile cache
# ---------------------------------------------------------------------------


def test_a_second_process_loads_the_cache():
    hashing.hash_u64(np.array([1], dtype=np.uint64), 0)  # this process compiled (or loaded) it
    code = textwrap.dedent(
        """
        import numpy as np
        from cbdsl.pipelines.engine.kernels import hashing
        hashing.hash_u64(np.array([1], dtype=np.uint64), 0)
        stats = hashing._hash_u64_kernel.stats
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    hits, misses = map(int, out.stdout.split())
    assert hits >= 1 and misses == 0


def test_works_without_a_writable_cache_dir(tmp_path):
    # A copy of the module whose __pycache__ cannot be created (a file is in
    # the way), with Numba told to look nowhere else: it must compile uncached.
    shutil.copy(Path(hashing.__file__), tmp_path / "kernels_copy.py")
    (tmp_path / "__pycache__").write_text("not a directory")
    code = textwrap.dedent(
        """
        import numpy as np
        import kernels_copy as hashing
        print(int(hashing.hash_u64(np.array([7], dtype=np.uint64), 3)[0]))
        print(hashing._hash_u64_kernel._cache.__class__.__name__)
        """
    )
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "InTreeCacheLocator", "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    value, cache = out.stdout.split()
    assert int(value) == ref_hash_u64(7, 3)
    assert cache == "NullCache"
