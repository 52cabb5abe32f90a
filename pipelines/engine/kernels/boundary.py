"""What every kernel family shares: the JIT decorator and the checks at the Python boundary."""

from __future__ import annotations

import operator

import numpy as np


def jit(parallel: bool = False):
    """``njit(cache=True)``, or ``njit`` without a cache where no cache directory is writable.

    Numba looks for a cache directory when the function is decorated: next to
    the source (``__pycache__``), then a user-wide one (``NUMBA_CACHE_DIR`` or
    the platform cache). Only if none is writable does it raise, and a kernel
    that compiles on every process start is better than an evaluator that
    cannot import.
    """

    def decorate(fn):
        from numba import njit  # imported by the kernel modules that use it, not by every boundary check

        try:
            return njit(cache=True, parallel=parallel, nogil=True)(fn)
        except RuntimeError:
            return njit(cache=False, parallel=parallel, nogil=True)(fn)

    return decorate


def as_array(x, dtype, ndim: int, name: str) -> np.ndarray:
    """``x`` as a C-contiguous array of ``dtype``, converting only where the conversion is safe."""
    a = np.asarray(x)
    dtype = np.dtype(dtype)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {a.shape}")
    if a.dtype != dtype:
        # An empty list comes in as float64: any dtype will do for no values.
        if a.size and not np.can_cast(a.dtype, dtype, casting="safe"):
            raise TypeError(f"{name} must be {dtype} (got {a.dtype}); convert it explicitly")
        a = a.astype(dtype)
    return np.ascontiguousarray(a)


def as_int(x, name: str) -> int:
    if isinstance(x, bool):
        raise TypeError(f"{name} must be an integer, got {x!r}")
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {x!r}") from None


def check_offsets(offsets: np.ndarray, n_values: int, name: str) -> None:
    if offsets.shape[0] == 0:
        raise ValueError(f"{name} must have n+1 >= 1 entries (Arrow-style offsets), got none")
    if offsets[0] < 0 or offsets[-1] > n_values:
        raise ValueError(
            f"{name} must lie within [0, {n_values}] (the length of the values), "
            f"got {int(offsets[0])}..{int(offsets[-1])}"
        )
    if offsets.shape[0] > 1 and (np.diff(offsets) < 0).any():
        raise ValueError(f"{name} must be non-decreasing")
