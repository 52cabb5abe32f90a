"""DEITA's score-first, diversity-aware greedy selection (Liu et al., ICLR 2024): exact, blocked, and fast.

The rule (hkust-nlp/deita ``src/deita/selection/filter/base.py``,
``IterativeFilter.filter`` with its default ``batch_size=1``): walk the rows
in score order; the first is taken; each next row is taken unless its cosine
similarity to some row already taken is *above* the threshold (``>``: a row
exactly at the threshold is taken); stop once ``k`` rows are taken.

Why blocked: the rule is sequential (a row's fate depends on every earlier
pick), but almost all of its work is the similarity of a row to the rows
taken before it, which does not change while the row waits. So the rows go
in blocks of :data:`BLOCK`: one matrix product screens the whole block
against every row taken before the block (chosen rows in chunks of
:data:`CHUNK`, a row rejected by one chunk skips the rest), then a serial
pass (Numba) settles the block's survivors in order, against each other.

Exact and deterministic: the decision ``sim > threshold`` is the one of the
plain rule with ``sim = dot(x_i, x_c) / (|x_i| |x_c|)``, the dot product and
each norm summed in float64 from the float32 embeddings, column by column
(:func:`exact_similarity`; ``tests/kernels/test_deita.py`` has the reference).
The matrix products run in float32 on unit rows through BLAS, whose rounding
depends on the machine and the thread count; a float32 similarity within
:func:`_margin` of the threshold (a bound on its error) is recomputed
exactly, so no decision depends on BLAS. A zero row has no direction: its
similarity is NaN, which is never above the threshold (as in DEITA's torch
code), so it is taken when its turn comes and rejects nothing.

Speed (measured once, a shared 2-core VM at load ~2, one BLAS thread):
200,000 rows x 64 dimensions, k = 10,000, threshold 0.9: random Gaussian
rows (every row examined is taken: 10,000 examined) 0.34 s; 2,000 tight
clusters (the worst case: all 200,000 rows examined against up to 2,000
picks, the budget never met) 2.1 s. The work is about (rows examined) x
(picks) x d multiply-adds, in float32 BLAS.
"""

from __future__ import annotations

import numpy as np

from cbdsl.pipelines.engine.kernels.boundary import as_array, as_int, jit

BLOCK = 2048  # candidate rows screened together by one matrix product
CHUNK = 8192  # chosen rows per product: bounds the memory at BLOCK x CHUNK floats


@jit()
def _norms(emb):
    # float64 Euclidean norm of each row, summed column by column.
    n, d = emb.shape
    out = np.empty(n)
    for i in range(n):
        s = 0.0
        for j in range(d):
            x = np.float64(emb[i, j])
            s += x * x
        out[i] = np.sqrt(s)
    return out


@jit()
def _exact(a, na, b, nb):
    # The exact similarity of two rows (see exact_similarity).
    s = 0.0
    for j in range(a.shape[0]):
        s += np.float64(a[j]) * np.float64(b[j])
    return s / (na * nb)


@jit()
def _recheck(emb, norms, lo, pos, cols, chosen_rows, threshold, rejected):
    # Pairs (candidate row lo + pos[p], chosen row chosen_rows[cols[p]]) whose float32 similarity is too
    # close to call: decide them exactly; a candidate rejected by any of its pairs is rejected
    # (rejected is indexed by the position in the block).
    for p in range(pos.shape[0]):
        if rejected[pos[p]]:
            continue
        i = lo + pos[p]
        c = chosen_rows[cols[p]]
        if _exact(emb[i], norms[i], emb[c], norms[c]) > threshold:
            rejected[pos[p]] = True


@jit()
def _settle(emb, norms, block_rows, gram, threshold, margin, picks, taken, k):
    # The serial part of the rule within one block: each surviving row in order is taken unless it is
    # too similar to a row taken earlier in this block (gram: float32 similarities among the survivors,
    # decided exactly near the threshold). Appends to picks; returns the new count.
    s = block_rows.shape[0]
    mine = np.empty(s, dtype=np.int64)  # positions (among the survivors) taken in this block
    m = 0
    for a in range(s):
        i = block_rows[a]
        ok = True
        for q in range(m):
            b = mine[q]
            g = gram[a, b]
            if g > threshold + margin:
                ok = False
                break
            if g > threshold - margin:
                c = block_rows[b]
                if _exact(emb[i], norms[i], emb[c], norms[c]) > threshold:
                    ok = False
                    break
        if ok:
            mine[m] = a
            m += 1
            picks[taken] = i
            taken += 1
            if taken == k:
                break
    return taken


def _margin(d: int) -> float:
    """A bound on |float32 BLAS similarity of the unit rows - exact similarity|: the dot product of d
    products (error <= gamma_d = d u / (1 - d u) for unit rows, in any summation order, u = 2^-24), plus the
    rounding of the unit rows to float32 (2u) and the float64 sums (negligible); doubled for safety."""
    u = 2.0 ** -24
    return 2.0 * ((d + 2) * u / (1.0 - d * u) + 1e-12)


def _unit(emb: np.ndarray, norms: np.ndarray, rows: np.ndarray) -> np.ndarray:
    x = emb[rows].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x / norms[rows, None]).astype(np.float32)  # a zero row: NaN, never above a threshold


def deita_greedy(emb, k: int, threshold: float) -> np.ndarray:
    """Indices of the rows DEITA takes, in the order taken: at most ``k``, fewer when no other row passes.

    ``emb`` is float32[n, d], finite, its rows in score order (best first); returns int64[<= k].
    """
    emb = as_array(emb, np.float32, 2, "emb")
    k = as_int(k, "k")
    threshold = float(threshold)
    n, d = emb.shape
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a number, got {threshold}")
    if not np.isfinite(emb).all():
        raise ValueError("emb holds NaN or infinite values")
    k = min(k, n)
    picks = np.empty(k, dtype=np.int64)
    if k == 0:
        return picks
    norms = _norms(emb)
    margin = _margin(d)
    chosen = np.empty((k, d), dtype=np.float32)  # unit rows of the picks, in pick order
    taken = 0
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        unit = _unit(emb, norms, np.arange(lo, hi))
        rejected = np.zeros(hi - lo, dtype=np.bool_)
        alive = np.arange(hi - lo)  # positions in the block not rejected yet
        for c0 in range(0, taken, CHUNK):
            c1 = min(c0 + CHUNK, taken)
            sims = unit[alive] @ chosen[c0:c1].T
            sure = (sims > threshold + margin).any(axis=1)
            rejected[alive[sure]] = True
            close_r, close_c = np.nonzero((sims > threshold - margin) & ~sure[:, None])
            if len(close_r):
                _recheck(emb, norms, lo, alive[close_r], close_c + c0, picks, threshold, rejected)
            alive = alive[~rejected[alive]]
            if not len(alive):
                break
        if not len(alive):
            continue
        gram = unit[alive] @ unit[alive].T
        before = taken
        taken = _settle(emb, norms, alive + lo, gram, threshold, margin, picks, taken, k)
        chosen[before:taken] = _unit(emb, norms, picks[before:taken])
        if taken == k:
            break
    return picks[:taken]


def exact_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The similarity the rule compares: float64 dot product over the float64 norms, summed column by column."""
    a = as_array(a, np.float32, 1, "a")
    b = as_array(b, np.float32, 1, "b")
    return float(_exact(a, _norms(a[None])[0], b, _norms(b[None])[0]))
