"""Writing pools: :func:`write_pool` makes one from a frame, :func:`add_asset` adds a named file to one.

Both change a pool so that a reader never sees half of the change: a new pool
is written in a temporary directory and moved into place with its card
written last (a directory without ``pool.json`` is never taken for a pool),
and an asset is copied to a temporary name, moved, and then recorded by
rewriting the card atomically.

:func:`write_pool` is deterministic: the same frame gives byte-identical shards
and the same card, except ``lineage.created_at``, which the content hash does
not cover (it covers the shard hashes, in order, and the schema).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from cbdsl.pipelines.data.assets import infer_asset_kind, load_asset
from cbdsl.pipelines.data.card import (
    ASSET_KINDS, ASSET_NAME, ASSETS_DIR, FORMAT_VERSION, SCORES_DIR, SHARDS_DIR, AssetInfo, PoolCard, ShardInfo,
    write_card,
)
from cbdsl.pipelines.data.columns import column_stats, type_name
from cbdsl.pipelines.data.errors import PoolError, suggest
from cbdsl.pipelines.data.hashing import content_hash, sha256_file, sha256_path
from cbdsl.pipelines.data.image_folder import Images, install
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.roots import CARD_FILE
from cbdsl.version import __version__


#: Control characters (Unicode category Cc: C0, DEL, C1), which no id may hold.
_CONTROL = r"[\x00-\x1F\x7F-\x9F]"
CONTROL_HINT = ("ids are printed, hashed and written to subset files and manifests: a NUL, newline or other "
                "control character in one is a broken record; fix or drop it in the source")


def control_characters(ids: pl.Series) -> pl.Series:
    """Which string ids hold a control character (a NUL, a newline, an escape)."""
    return ids.str.contains(_CONTROL).fill_null(False)


def _validate_ids(frame: pl.DataFrame, id_column: str) -> None:
    if id_column not in frame.columns:
        raise PoolError(f"the frame has no id column {id_column!r}",
                        hint=suggest(id_column, frame.columns, "its columns are") + "; pass id_column=")
    dtype = frame.schema[id_column]
    if not (dtype == pl.String or dtype.is_integer()):
        raise PoolError(f"id column {id_column!r} has type {dtype}; ids must be strings or integers",
                        hint=f"cast it first, e.g. pl.col({id_column!r}).cast(pl.String)")
    ids = frame.get_column(id_column)
    if ids.null_count():
        row = int(ids.is_null().arg_true()[0])
        raise PoolError(f"id column {id_column!r} has {ids.null_count()} null id(s), the first at row {row}",
                        row=row, hint="every row needs an id; drop those rows or make ids for them")
    if dtype == pl.String:
        empty = (ids.str.len_bytes() == 0)
        if empty.any():
            row = int(empty.arg_true()[0])
            raise PoolError(f"id column {id_column!r} has an empty id at row {row}", row=row,
                            hint="every row needs a non-empty id")
        control = control_characters(ids)
        if control.any():
            row = int(control.arg_true()[0])
            raise PoolError(f"id column {id_column!r} has an id with a control character at row {row}: "
                            f"{ids[row]!r}", row=row, hint=CONTROL_HINT)
    dup = ids.is_duplicated()
    if dup.any():
        rows = dup.arg_true()
        value = ids[int(rows[0])]
        same = (ids == value).arg_true()
        raise PoolError(
            f"id column {id_column!r} has duplicate ids ({int(dup.sum())} rows): {value!r} is at rows "
            f"{int(same[0])} and {int(same[1])}",
            row=int(same[1]), hint="ids must be unique; drop the duplicates or build unique ids",
        )


def _normalise_embeddings(frame: pl.DataFrame) -> pl.DataFrame:
    """List(float) columns whose lists all have one length become Array(float, n) (type "embedding")."""
    casts = []
    for col, dtype in frame.schema.items():
        if isinstance(dtype, pl.List) and dtype.inner.is_float():
            series = frame.get_column(col).drop_nulls()
            if series.is_empty():
                continue
            lengths = series.list.len()
            n = lengths.min()
            if n is None or n < 1 or lengths.max() != n or series.list.explode().null_count():
                continue
            casts.append(pl.col(col).list.to_array(int(n)))
    return frame.with_columns(casts) if casts else frame


def row_group_rows(frame: pl.DataFrame, shard_rows: int) -> int:
    """Rows per parquet row group: about 64 MiB uncompressed, between 1Ki and 128Ki rows.

    Public so that a writer of shards outside :func:`write_pool` (the synthetic
    DataComp pool of ``tests/benchmarks/datacomp_pool.py``) cuts row groups the same way."""
    return _group_rows(frame.estimated_size(), frame.height, shard_rows)


def _group_rows(estimated_bytes: int, rows: int, shard_rows: int) -> int:
    """:func:`row_group_rows` from the frame's size alone, for a frame that is never held whole."""
    per_row = max(1, estimated_bytes // max(1, rows))
    group = (64 << 20) // per_row
    group = max(1024, min(131_072, group // 1024 * 1024))
    return max(1, min(group, shard_rows))


STREAM_SHARD_BYTES = 256 << 20


def streamed_shard_rows(estimated_bytes: int, rows: int, shard_rows: int) -> int:
    """Rows per shard when columns are streamed: at most ``shard_rows``, and about 256 MiB in memory.

    A shard is the unit held in memory while it is written (Polars writes a
    parquet file from a whole frame); with DataComp's four embeddings a row
    is 10 KB, so the default million-row shard would hold 10 GB."""
    per_row = max(1, estimated_bytes // max(1, rows))
    return max(1, min(shard_rows, max(1024, STREAM_SHARD_BYTES // per_row // 1024 * 1024)))


@dataclass(frozen=True)
class StreamedColumns:
    """Embedding columns too large to hold whole, read a row range at a time while a pool is written.

    ``dims`` names the columns in order with their widths; each is stored as
    ``Array(Float32, dim)``, as the CLIP embedding scorers store theirs:
    every embedding reader (``execute._embeddings``, ``geometry.embedding_matrix``)
    computes in float32, so float16 sources lose nothing. ``read(start,
    stop)`` returns those columns, without nulls, for rows ``[start, stop)``
    of the frame they extend. ``write_pool(frame, ..., streamed=S)`` writes
    the pool with the frame's columns and then these, a shard at a time, in
    shards of ``shard_rows`` capped by :func:`streamed_shard_rows`; its
    shards, card and content hash are those that ``write_pool`` gives the
    whole frame (these columns included) with that ``shard_rows``.
    """

    dims: Mapping[str, int]
    read: Callable[[int, int], pl.DataFrame]

    @property
    def dtypes(self) -> dict[str, pl.DataType]:
        return {col: pl.Array(pl.Float32, dim) for col, dim in self.dims.items()}

    def estimated_size(self, rows: int) -> int:
        """What Polars' ``estimated_size`` says these columns take for ``rows`` rows (4 bytes a value, no nulls)."""
        return rows * 4 * sum(self.dims.values())

    def part(self, start: int, stop: int) -> pl.DataFrame:
        """Rows ``[start, stop)``, checked: the wrong rows or types would write a pool that lies."""
        part = self.read(start, stop)
        if part.height != stop - start or dict(part.schema) != self.dtypes:
            raise PoolError(f"streamed columns for rows {start}..{stop} came back as {part.height} rows of "
                            f"{dict(part.schema)}, not {stop - start} rows of {self.dtypes}")
        nulls = [col for col in part.columns if part.get_column(col).null_count()]
        if nulls:
            raise PoolError(f"streamed column {nulls[0]!r} has nulls in rows {start}..{stop}",
                            hint="streamed embedding columns have a value in every row")
        return part


def _prepare_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise PoolError(f"{path} exists and is a file", hint="give a directory path for the pool")
    if path.is_dir() and any(path.iterdir()):
        is_pool = (path / CARD_FILE).is_file() or (path / SHARDS_DIR).is_dir()
        if not is_pool:
            raise PoolError(f"{path} is a non-empty directory that is not a pool; refusing to write into it",
                            hint="choose a new or empty directory")
        if not overwrite:
            raise PoolError(f"a pool already exists at {path}",
                            hint="pass overwrite=True (`--overwrite`) to replace it, or choose another path")


def write_pool(frame: pl.DataFrame | pl.LazyFrame, path: str | os.PathLike, *, name: str,
               id_column: str = "id", lineage: Mapping[str, Any] | None = None,
               shard_rows: int = 1_000_000, overwrite: bool = False,
               streamed: StreamedColumns | None = None, images: Images | None = None) -> Pool:
    """Write ``frame`` as a pool at ``path`` and return it opened.

    Validates the ids (present, non-null, unique), turns fixed-length float
    lists into embeddings (Array), writes zstd parquet shards of at most
    ``shard_rows`` rows, computes the card, and moves the finished directory
    into place with the card written last. ``lineage`` is kept as given, plus
    ``created_at`` and ``cbdsl_version`` when absent.

    ``streamed`` adds embedding columns after the frame's that are read a
    shard at a time (see :class:`StreamedColumns`): only one shard of them is
    in memory, and shards hold about 256 MiB at most.

    ``images`` makes string columns of image paths schema type ``image``, relative to its folder
    (:mod:`~cbdsl.pipelines.data.image_folder`).
    """
    if shard_rows < 1:
        raise PoolError(f"shard_rows must be at least 1, not {shard_rows}")
    if not name or not isinstance(name, str):
        raise PoolError("a pool needs a name", hint="pass name=")
    path = Path(path).expanduser().absolute()
    _prepare_target(path, overwrite)
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    if not isinstance(frame, pl.DataFrame):
        raise PoolError(f"write_pool needs a Polars DataFrame or LazyFrame, not {type(frame).__name__}")
    _validate_ids(frame, id_column)
    frame = _normalise_embeddings(frame).rechunk()

    all_dtypes = dict(frame.schema)
    estimated = frame.estimated_size()
    if streamed is not None:
        clash = [col for col in streamed.dims if col in all_dtypes]
        if clash:
            raise PoolError(f"streamed column {clash[0]!r} is also a column of the frame",
                            hint="rename one of them")
        all_dtypes.update(streamed.dtypes)
        estimated += streamed.estimated_size(frame.height)
        shard_rows = streamed_shard_rows(estimated, frame.height, shard_rows)
    schema = {col: type_name(dtype) for col, dtype in all_dtypes.items()}
    if images is not None:
        _check_image_columns(images, schema)
        schema.update({col: "image" for col in images.columns})
    dtypes = {col: str(dtype) for col, dtype in all_dtypes.items()}
    stats = column_stats(frame, {col: schema[col] for col in frame.columns}, id_column)
    if streamed is not None:  # what column_stats says of an embedding without nulls
        stats = {col: stats.get(col) or {"null_count": 0, "dim": streamed.dims[col]} for col in schema}

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.writing-{uuid.uuid4().hex[:12]}"
    try:
        (tmp / SHARDS_DIR).mkdir(parents=True)
        (tmp / SCORES_DIR).mkdir()
        (tmp / ASSETS_DIR).mkdir()
        shards = _write_shards(frame, streamed, tmp, shard_rows, _group_rows(estimated, frame.height, shard_rows))
        image_folder = None
        if images is not None:
            image_folder = install(images.folder, tmp) if images.move else str(images.folder.absolute())

        full_lineage = dict(lineage or {})
        full_lineage.setdefault("created_at", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        full_lineage.setdefault("cbdsl_version", __version__)
        card = PoolCard(
            format_version=FORMAT_VERSION, name=name, id_column=id_column, schema=schema, dtypes=dtypes,
            rows=frame.height, shards=shards, stats=stats,
            content_hash=content_hash([s.sha256 for s in shards], schema, dtypes, id_column),
            lineage=_jsonable(full_lineage), assets={}, image_folder=image_folder,
        )
        _install(tmp, path, card)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Pool(path, card)


def _check_image_columns(images: Images, schema: Mapping[str, str]) -> None:
    for col in images.columns:
        if schema.get(col) != "str":
            raise PoolError(f"image column {col!r} must be a string column of paths, not {schema.get(col, 'absent')}",
                            hint="image columns hold paths relative to the image folder")
    if not images.folder.is_dir():
        raise PoolError(f"the image folder {images.folder} is not a directory", hint="give the folder the image "
                        "paths are relative to")


def _write_shards(frame: pl.DataFrame, streamed: StreamedColumns | None, directory: Path, shard_rows: int,
                  group_rows: int) -> list[ShardInfo]:
    """The shards of ``shard_rows`` rows, each the frame's slice and then its streamed columns."""
    shards: list[ShardInfo] = []
    for i in range(max(1, -(-frame.height // shard_rows))):
        part = frame.slice(i * shard_rows, shard_rows)
        if streamed is not None:
            part = part.hstack(streamed.part(i * shard_rows, i * shard_rows + part.height))
        rel = f"{SHARDS_DIR}/part-{i:05d}.parquet"
        part.write_parquet(directory / rel, compression="zstd", compression_level=3, statistics=True,
                           row_group_size=group_rows)
        shards.append(ShardInfo(file=rel, rows=part.height, sha256=sha256_file(directory / rel)))
        del part
    return shards


def _install(tmp: Path, path: Path, card: PoolCard) -> None:
    """Move the written directory to ``path`` (replacing a pool there) and write the card last."""
    old = None
    if path.exists():
        if any(path.iterdir()):
            old = path.parent / f".{path.name}.replaced-{uuid.uuid4().hex[:12]}"
            os.replace(path, old)
        else:
            path.rmdir()
    try:
        os.replace(tmp, path)
        write_card(path, card)  # last: until now the directory is not a pool
    except BaseException:
        if old is not None:  # put the replaced pool back
            shutil.rmtree(path, ignore_errors=True)
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    """Lineage as plain JSON (paths and other objects become strings)."""
    return json.loads(json.dumps(value, default=str))


def add_asset(pool_path: str | os.PathLike, name: str, file: str | os.PathLike,
              kind: str | None = None, description: str = "") -> Pool:
    """Copy ``file`` into the pool as the named asset (replacing one of that name) and record it in the card.

    The pool gets a copy of the content, never a link: a symbolic link given as
    ``file`` (or inside a model folder) is copied as the regular file it points
    to now, so later changes to the link's target do not reach the pool.

    ``kind`` is inferred from the name and extension when not given. The file
    must parse as that kind; its sha256 and row count go into the card. A
    ``model`` asset may be a directory (a from_pretrained model, a tokenizer
    folder): it is copied whole and hashed by :func:`sha256_path`.
    """
    pool = Pool.open(pool_path)
    if not isinstance(name, str) or not ASSET_NAME.fullmatch(name):
        raise PoolError(
            f"{name!r} is not a valid asset name",
            hint="names are lower case letters, digits and _ . - , starting with a letter or digit (e.g. icons-133k)",
        )
    src = Path(file).expanduser()
    if not src.exists():
        raise PoolError(f"no asset file at {src}", file=src, hint="give the path of the file to register")
    if kind is None:
        kind = infer_asset_kind(name, src)
    elif kind not in ASSET_KINDS:
        raise PoolError(f"{kind!r} is not an asset kind", hint=suggest(kind, ASSET_KINDS, "kinds are"))
    if not src.is_file() and not (kind == "model" and src.is_dir()):
        raise PoolError(f"{src} is not a regular file", file=src,
                        hint="only a model asset may be a directory: pass `--kind model`" if src.is_dir()
                        else "give the path of the file to register")
    _data, rows = load_asset(src, kind, pool.id_column)

    suffix = "" if src.is_dir() else src.suffix.lower()
    filename = name if name.endswith(suffix) else name + suffix
    rel = f"{ASSETS_DIR}/{filename}"
    if pool.assets_dir.is_symlink() or (pool.assets_dir.exists() and not pool.assets_dir.is_dir()):
        raise PoolError(f"{pool.assets_dir} is a symbolic link or a file, not the pool's own folder: assets live "
                        "inside the pool", file=pool.assets_dir,
                        hint=f"remove it (`rm {pool.assets_dir}`) and add the assets again")
    pool.assets_dir.mkdir(exist_ok=True)
    tmp = pool.assets_dir / f".{filename}.{uuid.uuid4().hex}.tmp"
    old = pool.assets_dir / f".{filename}.{uuid.uuid4().hex}.old"
    try:
        if src.is_dir():
            shutil.copytree(src, tmp, symlinks=False)
        else:
            shutil.copyfile(src, tmp)
        digest = sha256_path(tmp)
        target = pool.path / rel
        if target.is_dir() or (tmp.is_dir() and target.exists()):
            os.replace(target, old)  # a directory cannot be replaced in one step: move the old one aside
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, old):
            _remove(leftover)

    previous = pool.card.assets.get(name)
    assets = dict(pool.card.assets)
    assets[name] = AssetInfo(file=rel, kind=kind, sha256=digest, rows=rows, description=description)
    card = pool.card.model_copy(update={"assets": dict(sorted(assets.items()))})
    write_card(pool.path, card)
    if previous is not None and previous.file != rel:
        _remove(pool.path / previous.file)
    return Pool(pool.path, card)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
