"""The hashes a card keeps: each file's (or folder's) sha256, and the pool's content hash over them.

The content hash is the pool's version (the score cache is keyed by it). It
covers the shard hashes, in order, the schema and the id column, never
``lineage`` (so ``created_at`` does not change it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cbdsl.pipelines.data.card import FORMAT_VERSION


def content_hash(shard_hashes: Sequence[str], schema: Mapping[str, str], dtypes: Mapping[str, str],
                 id_column: str) -> str:
    """sha256 over the shard hashes in order, the schema and the id column: the pool's version."""
    payload = json.dumps(
        {"format_version": FORMAT_VERSION, "id_column": id_column, "schema": list(schema.items()),
         "dtypes": list(dtypes.items()), "shards": list(shard_hashes)},
        separators=(",", ":"), ensure_ascii=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """A file's sha256, read in 4 MiB blocks (shards and assets may be larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """A file's sha256, or a directory's: over each file's relative path and sha256, in sorted order.

    A directory asset (a from_pretrained model, a tokenizer folder) is one unit: a
    renamed, added, removed or changed file changes its hash, and nothing else does."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for rel in sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()):
        digest.update(f"{rel}\0{sha256_file(path / rel)}\n".encode())
    return digest.hexdigest()
