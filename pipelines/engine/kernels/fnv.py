"""The constants of the stable id hash (FNV-1a 64, then splitmix64's finalizer), shared by its NumPy
(:mod:`~cbdsl.pipelines.engine.kernels.hashing`) and Numba (:mod:`~cbdsl.pipelines.engine.kernels.hashing_jit`)
implementations."""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x00000100000001B3)
GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment (the golden ratio)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
S27 = np.uint64(27)
S30 = np.uint64(30)
S31 = np.uint64(31)
