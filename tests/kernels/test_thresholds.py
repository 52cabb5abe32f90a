"""DataComp's threshold (:mod:`cbdsl.pipelines.engine.kernels.thresholds`) against ``get_threshold`` itself.

The reference is DataComp's one line, ``-np.sort(-x)[floor(n * fraction)]``
(clamped to the last index), on values with ties; NaNs appended to the values
leave the kernel's threshold as it was.
"""

from __future__ import annotations

import numpy as np
import pytest

from cbdsl.pipelines.engine.kernels import thresholds


# ---------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------


def ref_get_threshold(values: np.ndarray, fraction: float) -> float:
    """DataComp's ``get_threshold``, clamped to the last index."""
    n = len(values)
    return -np.sort(-values)[min(int(n * fraction), n - 1)]


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 10, 101])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_datacomp_threshold_matches_get_threshold(n, fraction):
    rng = np.random.default_rng(n)
    values = rng.integers(0, 5, size=n).astype(np.float64)  # ties
    got = thresholds.datacomp_threshold(values, fraction)
    expected = ref_get_threshold(values, fraction)
    assert got == expected
    with_nan = np.concatenate([values, [np.nan, np.nan]])
    assert thresholds.datacomp_threshold(with_nan, fraction) == expected


def test_datacomp_threshold_errors():
    with pytest.raises(ValueError, match="no values"):
        thresholds.datacomp_threshold(np.array([np.nan]), 0.3)
    with pytest.raises(ValueError, match="fraction"):
        thresholds.datacomp_threshold(np.array([1.0]), 1.5)
