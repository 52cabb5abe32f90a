"""Hashing (:mod:`cbdsl.pipelines.engine.kernels.hashing`) against a pure-Python reference written here.

The id hash is FNV-1a 64 with SplitMix64's finalizer, and ``hash_u64`` mixes a
u64 with a seeded SplitMix64 word. Every tie in a selection is broken by these
bits, so they are pinned, then compared with the reference on seeded random
strings (empty, multi-byte, tabs, emoji) and on both buffer paths. The MinHash
reference (tests/kernels/test_minhash.py) builds on the functions here.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from cbdsl.pipelines.engine.kernels import hashing


# ---------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------


M64 = (1 << 64) - 1


def ref_mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_hash_bytes(b: bytes) -> int:
    h = 0xCBF29CE484222325
    for c in b:
        h = ((h ^ c) * 0x100000001B3) & M64
    return ref_mix64(h)


def ref_hash_str(s: str) -> int:
    return ref_hash_bytes(s.encode("utf-8"))


def ref_splitmix(seed: int, count: int) -> list[int]:
    state, out = seed % (1 << 64), []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) % (1 << 64)
        out.append(ref_mix64(state))
    return out


def ref_hash_u64(x: int, seed: int) -> int:
    return ref_mix64(x ^ ref_splitmix(seed, 1)[0])


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


ALPHABET = list("abcdefghij ") + ["é", "ß", "日本", "\t", "🙂"]


def random_strings(rng, n, max_len=12):
    return ["".join(rng.choice(ALPHABET, size=rng.integers(0, max_len + 1))) for _ in range(n)]


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_hash_pinned_values():
    # The documented function, written out in pure Python above, pinned for good:
    # every selection that breaks a tie by id depends on these bits.
    assert ref_hash_str("") == 0xF52A15E9A9B5E89B
    assert ref_hash_str("abc") == 0x0DD490490804B508
    assert hashing.hash_strings(["", "abc"]).tolist() == [0xF52A15E9A9B5E89B, 0x0DD490490804B508]


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_hash_strings_matches_reference(n):
    rng = np.random.default_rng(n)
    values = random_strings(rng, n) + (["abc", "abc", ""] if n else [])
    got = hashing.hash_strings(values)
    assert got.dtype == np.uint64 and got.shape == (len(values),)
    assert got.tolist() == [ref_hash_str(v) for v in values]
    assert hashing.hash_strings(pl.Series(values, dtype=pl.String)).tolist() == got.tolist()


def test_hash_strings_arrow_and_fallback_buffers_agree():
    rng = np.random.default_rng(1)
    s = pl.concat([pl.Series(random_strings(rng, 50)), pl.Series(random_strings(rng, 30))], rechunk=False)
    s = s.slice(3, 60)  # a sliced, multi-chunk column
    o1, d1 = hashing._string_buffers(s, use_arrow=True)
    o2, d2 = hashing._string_buffers(s, use_arrow=False)
    h1, h2 = hashing.hash_ids(o1, d1), hashing.hash_ids(o2, d2)
    assert h1.tolist() == h2.tolist() == [ref_hash_str(v) for v in s.to_list()]


def test_hash_ids_offsets_need_not_start_at_zero():
    data = np.frombuffer(b"xxabcdef", dtype=np.uint8)
    got = hashing.hash_ids(np.array([2, 5, 5, 8]), data)
    assert got.tolist() == [ref_hash_bytes(b"abc"), ref_hash_bytes(b""), ref_hash_bytes(b"def")]


def test_hash_ids_validates_its_inputs():
    data = np.zeros(4, dtype=np.uint8)
    with pytest.raises(ValueError, match="non-decreasing"):
        hashing.hash_ids(np.array([0, 3, 2]), data)
    with pytest.raises(ValueError, match="within"):
        hashing.hash_ids(np.array([0, 5]), data)
    with pytest.raises(TypeError, match="offsets must be int64"):
        hashing.hash_ids(np.array([0.0, 1.0]), data)
    with pytest.raises(ValueError, match="null"):
        hashing.hash_strings(pl.Series(["a", None]))
    assert hashing.hash_ids(np.array([0]), data).shape == (0,)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**64 - 1, -1])
def test_hash_u64_matches_reference(seed):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.integers(0, 2**63, size=200, dtype=np.uint64) * np.uint64(2), np.array([0, 1, M64], dtype=np.uint64)])
    got = hashing.hash_u64(x, seed)
    assert got.tolist() == [ref_hash_u64(int(v), seed) for v in x]
    assert hashing.hash_u64(np.empty(0, np.uint64), seed).shape == (0,)


def test_hash_u64_seeds_give_different_orders():
    ids = hashing.hash_strings([f"row-{i}" for i in range(1000)])
    a, b = np.argsort(hashing.hash_u64(ids, 1)), np.argsort(hashing.hash_u64(ids, 2))
    assert not np.array_equal(a, b)
    assert np.array_equal(np.argsort(hashing.hash_u64(ids, 1)), a)


@pytest.mark.parametrize("width", [0, 1, 16, 32, 64, 65])
def test_ids_of_one_length_hash_as_the_reference_does(width):
    """Ids of one byte length (DataComp's 32-hex uids) take the NumPy path up to 64 bytes, the Numba kernel
    past it; both give the reference's values, also from a slice whose offsets do not start at 0."""
    rng = np.random.default_rng(width)
    ids = ["".join(rng.choice(list("0123456789abcdef"), size=width)) for _ in range(300)]
    want = np.array([ref_hash_str(s) for s in ids], dtype=np.uint64)
    assert np.array_equal(hashing.hash_strings(ids), want)
    assert np.array_equal(hashing.hash_strings(pl.Series(ids).slice(7, 200)), want[7:207])


def test_a_fixed_width_run_never_loads_numba(tmp_path):
    """`cbdsl run`'s path for a pool of fixed-width ids (random select, no dedup) stays off Numba: its
    import and its kernel cache cost 0.6 s of a cold run (tests/benchmarks/README.md, fix 5)."""
    import subprocess
    import sys

    code = (
        "import sys, polars as pl\n"
        "from cbdsl.stages import compile_source, lower\n"
        "from cbdsl.pipelines.data.writing import write_pool\n"
        "from cbdsl.pipelines.engine.execute import execute\n"
        f"pool = write_pool(pl.DataFrame({{'id': [f'{{i:032x}}' for i in range(500)], 'x': [float(i % 37) for i in range(500)],"
        f" 'text': ['a b c'] * 500}}), {str(tmp_path / 'p')!r}, name='p')\n"
        "c = compile_source('filter top(x, 0.3)\\nfilter words(text) > 2\\nbudget 50\\n', 'p.cur', pool)\n"
        "r = execute(lower(c.plan, pool.schema, pool=pool), pool)\n"
        "assert r.selection.height == 50, r.selection.height\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'numba'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
