"""The Numba side of :mod:`~cbdsl.pipelines.engine.kernels.hashing`: the id hash of strings of any length, and
``mix64`` for other kernels (MinHash's band hashes). Apart so that a run whose ids are of one length
(DataComp's uids) never loads Numba (its import and its kernel cache are a cold `cbdsl run`'s largest fixed
cost after Polars)."""

from __future__ import annotations

import numpy as np
from numba import prange

from cbdsl.pipelines.engine.kernels.boundary import jit
from cbdsl.pipelines.engine.kernels.fnv import FNV_OFFSET, FNV_PRIME, MIX1, MIX2, S27, S30, S31


@jit()
def mix64(z):
    # splitmix64's finalizer (Stafford's Mix13): a bijection on uint64; hashing.mix64_array in NumPy.
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


@jit(parallel=True)
def hash_ids_kernel(offsets, data):
    """:func:`~cbdsl.pipelines.engine.kernels.hashing.hash_ids` of checked Arrow-style buffers."""
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.uint64)
    for i in prange(n):
        h = FNV_OFFSET
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * FNV_PRIME
        out[i] = mix64(h)
    return out
