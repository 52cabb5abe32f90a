"""Mix quotas: a budget split over groups by weight, exact integers, capped by what each group has (largest remainder)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from cbdsl.pipelines.engine.kernels.boundary import as_array, as_int


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
    w = as_array(weights, np.float64, 1, "weights")
    avail = as_array(available, np.int64, 1, "available")
    budget = as_int(budget, "budget")
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
