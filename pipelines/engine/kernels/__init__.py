"""Numba kernels the engine calls on whole columns, one module per family.

Lowering uses native Polars expressions wherever one exists; this module holds
only what Polars cannot do: stable hashing, k-center greedy, DEITA's
diversity greedy, near-duplicate search (MinHash LSH, SemDeDup), mix-quota
allocation and DataComp's threshold.
Every function takes and returns NumPy arrays for a whole column, validates
shapes and dtypes here at the Python boundary, and handles empty inputs.

Determinism is a promise of the language (DESIGN.md, semantics 7): the same
inputs give byte-identical outputs for every thread count (and, as floats
are plain IEEE operations in a fixed order, without fast-math, on every
machine). So ``prange`` is used only where each iteration writes its own outputs
from its own inputs (per row, per band, per chunk with a fixed size), and
every reduction across iterations runs serially in index order; no result
depends on scheduling. Ties are broken by the lowest index everywhere.

Only the evaluator imports this module (``cbdsl check`` must never import
numba or numpy). Kernels are compiled with ``cache=True``: a second process
loads the machine code from ``__pycache__`` instead of compiling. Where the
source tree is read-only Numba falls back to its user-wide cache directory,
and where no cache directory is writable at all the kernels are compiled
without a cache (see :func:`_jit`).

Array arguments are converted only when the conversion is safe (``int32``
offsets to ``int64``, ``float16`` embeddings to ``float32``); anything else
raises ``TypeError`` rather than silently changing the values.
"""
