"""Exact sums and order keys (kernels/exact_sums.py, kernels/order_keys.py) against Python's exact arithmetic."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from cbdsl.pipelines.engine.kernels.exact_sums import exact_sums
from cbdsl.pipelines.engine.kernels.order_keys import digit_counts, from_keys, in_buckets, order_keys


def _exact(integer: int, exponent: int) -> Fraction:
    return Fraction(integer) * Fraction(2) ** exponent


@pytest.mark.parametrize("seed", range(6))
def test_sums_and_sums_of_squares_are_exact_per_group(seed):
    rng = np.random.default_rng(seed)
    n = 500
    x = rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, size=n)  # 600 decades: no float sum is exact
    x[:6] = [5e-324, -5e-324, 1.7e308, -0.0, 0.0, np.inf]  # subnormals, the largest, zeros, an infinity
    gid = rng.integers(0, 4, size=n)
    for g, (total, base, squares, base2, plus, minus) in enumerate(exact_sums(x, gid, 4)):
        v = [Fraction(float(a)) for a in x[(gid == g) & np.isfinite(x)]]
        assert _exact(total, base) == sum(v) and _exact(squares, base2) == sum(a * a for a in v)
        assert (plus, minus) == (int(np.sum((gid == g) & (x == np.inf))), 0)


def test_sums_of_nothing_are_zero():
    assert exact_sums(np.empty(0), np.empty(0, dtype=np.int64), 2) == [(0, -53, 0, -106, 0, 0)] * 2


def test_order_keys_sort_as_the_values_and_give_them_back():
    x = np.array([3.0, -1.0, -0.0, 0.0, np.inf, -np.inf, 1e-300, -2.5, 5e-324])
    keys = order_keys(x)
    assert from_keys(np.sort(keys), "f") == sorted(x.tolist())
    assert keys[2] == keys[3]  # -0.0 is 0.0
    i = np.array([-5, 3, 0, -2**63, 2**63 - 1])
    assert from_keys(np.sort(order_keys(i)), "i") == sorted(i.tolist())
    u = np.array([2**64 - 1, 0, 7], dtype=np.uint64)
    assert from_keys(np.sort(order_keys(u)), "u") == [0, 7, 2**64 - 1]
    with pytest.raises(TypeError):
        order_keys(np.array(["a"]))


def test_digit_counts_count_the_next_digit_under_a_prefix():
    keys = np.array([0x0102 << 48, 0x0103 << 48, 0x0203 << 48, 0x0102 << 48], dtype=np.uint64)
    gid = np.zeros(4, dtype=np.int64)
    everything = np.ones((1, 1), dtype=bool)
    counts = digit_counts(keys, gid, np.zeros((1, 1), dtype=np.uint64), everything, 0, 8)
    assert counts.shape == (1, 256) and {1: 3, 2: 1} == {d: int(n) for d, n in enumerate(counts[0]) if n}
    counts = digit_counts(keys, gid, np.array([[1]], dtype=np.uint64), everything, 8, 8)
    assert {2: 2, 3: 1} == {d: int(n) for d, n in enumerate(counts[0]) if n}  # under 0x01: 0x02 twice, 0x03 once
    request, key = in_buckets(keys, gid, np.array([[0x0102]], dtype=np.uint64), everything, 16)
    assert request.tolist() == [0, 0] and key.tolist() == [0x0102 << 48] * 2
