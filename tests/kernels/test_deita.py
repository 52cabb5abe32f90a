"""DEITA's greedy (:mod:`cbdsl.pipelines.engine.kernels.deita`) against the rule written here in plain Python.

The reference walks the rows one by one, as DEITA's ``IterativeFilter.filter`` does with ``batch_size=1``,
and computes each similarity with Python floats in the documented order, so the picks must be equal, in
order: on random, clustered and duplicated rows, with zero rows, across the blocked paths (blocks and
chunks made small), at thresholds equal to similarities that occur, and for any BLAS thread count.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cbdsl.pipelines.engine.kernels import deita


def ref_deita(X: np.ndarray, k: int, threshold: float) -> list[int]:
    rows = [[float(v) for v in row] for row in X]
    norms = []
    for row in rows:
        s = 0.0
        for v in row:
            s += v * v
        norms.append(math.sqrt(s))

    def sim(i: int, c: int) -> float:
        s = 0.0
        for a, b in zip(rows[i], rows[c]):
            s += a * b
        den = norms[i] * norms[c]
        return s / den if den else math.nan  # a zero row: no direction (NaN is never above the threshold)

    chosen: list[int] = []
    for i in range(len(rows)):
        if len(chosen) == k:
            break
        if not any(sim(i, c) > threshold for c in chosen):
            chosen.append(i)
    return chosen


def data(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal((n, d)).astype(np.float32)
    if kind == "clusters":  # tight clusters: most rows are rejected
        centers = rng.standard_normal((max(2, n // 25), d))
        return (centers[rng.integers(0, len(centers), n)] + 0.05 * rng.standard_normal((n, d))).astype(np.float32)
    if kind == "grid":  # small integers: equal similarities, duplicates and zero rows
        return rng.integers(-1, 2, size=(n, d)).astype(np.float32)
    raise ValueError(kind)


@pytest.fixture(params=["default", "small"])
def blocks(request, monkeypatch):
    """The kernel's own block sizes, and tiny ones that make every path run many times."""
    if request.param == "small":
        monkeypatch.setattr(deita, "BLOCK", 7)
        monkeypatch.setattr(deita, "CHUNK", 5)
    return request.param


@pytest.mark.parametrize("kind", ["normal", "clusters", "grid"])
@pytest.mark.parametrize("threshold", [0.9, 0.5, 0.0])
def test_picks_equal_the_reference(kind, threshold, blocks):
    X = data(kind, 400, 6, seed=len(kind) * 7 + int(threshold * 10))
    for k in (1, 25, 400):
        got = deita.deita_greedy(X, k, threshold).tolist()
        assert got == ref_deita(X, k, threshold), (kind, threshold, k)


def test_thresholds_at_similarities_that_occur(blocks):
    """The threshold set to a similarity of the data: rows exactly at it are taken (`>` rejects)."""
    X = data("normal", 300, 5, seed=3)
    for a, b in ((0, 1), (0, 7), (3, 250), (100, 101)):
        t = deita.exact_similarity(X[a], X[b])
        for threshold in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)):
            assert deita.deita_greedy(X, 300, threshold).tolist() == ref_deita(X, 300, threshold)


def test_the_threshold_boundary_in_and_across_blocks(monkeypatch):
    """cos((1,0,0,0), (1,1,1,1)) is 0.5 exactly: kept at threshold 0.5, rejected just below it, whether the
    two rows are settled in one block (the serial pass) or screened across blocks (the matrix product)."""
    X = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=np.float32)
    assert deita.exact_similarity(X[0], X[1]) == 0.5
    for block in (2048, 1):
        monkeypatch.setattr(deita, "BLOCK", block)
        assert deita.deita_greedy(X, 3, 0.5).tolist() == [0, 1, 2]
        assert deita.deita_greedy(X, 3, np.nextafter(0.5, 0)).tolist() == [0, 2]
        assert deita.deita_greedy(X, 3, 0.5 - 1e-12).tolist() == [0, 2]


def test_duplicates_and_zero_rows():
    X = np.array([[1, 2], [1, 2], [0, 0], [2, 4], [0, 0], [-1, 0]], dtype=np.float32)
    # a duplicate (similarity 1) is rejected even at threshold 0.999...; zero rows are taken and reject nothing
    assert deita.deita_greedy(X, 6, 0.999).tolist() == [0, 2, 4, 5] == ref_deita(X, 6, 0.999)
    assert deita.deita_greedy(X, 6, 1.0).tolist() == ref_deita(X, 6, 1.0)


def test_stops_at_k_and_returns_fewer_when_the_rows_run_out():
    X = data("clusters", 500, 4, seed=9)
    every = deita.deita_greedy(X, 500, 0.9)
    assert 0 < len(every) < 500  # the rows ran out before the budget
    assert deita.deita_greedy(X, 10, 0.9).tolist() == every[:10].tolist()  # prefix stable
    assert deita.deita_greedy(X, 0, 0.9).tolist() == []
    assert deita.deita_greedy(np.zeros((0, 4), np.float32), 5, 0.9).tolist() == []


def test_blas_threads_do_not_change_the_picks():
    X = data("clusters", 3000, 32, seed=4)
    runs = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            runs.append(deita.deita_greedy(X, 3000, 0.8).tobytes())
    assert runs[0] == runs[1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="NaN or infinite"):
        deita.deita_greedy(np.array([[np.nan, 1]], np.float32), 1, 0.9)
    with pytest.raises(ValueError, match="k must be >= 0"):
        deita.deita_greedy(np.ones((2, 2), np.float32), -1, 0.9)
    with pytest.raises(TypeError):
        deita.deita_greedy(np.ones((2, 2), np.float64), 1, 0.9)
