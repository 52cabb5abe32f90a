"""Order keys and their radix counts: an element of a population in parts found by counting the digits of its
key, never by sorting the population in one place. Counts add as integers, so any order and any cut into
parts find the same element (:mod:`cbdsl.pipelines.engine.exact`). NumPy only: DataComp's ``top`` runs without
Numba (its import is 0.6 s of a cold run)."""

from __future__ import annotations

import numpy as np

_SIGN = np.uint64(1 << 63)


def order_keys(values: np.ndarray) -> np.ndarray:
    """Unsigned 64-bit keys in the order of ``values`` (no missing ones): a float's bits with the sign bit
    flipped, and every other bit too for a negative one; -0.0 is 0.0; a signed integer with its sign bit
    flipped. Equal keys are equal values."""
    if values.dtype.kind == "f":
        x = values.astype(np.float64)  # a copy: the keys are written over it
        x += 0.0  # -0.0 becomes 0.0
        keys = x.view(np.uint64)
        flip = (x.view(np.int64) >> 63).view(np.uint64)  # all ones for a negative value, else zero
        flip |= _SIGN
        keys ^= flip
        return keys
    if values.dtype.kind == "i":
        return values.astype(np.int64).view(np.uint64) ^ _SIGN
    if values.dtype.kind in "ub":
        return values.astype(np.uint64)
    raise TypeError(f"no order keys for {values.dtype}")


def from_keys(keys: np.ndarray, kind: str) -> list:
    """The values of order keys (``kind``: NumPy's kind of the values' dtype), as Python numbers."""
    keys = np.asarray(keys, dtype=np.uint64)
    if kind == "f":
        return np.where(keys & _SIGN, keys ^ _SIGN, ~keys).view(np.float64).tolist()
    if kind == "i":
        return (keys ^ _SIGN).view(np.int64).tolist()
    return keys.tolist()


def digit_bits(requests: int, known: int) -> int:
    """The bits of the next digit: 16 (65,536 counts a request) for a few requests, fewer for many; never
    past the key's 64 bits."""
    return min(16 if requests <= 32 else 8 if requests <= 1 << 16 else 4, 64 - known)


def _requests(gid: np.ndarray | None, prefix: np.ndarray, wanted: np.ndarray, known: int, keys: np.ndarray):
    """For each wanted request column ``j``: the rows (a mask, or every row) whose group wants it and whose top
    ``known`` bits are its prefix, and those rows' groups (None: every row is group 0)."""
    top = keys >> np.uint64(64 - known) if known and gid is not None else None
    for j in range(prefix.shape[1]):
        if gid is None:  # one group: no per-row lookups
            if wanted[0, j]:
                yield j, _under(keys, int(prefix[0, j]), known) if known else slice(None), None
            continue
        match = wanted[:, j][gid]
        if known:
            match &= top == prefix[:, j][gid]
        yield j, match, gid[match]


def _under(keys: np.ndarray, prefix: int, known: int) -> np.ndarray:
    """The keys whose top ``known`` bits are ``prefix``: a range of keys (two comparisons, no shifted copy)."""
    low, end = prefix << (64 - known), (prefix + 1) << (64 - known)
    return keys >= np.uint64(low) if end >> 64 else (keys >= np.uint64(low)) & (keys < np.uint64(end))


def digit_counts(keys: np.ndarray, gid: np.ndarray | None, prefix: np.ndarray, active: np.ndarray, known: int,
                 bits: int) -> np.ndarray:
    """For each active request ``(g, j)``: the counts of the ``bits``-bit digit after the top ``known`` bits among
    group ``g``'s keys (``gid``: each key's group, None for one group) whose top ``known`` bits are
    ``prefix[g, j]``; a dense array ``[active requests in row-major order, 2**bits]``."""
    number = np.full(prefix.shape, -1, dtype=np.int64)
    number[active] = np.arange(int(active.sum()))
    width = 1 << bits
    counts = np.zeros(int(active.sum()) * width, dtype=np.int64)
    shift, mask = np.uint64(64 - known - bits), np.uint64(width - 1)
    for j, match, groups in _requests(gid, prefix, active, known, keys):
        digit = keys[match] >> shift
        if known:
            digit &= mask
        at = digit.view(np.int64)  # digits < 2**16: the same numbers
        if groups is not None:
            at += number[:, j][groups] * width
        elif number[0, j]:
            at += number[0, j] * width
        counts += np.bincount(at, minlength=counts.shape[0])
    return counts.reshape(-1, width)


def narrowed(keys: np.ndarray, gid: np.ndarray | None, prefix: np.ndarray, active: np.ndarray, known: int):
    """The keys (and their groups) in some active request's bucket: what the next passes still count."""
    if gid is None:
        match = None
        for j in np.flatnonzero(active[0]):
            under = _under(keys, int(prefix[0, j]), known)
            match = under if match is None else match | under
        return (keys if match is None else keys[match]), None
    match = np.zeros(len(keys), dtype=bool)
    for j, m, _groups in _requests(gid, prefix, active, known, keys):
        match |= m
    return keys[match], gid[match]


def in_buckets(keys: np.ndarray, gid: np.ndarray | None, prefix: np.ndarray, wanted: np.ndarray, known: int):
    """The keys of each wanted request's bucket (top ``known`` bits equal to ``prefix[g, j]``), as
    (request number ``g * J + j``, key)."""
    requests, found = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.uint64)]
    for j, match, groups in _requests(gid, prefix, wanted, known, keys):
        found.append(keys[match])
        requests.append(np.full(len(found[-1]), j) if groups is None else groups * prefix.shape[1] + j)
    return np.concatenate(requests), np.concatenate(found)
