"""What the kernel families' tests share: restoring Numba's thread count after a test changes it."""

from __future__ import annotations

import numba
import pytest


@pytest.fixture
def all_threads():
    yield numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
