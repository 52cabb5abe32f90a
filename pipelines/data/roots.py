"""Pool names: how ``pool "demo"`` in a policy, or ``--pool NAME``, finds a directory.

A path to a pool directory (one holding ``pool.json``; a relative path is
taken from the working directory) is used as is. Any
other string is a name, looked up as ``DIR/NAME`` in, first to last: the
given search directories (say, the sandbox's ``pools/``), each directory in
``$CBDSL_POOLS`` (colon-separated), then ``$CBDSL_HOME/pools`` (default
``~/.cbdsl/pools``, beside the trained models and caches).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cbdsl.compiler.rule8 import looks_like_path
from cbdsl.dsl.diagnostics import did_you_mean
from cbdsl.home import home
from cbdsl.pipelines.data.errors import PoolError

CARD_FILE = "pool.json"  # a directory holding one is a pool
HOW_TO_MAKE = (
    "make one with `cbdsl pool import KIND SRC DEST` (kinds: datacomp, llava, hf, parquet, jsonl), "
    "`cbdsl pool make-demo`, or cbdsl.pipelines.data.writing.write_pool() from Python"
)


ENV_VAR = "CBDSL_POOLS"


def search_path(search: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The directories searched for pool names, in order."""
    dirs = [Path(d).expanduser() for d in search]
    dirs += [Path(d).expanduser() for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    dirs.append(home() / "pools")
    return dirs


def list_pools(search: Sequence[str | os.PathLike] = ()) -> dict[str, Path]:
    """Every pool name that resolves, with its directory (the first on the search path wins)."""
    found: dict[str, Path] = {}
    for directory in search_path(search):
        if not directory.is_dir():
            continue
        for child in sorted(directory.iterdir()):
            if child.name not in found and (child / CARD_FILE).is_file():
                found[child.name] = child
    return found


def resolve_pool(name_or_path: str | os.PathLike, search: Sequence[str | os.PathLike] = ()) -> Path:
    """The directory of a pool given by path or by name; PoolError (with the known names) if there is none."""
    text = os.fspath(name_or_path)
    if not text:
        raise PoolError("no pool named: the pool name is empty", hint="give a pool name or directory")
    path = Path(text).expanduser()
    if (path / CARD_FILE).is_file():
        return path
    if looks_like_path(text) or os.sep in text or path.is_absolute():
        if path.is_dir():
            raise PoolError(f"{path} is a directory but not a pool (no {CARD_FILE})", hint=HOW_TO_MAKE)
        raise PoolError(f"no pool directory at {path}", hint=HOW_TO_MAKE)
    for directory in search_path(search):
        candidate = directory / text
        if (candidate / CARD_FILE).is_file():
            return candidate
    known = list_pools(search)
    dirs = ", ".join(str(d) for d in search_path(search))
    close = next(iter(did_you_mean(text, known)), None)
    listing = ("known pools: " + ", ".join(f"`{n}`" for n in known)) if known else "no pools are installed"
    hint = f"{close} ({listing})" if close else listing
    raise PoolError(
        f"unknown pool {text!r} (searched {dirs})",
        hint=f"{hint}; give a pool directory, set ${ENV_VAR}, or {HOW_TO_MAKE}",
    )
