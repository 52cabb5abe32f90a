"""DataComp's threshold: the value at a fraction of a sorted column, as DataComp's ``get_threshold`` computes it."""

from __future__ import annotations

import numpy as np

from cbdsl.pipelines.engine.kernels.boundary import as_array


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
    v = as_array(values, np.float64, 1, "values")
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
