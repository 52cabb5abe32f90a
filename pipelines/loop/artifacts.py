"""Compiled artifacts on disk: ``.cbdsl/compiled/<hash>.json`` and the pointer to the last one.

``cbdsl compile`` writes the artifact :func:`cbdsl.stages.compile_source` made and
remembers it as the last compiled policy; ``cbdsl submit`` reads it back and
refuses it when the policy or the pool changed since (:func:`is_stale`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cbdsl.stages import source_sha256

SANDBOX_DIR = ".cbdsl"


def sandbox_dir(start: str | os.PathLike = ".") -> Path:
    """The sandbox's state folder: ``.cbdsl/`` in the nearest folder holding ``cbdsl.toml`` or ``.cbdsl``, else here."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "cbdsl.toml").is_file() or (folder / SANDBOX_DIR).is_dir():
            return folder / SANDBOX_DIR
    return here / SANDBOX_DIR


def write_artifact(artifact: Mapping[str, Any], state: Path) -> Path:
    """Write ``compiled/<policy_hash>.json`` and point ``last.json`` at it (both atomically)."""
    compiled = state / "compiled"
    compiled.mkdir(parents=True, exist_ok=True)
    path = compiled / f"{artifact['policy_hash'][:16]}.json"
    _atomic_write(path, json.dumps(artifact, indent=2, sort_keys=True) + "\n")
    _atomic_write(state / "last.json", json.dumps({"artifact": str(path.relative_to(state)),
                                                  "source": artifact["source"]}, indent=2) + "\n")
    return path


def read_last(state: Path) -> dict[str, Any] | None:
    pointer = state / "last.json"
    if not pointer.is_file():
        return None
    target = state / json.loads(pointer.read_text())["artifact"]
    return json.loads(target.read_text()) if target.is_file() else None


def is_stale(artifact: Mapping[str, Any], text: str, pool=None) -> str | None:
    """Why a compiled artifact no longer matches its source or pool (None when it still does)."""
    if artifact.get("source_sha256") != source_sha256(text):
        return f"{artifact.get('source')} changed since it was compiled"
    recorded = artifact.get("pool")
    if pool is not None and recorded is not None:
        if recorded["content_hash"] != pool.content_hash:
            return f"pool `{pool.name}` changed since the policy was compiled"
        for name, sha in recorded.get("assets", {}).items():
            current = pool.card.assets.get(name)
            if current is None or current.sha256 != sha:
                return f"asset `{name}` of pool `{pool.name}` changed since the policy was compiled"
    return None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
