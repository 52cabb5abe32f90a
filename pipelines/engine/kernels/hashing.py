"""Stable 64-bit hashes: FNV-1a of id bytes mixed by splitmix64, and the seeded per-row hash every tie-break uses."""

from __future__ import annotations

from typing import Sequence, TYPE_CHECKING

import numpy as np

from cbdsl.pipelines.engine.kernels.boundary import as_array, as_int, check_offsets
from cbdsl.pipelines.engine.kernels.fnv import (  # noqa: F401 (GAMMA, MASK64: MinHash's too)
    FNV_OFFSET, FNV_PRIME, MIX1, MIX2, S27, S30, S31, GAMMA, MASK64,
)

if TYPE_CHECKING:
    import polars as pl


def mix64_array(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on every value of a uint64 array (NumPy wraps uint64 arithmetic mod 2**64)."""
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


def _hash_fixed_width(block: np.ndarray) -> np.ndarray:
    """FNV-1a and the finalizer of ``n`` strings of one byte length ``L`` (``block``: uint8[n, L]), one
    vectorised step per byte position: the same values as the Numba kernel, without loading Numba."""
    h = np.full(block.shape[0], FNV_OFFSET, dtype=np.uint64)
    for j in range(block.shape[1]):
        h ^= block[:, j]
        h *= FNV_PRIME
    return mix64_array(h)


_FIXED_WIDTH_MAX = 64  # longer strings of one length: the Numba kernel's one pass beats L passes


def _mix64_py(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def splitmix64_stream(seed: int, count: int) -> list[int]:
    """The first ``count`` outputs of splitmix64 seeded with ``seed`` (mod 2**64)."""
    state = seed & MASK64
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        out.append(_mix64_py(state))
    return out


def hash_ids(offsets, data) -> np.ndarray:
    """A stable 64-bit hash of each UTF-8 string of an Arrow-style string column.

    Row ids are hashed to break every tie and to derive every seeded random
    key, so selections depend on this exact function forever; Polars' own
    ``hash()`` may change between Polars versions, so it is not used. The
    function, for the bytes ``b[0..L)`` of one string:

        h = 0xcbf29ce484222325                      # FNV-1a 64, offset basis
        for each byte c: h = (h XOR c) * 0x100000001b3   (mod 2**64)
        z = h                                       # splitmix64 finalizer
        z = (z XOR (z >> 30)) * 0xbf58476d1ce4e5b9  (mod 2**64)
        z = (z XOR (z >> 27)) * 0x94d049bb133111eb  (mod 2**64)
        hash = z XOR (z >> 31)

    FNV-1a alone mixes the last bytes poorly into the high bits; the finalizer
    fixes that, so the hash can be sorted on or cut into bands directly.
    Pinned in ``tests/kernels/test_hashing.py``: ``""`` hashes to
    ``0xf52a15e9a9b5e89b`` and ``"abc"`` to ``0x0dd490490804b508``.

    ``offsets`` is int64[n+1] (string i is ``data[offsets[i]:offsets[i+1]]``;
    ``offsets[0]`` need not be 0, as in a sliced Arrow array), ``data`` is
    uint8[m]. Returns uint64[n].
    """
    offsets = as_array(offsets, np.int64, 1, "offsets")
    data = as_array(data, np.uint8, 1, "data")
    check_offsets(offsets, data.shape[0], "offsets")
    if offsets.shape[0] == 1:
        return np.empty(0, dtype=np.uint64)
    width = int(offsets[1] - offsets[0])
    if width <= _FIXED_WIDTH_MAX and bool((np.diff(offsets) == width).all()):  # DataComp's uids: 32 hex chars
        n = offsets.shape[0] - 1
        return _hash_fixed_width(data[offsets[0]:offsets[0] + n * width].reshape(n, width))
    from cbdsl.pipelines.engine.kernels.hashing_jit import hash_ids_kernel  # Numba: loaded only for these

    return hash_ids_kernel(offsets, data)


def as_string_series(values, name: str) -> "pl.Series":
    import polars as pl


    if isinstance(values, pl.Series):
        s = values
    else:
        s = pl.Series(name, list(values) if not isinstance(values, np.ndarray) else values, dtype=pl.String)
    if isinstance(s.dtype, (pl.Categorical, pl.Enum)):
        s = s.cast(pl.String)
    if s.dtype != pl.String:
        raise TypeError(f"{name} must be strings, got a column of {s.dtype}")
    return s


def _string_buffers(s: "pl.Series", use_arrow: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Arrow-style (offsets, bytes) of a String Series without nulls, without a Python loop per row.

    With pyarrow (not a dependency of cbdsl, but usually present) the buffers
    are read in place; without it, Polars concatenates the strings into one
    and reports the byte lengths. Both give the same arrays.
    """
    if use_arrow:
        try:
            import pyarrow as pa
        except ImportError:
            use_arrow = False
    if use_arrow:
        arr = s.rechunk().to_arrow()
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.type != pa.large_string():
            arr = arr.cast(pa.large_string())
        buffers = arr.buffers()
        offsets = np.frombuffer(buffers[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
        data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
        return offsets, data
    lengths = s.str.len_bytes().to_numpy().astype(np.int64)
    offsets = np.zeros(len(s) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    joined = s.str.join("").item() if len(s) else ""
    data = np.frombuffer((joined or "").encode("utf-8"), dtype=np.uint8)
    return offsets, data


def hash_strings(values: "Sequence[str] | pl.Series") -> np.ndarray:
    """:func:`hash_ids` of a Polars String Series (or a sequence of str): uint64[n].

    The convenience the evaluator uses on the id column. Null values raise
    ``ValueError``: an id must exist to break a tie by it.
    """
    s = as_string_series(values, "values")
    if s.null_count():
        raise ValueError(f"cannot hash {s.null_count()} null value(s); fill or drop them first")
    if len(s) == 0:
        return np.empty(0, dtype=np.uint64)
    offsets, data = _string_buffers(s)
    return hash_ids(offsets, data)


def hash_u64(x, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each uint64 value: the keys of every seeded random choice.

    ``random(seed)`` selects by sorting on ``hash_u64(hash_ids(id), seed)``:
    a permutation that depends only on the ids and the seed, never on row
    order or thread count. The function, with ``seed`` taken mod 2**64:

        salt = splitmix64(seed)      = mix64(seed + 0x9e3779b97f4a7c15)
        hash = mix64(x XOR salt)

    where ``mix64`` is the splitmix64 finalizer of :func:`hash_ids`. As
    ``mix64`` is a bijection, distinct values keep distinct keys for every
    seed. ``x`` is uint64[n]; returns uint64[n].
    """
    x = as_array(x, np.uint64, 1, "x")
    salt = np.uint64(splitmix64_stream(as_int(seed, "seed"), 1)[0])
    return mix64_array(x ^ salt)
