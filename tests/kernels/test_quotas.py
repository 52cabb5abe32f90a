"""Mix quotas (:mod:`cbdsl.pipelines.engine.kernels.quotas`) against an exact reference written here.

The reference water-fills the budget by repeated capping and rounds by
largest remainder (Hamilton), in exact fractions of the decimal weights a
policy writes; the kernel must give the same quotas and shortfalls on seeded
weights (random, equal, some zero, decimal) and budgets, ties to the lower
index (DESIGN.md, semantics 4).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from cbdsl.pipelines.engine.kernels import quotas


# ---------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Tests
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
