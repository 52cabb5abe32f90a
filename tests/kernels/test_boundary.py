"""The kernels' compile cache (:func:`cbdsl.pipelines.engine.kernels.boundary.jit`).

Kernels are compiled with ``cache=True``: a second process loads the machine
code instead of compiling, and where no cache directory is writable a kernel
compiles uncached rather than failing to import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path


from cbdsl.pipelines.engine.kernels import hashing, hashing_jit
from test_hashing import ref_hash_str  # the hashing family's reference


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_a_second_process_loads_the_cache():
    hashing.hash_strings(["a", "bc"])  # ids of two lengths: the Numba kernel, compiled (or loaded) here
    code = textwrap.dedent(
        """
        from cbdsl.pipelines.engine.kernels import hashing, hashing_jit
        hashing.hash_strings(["a", "bc"])
        stats = hashing_jit.hash_ids_kernel.stats
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    hits, misses = map(int, out.stdout.split())
    assert hits >= 1 and misses == 0


def test_works_without_a_writable_cache_dir(tmp_path):
    # A copy of the module whose __pycache__ cannot be created (a file is in
    # the way), with Numba told to look nowhere else: it must compile uncached.
    shutil.copy(Path(hashing_jit.__file__), tmp_path / "kernels_copy.py")
    (tmp_path / "__pycache__").write_text("not a directory")
    code = textwrap.dedent(
        """
        import numpy as np
        import kernels_copy as kernels
        offsets, data = np.array([0, 3], dtype=np.int64), np.frombuffer(b"abc", dtype=np.uint8)
        print(int(kernels.hash_ids_kernel(offsets, data)[0]))
        print(kernels.hash_ids_kernel._cache.__class__.__name__)
        """
    )
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "InTreeCacheLocator", "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    value, cache = out.stdout.split()
    assert int(value) == ref_hash_str("abc")
    assert cache == "NullCache"
