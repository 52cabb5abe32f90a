"""Exact sums in parts: the values and their squares as integers in bins by binary exponent, never rounded;
parts add as integers, so any order and any cut into parts give the same sums (:mod:`cbdsl.pipelines.engine.exact`).
The kernels are compiled on first use (:func:`_compiled`): importing this module does not import Numba, which
only a statistic that sums (``mean``, ``std``, ``zscore``) needs (a DataComp ``top`` run stays off it)."""

from __future__ import annotations

import functools
import math

import numpy as np

from cbdsl.pipelines.engine.kernels.boundary import jit

_HALF = 26  # a mantissa (53 bits) in two halves, a square's three products in 26-bit digits
_MASK = (1 << _HALF) - 1


def _exponent_range(x):
    lo, hi = 1 << 30, -(1 << 30)
    for v in x:
        if v != 0.0 and math.isfinite(v):
            e = math.frexp(v)[1]
            lo, hi = min(lo, e), max(hi, e)
    return lo, hi


def _exact_sums(x, gid, low, sums, squares, infinities):
    # a product t (|t| < 2**55) goes into two bins as its low 26-bit digit and the (signed) rest
    for i in range(x.shape[0]):
        v = x[i]
        g = gid[i]
        if math.isinf(v):
            infinities[g, 0 if v > 0 else 1] += 1
            continue
        if v == 0.0:
            continue
        m, e = math.frexp(v)
        mantissa = np.int64(m * 9007199254740992.0)  # * 2**53: exact, |mantissa| < 2**53
        unit = e - low  # v = mantissa * 2**(e - 53): bin 0 weighs 2**(low - 53)
        hi = mantissa >> _HALF
        lo = mantissa & _MASK
        sums[g, unit] += lo
        sums[g, unit + _HALF] += hi
        # v**2 = hi**2 * 2**52 + 2*hi*lo * 2**26 + lo**2, times 2**(2 * (e - 53))
        for t, at in ((hi * hi, 2 * unit + 2 * _HALF), (2 * hi * lo, 2 * unit + _HALF), (lo * lo, 2 * unit)):
            squares[g, at] += t & _MASK
            squares[g, at + _HALF] += t >> _HALF


def exact_sums(x: np.ndarray, gid: np.ndarray, groups: int):
    """Per group: the exact sum of the finite values of ``x`` (float64) and of their squares, each as
    ``(integer, exponent)`` meaning ``integer * 2**exponent``, and the counts of +inf and -inf.

    A value is its 53-bit integer mantissa times a power of two; the mantissa's two 26-bit halves, and the
    26-bit digits of its square's three products, are added as integers into bins by exponent (each adds
    less than 2**28 to a bin: no overflow before 2**35 values), and the bins are read as one integer."""
    low, high = _compiled()[0](x) if x.shape[0] else (0, 0)
    low, high = (low, high) if low <= high else (0, 0)
    width = high - low + 1
    sums = np.zeros((groups, width + 2 * _HALF), dtype=np.int64)
    squares = np.zeros((groups, 2 * width + 4 * _HALF), dtype=np.int64)
    infinities = np.zeros((groups, 2), dtype=np.int64)
    if x.shape[0] >= 1 << 35:
        raise ValueError("exact_sums takes fewer than 2**35 values at a time")
    if x.shape[0]:
        _compiled()[1](x, gid, low, sums, squares, infinities)
    base = low - 53
    return [(_integer(sums[g]), base, _integer(squares[g]), 2 * base, *infinities[g].tolist())
            for g in range(groups)]


@functools.cache
def _compiled():
    return jit()(_exponent_range), jit()(_exact_sums)


def _integer(bins: np.ndarray) -> int:
    """The bins as one integer, bin ``i`` weighing ``2**i``."""
    return sum(int(v) << i for i, v in enumerate(bins.tolist()) if v)
