"""Asset files: what kind a file is, parsing it as its kind, and checking it is what the card registered.

An asset is a named file (or, for a model, a folder) in a pool's ``assets/``
that a policy refers to by name: ``asset("icons-133k")``,
``checkpoint="my-clip"``. Its kind (``ASSET_KINDS`` of
:mod:`cbdsl.pipelines.data.card`) says how it is parsed; its sha256 in the
card is the promise of what the name holds. Registering one is
:func:`cbdsl.pipelines.data.writing.add_asset`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cbdsl.pipelines.data.card import AssetInfo
from cbdsl.pipelines.data.errors import PoolError, suggest
from cbdsl.pipelines.data.hashing import sha256_path
from cbdsl.pipelines.data.readers import read_json, read_npy, read_table, read_text
from cbdsl.pipelines.data.uids import uids_from_pairs


_KIND_WORDS = {
    "ids": {"ids", "uids", "id", "uid", "subset"},
    "centroids": {"centroids", "centroid", "kmeans", "clusters"},
    "eval": {"eval", "evals", "evaluation", "test", "benchmark", "bench"},
    "truth": {"truth", "gt", "defects", "groundtruth"},
    "labels": {"labels", "label"},
    "corpus": {"corpus", "target", "reference"},
    "model": {"model", "checkpoint", "ckpt", "weights", "tokenizer", "tok", "lm", "clip"},
}
_ASSET_EXTENSIONS = {
    "ids": (".txt", ".json", ".parquet", ".npy"),
    "corpus": (".txt", ".jsonl", ".parquet"),
    "centroids": (".npy",),
    "eval": (".jsonl", ".json", ".parquet"),
    "truth": (".parquet", ".jsonl", ".json", ".csv"),
    "labels": (".parquet", ".jsonl", ".json", ".csv", ".npy"),
    "table": (".parquet",),
    "model": (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".json"),  # or a directory
}
MODEL_SUFFIXES = _ASSET_EXTENSIONS["model"][:-1]  # weights files: a model asset whatever its name


def infer_asset_kind(name: str, file: Path) -> str:
    """The asset kind a name and file most likely mean; a PoolError when they do not say."""
    if file.is_dir() or file.suffix.lower() in MODEL_SUFFIXES:
        return "model"
    suffix = file.suffix.lower()
    words = set(re.split(r"[-_.]", name.lower()))
    for kind, keys in _KIND_WORDS.items():
        if words & keys and suffix in _ASSET_EXTENSIONS[kind]:
            return kind
    if suffix == ".npy":
        try:
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise PoolError(f"not a readable .npy file: {err}", file=file) from None
        return "centroids" if arr.ndim == 2 and arr.dtype.kind == "f" else "ids"
    if suffix == ".txt":
        with open(file, encoding="utf-8", errors="replace") as fh:
            head = [line.strip() for _, line in zip(range(1000), fh, strict=False)]
        tokens = [line for line in head if line]
        return "ids" if tokens and all(len(t) <= 128 and len(t.split()) == 1 for t in tokens) else "corpus"
    if suffix == ".jsonl":
        return "corpus"
    if suffix == ".parquet":
        return "table"
    if suffix == ".json":
        return "ids"
    raise PoolError(
        f"cannot tell what kind of asset {file.name} is",
        file=file, hint="pass the kind (`--kind`): " + ", ".join(
            f"{k} ({'/'.join(e)})" for k, e in _ASSET_EXTENSIONS.items()),
    )


def load_asset(path: Path, kind: str, id_column: str) -> tuple[Any, int | None]:
    """Parse an asset file as ``kind``: (data, rows; None for a model); a bad file is a PoolError naming file and row.

    Registering an asset parses it (so a bad file is refused then, not when a
    policy runs), and :meth:`Pool.read_asset <cbdsl.pipelines.data.pool.Pool.read_asset>`
    parses it again for the policy that reads it."""
    if kind == "model":
        return _model_path(path), None
    suffix = path.suffix.lower()
    allowed = _ASSET_EXTENSIONS[kind]
    if suffix not in allowed:
        raise PoolError(f"a {kind} asset must be one of {', '.join(allowed)}, not {suffix or 'a file without extension'}",
                        file=path, hint="convert the file, or pass another kind")
    if kind == "ids":
        ids = _load_ids(path, suffix, id_column)
        return ids, ids.len()
    if kind == "centroids":
        arr = read_npy(path)
        if arr.ndim != 2 or arr.dtype.kind != "f" or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise PoolError(f"centroids must be a non-empty 2-D float matrix (k, dim); this is {arr.dtype} "
                            f"with shape {arr.shape}", file=path)
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise PoolError("centroids contain NaN or infinite values", file=path, row=int(np.argmax(bad)))
        return arr, int(arr.shape[0])
    if kind in ("corpus", "eval"):
        if suffix == ".txt":
            lines = [line for line in read_text(path).splitlines() if line.strip()]
            frame = pl.DataFrame({"text": lines}, schema={"text": pl.String})
        else:
            frame = read_table(path, suffix)
            if "text" not in frame.columns or frame.schema["text"] != pl.String:
                raise PoolError(f"a {kind} asset needs a string column `text`",
                                file=path, hint=suggest("text", frame.columns, "its columns are"))
        if frame.is_empty():
            raise PoolError(f"the {kind} asset is empty", file=path)
        return frame, frame.height
    if kind == "labels" and suffix == ".npy":
        arr = read_npy(path)
        return arr, int(arr.shape[0]) if arr.ndim else 1
    frame = read_table(path, suffix)
    return frame, frame.height


def _model_path(path: Path) -> Path:
    """A model asset is only checked for shape here: its library (open_clip, transformers) loads it."""
    if path.is_dir():
        if not any(p.is_file() for p in path.rglob("*")):
            raise PoolError("the model directory is empty", file=path,
                            hint="register the folder save_pretrained (or tokenizer.save) wrote")
        return path
    if path.suffix.lower() not in _ASSET_EXTENSIONS["model"]:
        raise PoolError(f"a model asset is a directory or one of {', '.join(_ASSET_EXTENSIONS['model'])}, "
                        f"not {path.suffix or 'a file without extension'}", file=path,
                        hint="register the weights file or the folder that holds the model")
    return path


def _load_ids(path: Path, suffix: str, id_column: str) -> pl.Series:
    if suffix == ".txt":
        ids = [line.strip() for line in read_text(path).splitlines()]
        ids = [i for i in ids if i]
    elif suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise PoolError("an ids .json must be a list of ids", file=path)
        for pos, value in enumerate(data):
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise PoolError(f"an id must be a string or an integer, not {json.dumps(value)[:60]}",
                                file=path, row=pos)
        ids = [str(v) for v in data]
    elif suffix == ".parquet":
        frame = read_table(path, suffix)
        col = next((c for c in (id_column, "id", "uid") if c in frame.columns), None)
        if col is None and frame.width == 1:
            col = frame.columns[0]
        if col is None:
            raise PoolError(f"an ids parquet needs a column {id_column!r}, `id` or `uid`",
                            file=path, hint=suggest(id_column, frame.columns, "its columns are"))
        series = frame.get_column(col)
        if series.null_count():
            raise PoolError(f"column {col!r} has a null id", file=path, row=int(series.is_null().arg_true()[0]))
        ids = series.cast(pl.String).to_list()
    else:  # .npy
        ids = _ids_from_npy(read_npy(path), path)
    if not ids:
        raise PoolError("the ids asset holds no ids", file=path)
    return pl.Series("id", ids, dtype=pl.String)


def _ids_from_npy(arr, path: Path) -> list[str]:
    if arr.dtype.names:
        fields = [arr.dtype.fields[n][0] for n in arr.dtype.names]
        if len(fields) == 2 and all(f == "u8" or f.str.endswith("u8") for f in fields):
            return uids_from_pairs(arr)
        if len(fields) == 1 and fields[0].subdtype and fields[0].subdtype[1] == (2,):
            return uids_from_pairs(arr)
        raise PoolError(f"a structured .npy of ids must hold DataComp uid pairs (u8,u8), not {arr.dtype}", file=path)
    if arr.ndim != 1 or arr.dtype.kind not in "iuU":
        raise PoolError(f"an ids .npy must be 1-D integers or strings, or DataComp (u8,u8) uid pairs; "
                        f"this is {arr.dtype} with shape {arr.shape}", file=path)
    return [str(v) for v in arr.tolist()]


#: Assets whose sha256 this process has checked: (path, file signature) -> sha256. A file changed after
#: the check has another signature, so it is hashed again.
_VERIFIED: dict[tuple[str, tuple], str] = {}


def checked_asset_file(pool_path: Path, name: str, info: AssetInfo, *, rehash: bool = False) -> Path:
    """The file of an asset, once it is known to be what ``add-asset`` registered.

    Why: a policy reads an asset by name, and the card's sha256 is the promise
    of what that name holds. A file swapped after registration, or a symbolic
    link planted in ``assets/`` (to a file outside the pool, to ``/etc/passwd``,
    or ``assets/`` itself a link), would change a selection silently. So every
    part of the path inside the pool must be a real file or folder, and the
    content must hash to the card's sha256; the hash is computed the first time
    a process reads the file (and again if the file changes), not on every read.
    """
    path = pool_path / info.file
    fix = f"register it again: `cbdsl pool add-asset {pool_path} {name} FILE`"
    if not os.path.lexists(path):
        raise PoolError(f"asset {name!r} is registered but its file is missing", file=path, hint=fix)
    link = _link_inside(pool_path, path)
    if link is not None:
        raise PoolError(f"asset {name!r} goes through the symbolic link {link}: an asset is a regular file "
                        "inside the pool", file=path, hint=f"remove the link and {fix}")
    key = (str(path), _signature(path))
    if rehash or _VERIFIED.get(key) != info.sha256:
        if sha256_path(path) != info.sha256:
            raise PoolError(f"asset {name!r} does not match its sha256 in the card: the file was changed after it "
                            "was registered", file=path, hint=fix)
        _VERIFIED[key] = info.sha256
    return path


def _link_inside(pool_path: Path, path: Path) -> Path | None:
    """The first symbolic link on the way from the pool folder to ``path``, or within it (a model folder)."""
    rel = path.relative_to(pool_path)
    step = pool_path
    for part in rel.parts:
        step = step / part
        if step.is_symlink():
            return step
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for entry in (*dirs, *files):
                if os.path.islink(os.path.join(root, entry)):
                    return Path(root) / entry
    return None


def _signature(path: Path) -> tuple:
    """What changes when a file (or any file of a folder) is rewritten: size, mtime and inode of each."""
    files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*") if p.is_file())
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)
