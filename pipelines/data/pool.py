"""Pools: the data a policy curates, as a directory a person can inspect.

A pool is a directory::

    POOL/
      pool.json              the card: id column, schema, statistics, hashes, lineage, assets
      shards/part-00000.parquet ...
      scores/                the score cache (filled by scorers, keyed by the content hash)
      assets/                named files a policy may refer to: asset("icons-133k"), checkpoint="my-clip"

The card is what agents read (POOL.md is made from it) and what the checker
types a policy against, so it is written last and atomically: a directory
without ``pool.json`` is never taken for a pool, and a crash while writing
leaves no half pool that looks valid.

:func:`write_pool` is deterministic: the same frame gives byte-identical shards
and the same card, except ``lineage.created_at``, which the content hash does
not cover (it covers the shard hashes, in order, and the schema).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cbdsl.dsl.diagnostics import did_you_mean
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.roots import CARD_FILE, HOW_TO_MAKE
from cbdsl.pipelines.data.uids import uids_from_pairs
from cbdsl.version import __version__

FORMAT_VERSION = 1
SHARDS_DIR = "shards"
SCORES_DIR = "scores"
ASSETS_DIR = "assets"

TypeName = Literal["str", "int", "float", "bool", "embedding", "list[str]", "binary", "any"]
TYPE_NAMES: tuple[str, ...] = ("str", "int", "float", "bool", "embedding", "list[str]", "binary", "any")
AssetKind = Literal["ids", "corpus", "centroids", "eval", "truth", "labels", "table", "model"]
ASSET_KINDS: tuple[str, ...] = ("ids", "corpus", "centroids", "eval", "truth", "labels", "table", "model")
ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
QUANTILES = (0.01, 0.5, 0.99)
MAX_VALUE_COUNTS = 50
EXACT_DISTINCT_ROWS = 2_000_000  # above this, distinct counts are HyperLogLog estimates

def closest_name(word: str, candidates: Iterable[str]) -> str | None:
    hints = did_you_mean(word, candidates)
    return hints[0] if hints else None


def suggest(word: str, candidates: Iterable[str], known: str) -> str:
    """A hint for an unknown name: the closest candidates, then the list (`known` introduces it)."""
    candidates = sorted(set(candidates))
    close = closest_name(word, candidates)
    listing = ", ".join(f"`{c}`" for c in candidates[:30]) + (" ..." if len(candidates) > 30 else "")
    text = f"{known}: {listing}" if candidates else f"there are no {known}"
    return f"{close} ({text})" if close else text


# --------------------------------------------------------------------------- card


class ShardInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    rows: int = Field(ge=0)
    sha256: str


class AssetInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    kind: AssetKind
    sha256: str
    rows: int | None = None
    description: str = ""


with warnings.catch_warnings():
    # `schema` is the card's field name (the checker and POOL.md read it); it
    # shadows pydantic's deprecated BaseModel.schema() classmethod on purpose.
    warnings.filterwarnings("ignore", message=r'Field name "schema"', category=UserWarning)

    class PoolCard(BaseModel):
        """``pool.json``: everything about a pool that can be known without scanning it."""

        model_config = ConfigDict(frozen=True, extra="forbid")

        format_version: int
        name: str
        id_column: str
        schema: dict[str, TypeName]
        dtypes: dict[str, str]
        rows: int = Field(ge=0)
        shards: list[ShardInfo]
        stats: dict[str, dict[str, Any]]
        content_hash: str
        lineage: dict[str, Any]
        assets: dict[str, AssetInfo] = Field(default_factory=dict)

        @model_validator(mode="after")
        def _consistent(self) -> PoolCard:
            if self.id_column not in self.schema:
                raise ValueError(f"id_column {self.id_column!r} is not in schema")
            if set(self.schema) != set(self.dtypes):
                raise ValueError("schema and dtypes name different columns")
            if not self.shards:
                raise ValueError("a pool has at least one shard")
            if sum(s.rows for s in self.shards) != self.rows:
                raise ValueError(f"rows is {self.rows} but the shards hold {sum(s.rows for s in self.shards)}")
            return self


def type_name(dtype: pl.DataType) -> str:
    """The checker's type name for a Polars dtype ("any" when the DSL has no word for it)."""
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return "str"
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_float() or dtype.is_decimal():
        return "float"
    if dtype == pl.Binary:
        return "binary"
    if isinstance(dtype, pl.Array) and len(dtype.shape) == 1 and dtype.inner.is_float():
        return "embedding"
    if isinstance(dtype, pl.List) and dtype.inner == pl.String:
        return "list[str]"
    return "any"


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


def _json_number(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def column_stats(frame: pl.DataFrame, schema: Mapping[str, str], id_column: str | None = None
                 ) -> dict[str, dict[str, Any]]:
    """Per-column statistics for the card, computed in one pass over the frame.

    Every column: ``null_count``. Numbers: min, max, mean, std, quantiles
    (0.01/0.5/0.99; NaN excluded and counted in ``nan_count``). Strings: mean,
    min and max length in characters, ``distinct`` (a HyperLogLog estimate
    above 2M rows, flagged by ``distinct_is_estimate``), and ``value_counts``
    when there are at most 50 distinct values (never for the id column). Embeddings: ``dim``. Lists:
    mean length. Binary: mean, min and max size in bytes.
    """
    rows = frame.height
    exprs: list[pl.Expr] = []
    plans: dict[str, list[str]] = {}

    def add(col: str, key: str, expr: pl.Expr) -> None:
        exprs.append(expr.alias(f"{col}\x00{key}"))
        plans.setdefault(col, []).append(key)

    for col, kind in schema.items():
        c = pl.col(col)
        add(col, "null_count", c.null_count())
        if kind in ("int", "float"):
            if kind == "float":
                c = c.cast(pl.Float64)
                add(col, "nan_count", c.is_nan().sum())
                c = c.fill_nan(None)
            add(col, "min", c.min())
            add(col, "max", c.max())
            add(col, "mean", c.cast(pl.Float64).mean())
            add(col, "std", c.cast(pl.Float64).std())
            for q in QUANTILES:
                add(col, f"q{q}", c.cast(pl.Float64).quantile(q, interpolation="linear"))
        elif kind == "bool":
            add(col, "true_count", c.sum())
        elif kind == "str":
            length = c.cast(pl.String).str.len_chars()
            add(col, "mean_length", length.mean())
            add(col, "min_length", length.min())
            add(col, "max_length", length.max())
            nonnull = c.cast(pl.String).drop_nulls()
            add(col, "distinct", nonnull.n_unique() if rows <= EXACT_DISTINCT_ROWS else nonnull.approx_n_unique())
        elif kind == "list[str]":
            add(col, "mean_items", c.list.len().mean())
        elif kind == "binary":
            size = c.bin.size()
            add(col, "mean_bytes", size.mean())
            add(col, "min_bytes", size.min())
            add(col, "max_bytes", size.max())

    values = frame.select(exprs).row(0) if exprs else ()
    flat = dict(zip([e.meta.output_name() for e in exprs], values, strict=True))
    stats: dict[str, dict[str, Any]] = {}
    for col, keys in plans.items():
        kind = schema[col]
        entry: dict[str, Any] = {}
        quantiles: dict[str, Any] = {}
        for key in keys:
            value = _json_number(flat[f"{col}\x00{key}"])
            if key.startswith("q"):
                quantiles[key[1:]] = value
            else:
                entry[key] = value
        if quantiles:
            entry["quantiles"] = quantiles
        if kind == "int":
            for key in ("min", "max"):
                if entry.get(key) is not None:
                    entry[key] = int(entry[key])
        if kind == "str":
            entry["distinct_is_estimate"] = rows > EXACT_DISTINCT_ROWS
            if col != id_column and entry["distinct"] is not None and entry["distinct"] <= MAX_VALUE_COUNTS + 10:
                counts = (frame.get_column(col).cast(pl.String).drop_nulls().value_counts(name="n")
                          .sort(["n", col], descending=[True, False]))
                if counts.height <= MAX_VALUE_COUNTS:
                    entry["distinct"] = counts.height
                    entry["distinct_is_estimate"] = False
                    entry["value_counts"] = dict(zip(counts[col].to_list(), counts["n"].to_list(), strict=True))
        if kind == "embedding":
            entry["dim"] = int(frame.schema[col].shape[0])
        stats[col] = entry
    return stats


# --------------------------------------------------------------------------- pool


@dataclass(frozen=True)
class Pool:
    """An opened pool: its directory and its card. Cheap to open; scanning is lazy."""

    path: Path
    card: PoolCard

    @classmethod
    def open(cls, path: str | os.PathLike) -> Pool:
        path = Path(path).expanduser().absolute()
        if not path.exists():
            raise PoolError(f"no pool at {path}: the directory does not exist", hint=HOW_TO_MAKE)
        if not path.is_dir():
            raise PoolError(f"{path} is a file, not a pool directory", hint=HOW_TO_MAKE)
        card_path = path / CARD_FILE
        if not card_path.is_file():
            if (path / SHARDS_DIR).is_dir():
                raise PoolError(
                    f"{path} has shards but no {CARD_FILE}: an interrupted write, not a usable pool",
                    hint="write the pool again with overwrite (`cbdsl pool import ... --overwrite`)",
                )
            raise PoolError(f"{path} is not a pool: it has no {CARD_FILE}", hint=HOW_TO_MAKE)
        card = _read_card(card_path)
        missing = [s.file for s in card.shards if not (path / s.file).is_file()]
        if missing:
            raise PoolError(
                f"the card lists {len(missing)} shard(s) that are missing, first {missing[0]}",
                file=card_path, hint="the pool was moved or edited by hand; import it again",
            )
        return cls(path, card)

    # the card's most used fields, as attributes
    @property
    def name(self) -> str:
        return self.card.name

    @property
    def id_column(self) -> str:
        return self.card.id_column

    @property
    def schema(self) -> dict[str, str]:
        return dict(self.card.schema)

    @property
    def content_hash(self) -> str:
        return self.card.content_hash

    @property
    def scores_dir(self) -> Path:
        return self.path / SCORES_DIR

    @property
    def assets_dir(self) -> Path:
        return self.path / ASSETS_DIR

    @property
    def shard_paths(self) -> list[Path]:
        return [self.path / s.file for s in self.card.shards]

    def scan(self, columns: Sequence[str] | None = None) -> pl.LazyFrame:
        """A lazy scan over the shards, in order, reading only ``columns`` (all if None)."""
        frame = pl.scan_parquet([str(p) for p in self.shard_paths])
        if columns is None:
            return frame
        columns = list(columns)
        for col in columns:
            if col not in self.card.schema:
                raise PoolError(f"pool {self.name!r} has no column {col!r}",
                                hint=suggest(col, self.card.schema, "its columns are"))
        return frame.select(columns)

    def asset_path(self, name: str) -> Path:
        """The file (or, for a model, possibly the directory) of a registered asset, checked (:meth:`_asset`)."""
        return self._asset(name)[1]

    def read_asset(self, name: str) -> Any:
        """A registered asset parsed by its kind.

        ids -> ``pl.Series`` of str; centroids -> 2-D ``np.ndarray``; corpus and
        eval -> ``pl.DataFrame`` with a ``text`` column; labels, truth and table ->
        ``pl.DataFrame``; model -> the ``Path`` of its file or directory (its
        library loads it).
        """
        info, path = self._asset(name)
        data, _rows = _load_asset(path, info.kind, self.id_column)
        return data

    def verify(self) -> None:
        """Re-hash every shard and asset against the card (slow: reads every byte)."""
        for shard in self.card.shards:
            if sha256_file(self.path / shard.file) != shard.sha256:
                raise PoolError(f"shard {shard.file} does not match its sha256 in the card",
                                file=self.path / shard.file,
                                hint="the shard was changed after the pool was written; import the pool again")
        for name, info in self.card.assets.items():
            checked_asset_file(self.path, name, info, rehash=True)

    def _asset(self, name: str) -> tuple[AssetInfo, Path]:
        """The card entry and the file of asset ``name``, after :func:`checked_asset_file` vouched for it."""
        info = self.card.assets.get(name)
        if info is None:
            raise PoolError(
                f"pool {self.name!r} has no asset {name!r}",
                hint=suggest(name, self.card.assets, "its assets are")
                + "; register one with `cbdsl pool add-asset POOL NAME FILE`",
            )
        return info, checked_asset_file(self.path, name, info)


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


def _read_card(card_path: Path) -> PoolCard:
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise PoolError(f"the card is not UTF-8 text ({err.reason})", file=card_path) from None
    except json.JSONDecodeError as err:
        raise PoolError(f"the card is not valid JSON: {err.msg} (column {err.colno})", file=card_path,
                        line=err.lineno, hint="restore it or import the pool again") from None
    if not isinstance(data, dict):
        raise PoolError("the card is not a JSON object", file=card_path, hint="import the pool again")
    version = data.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise PoolError(f"the pool has format_version {version}; this cbdsl reads up to {FORMAT_VERSION}",
                        file=card_path, hint="upgrade cbdsl")
    try:
        return PoolCard.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'card'}: {e['msg']}" for e in err.errors()[:5]
        )
        raise PoolError(f"the card is not a valid pool card: {problems}", file=card_path,
                        hint="restore it or import the pool again") from None


def _write_card(directory: Path, card: PoolCard) -> None:
    """Write pool.json atomically: a temporary file, fsync, then os.replace."""
    text = json.dumps(card.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    tmp = directory / f".{CARD_FILE}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / CARD_FILE)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- writing


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


def _row_group_rows(frame: pl.DataFrame, shard_rows: int) -> int:
    """Rows per parquet row group: about 64 MiB uncompressed, between 1Ki and 128Ki rows."""
    return _group_rows(frame.estimated_size(), frame.height, shard_rows)


def _group_rows(estimated_bytes: int, rows: int, shard_rows: int) -> int:
    """:func:`_row_group_rows` from the frame's size alone, for a frame that is never held whole."""
    per_row = max(1, estimated_bytes // max(1, rows))
    group = (64 << 20) // per_row
    group = max(1024, min(131_072, group // 1024 * 1024))
    return max(1, min(group, shard_rows))


STREAM_SHARD_BYTES = 256 << 20


def _streamed_shard_rows(estimated_bytes: int, rows: int, shard_rows: int) -> int:
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
    shards of ``shard_rows`` capped by :func:`_streamed_shard_rows`; its
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
               streamed: StreamedColumns | None = None) -> Pool:
    """Write ``frame`` as a pool at ``path`` and return it opened.

    Validates the ids (present, non-null, unique), turns fixed-length float
    lists into embeddings (Array), writes zstd parquet shards of at most
    ``shard_rows`` rows, computes the card, and moves the finished directory
    into place with the card written last. ``lineage`` is kept as given, plus
    ``created_at`` and ``cbdsl_version`` when absent.

    ``streamed`` adds embedding columns after the frame's that are read a
    shard at a time (see :class:`StreamedColumns`): only one shard of them is
    in memory, and shards hold about 256 MiB at most.
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
        shard_rows = _streamed_shard_rows(estimated, frame.height, shard_rows)
    schema = {col: type_name(dtype) for col, dtype in all_dtypes.items()}
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

        full_lineage = dict(lineage or {})
        full_lineage.setdefault("created_at", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        full_lineage.setdefault("cbdsl_version", __version__)
        card = PoolCard(
            format_version=FORMAT_VERSION, name=name, id_column=id_column, schema=schema, dtypes=dtypes,
            rows=frame.height, shards=shards, stats=stats,
            content_hash=content_hash([s.sha256 for s in shards], schema, dtypes, id_column),
            lineage=_jsonable(full_lineage), assets={},
        )
        _install(tmp, path, card)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Pool(path, card)


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
        _write_card(path, card)  # last: until now the directory is not a pool
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


# --------------------------------------------------------------------------- assets


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
    _data, rows = _load_asset(src, kind, pool.id_column)

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
    _write_card(pool.path, card)
    if previous is not None and previous.file != rel:
        _remove(pool.path / previous.file)
    return Pool(pool.path, card)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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
        import numpy as np

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


def _load_asset(path: Path, kind: str, id_column: str) -> tuple[Any, int]:
    """Parse an asset file as ``kind``: (data, row count). Bad files raise PoolError naming file and row."""
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
        arr = _load_npy(path)
        if arr.ndim != 2 or arr.dtype.kind != "f" or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise PoolError(f"centroids must be a non-empty 2-D float matrix (k, dim); this is {arr.dtype} "
                            f"with shape {arr.shape}", file=path)
        import numpy as np

        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise PoolError("centroids contain NaN or infinite values", file=path, row=int(np.argmax(bad)))
        return arr, int(arr.shape[0])
    if kind in ("corpus", "eval"):
        if suffix == ".txt":
            lines = [line for line in _read_text(path).splitlines() if line.strip()]
            frame = pl.DataFrame({"text": lines}, schema={"text": pl.String})
        else:
            frame = _load_table(path, suffix)
            if "text" not in frame.columns or frame.schema["text"] != pl.String:
                raise PoolError(f"a {kind} asset needs a string column `text`",
                                file=path, hint=suggest("text", frame.columns, "its columns are"))
        if frame.is_empty():
            raise PoolError(f"the {kind} asset is empty", file=path)
        return frame, frame.height
    if kind == "labels" and suffix == ".npy":
        arr = _load_npy(path)
        return arr, int(arr.shape[0]) if arr.ndim else 1
    frame = _load_table(path, suffix)
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


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise PoolError(f"not UTF-8 text ({err.reason} at byte {err.start})", file=path, line=line) from None


def _load_npy(path: Path):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise PoolError(f"not a readable .npy file ({err})", file=path,
                        hint="save it with numpy.save (object arrays are not accepted)") from None


def _load_table(path: Path, suffix: str) -> pl.DataFrame:
    """A parquet, JSONL, JSON (list of objects) or CSV file as a frame; errors name the row or line."""
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".csv":
            return pl.read_csv(path)
    except Exception as err:  # noqa: BLE001 - polars raises many kinds; the user needs the file named
        raise PoolError(f"cannot read {suffix[1:]} file: {str(err).splitlines()[0]}", file=path) from None
    if suffix == ".jsonl":
        return frame_from_records(read_jsonl(path), path, "line")
    if suffix == ".json":
        records = read_json(path)
        if not isinstance(records, list):
            raise PoolError("expected a JSON list of objects", file=path)
        return frame_from_records(list(enumerate(records)), path, "row")
    raise PoolError(f"unsupported file type {suffix}", file=path)


def read_json(path: Path) -> Any:
    """A JSON file parsed; invalid JSON gives a PoolError with the line."""
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PoolError(f"invalid JSON: {err.msg} (column {err.colno})", file=path, line=err.lineno,
                        hint="fix the JSON at that line") from None


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, object) for every non-blank line of a JSONL file; the first bad line is a PoolError."""
    out = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise PoolError(f"invalid JSON line: {err.msg} (column {err.colno})", file=path, line=number,
                            hint="each line must be one JSON object") from None
    return out


def frame_from_records(records: Sequence[tuple[int, Any]], path: Path, unit: Literal["line", "row"]) -> pl.DataFrame:
    """A frame from (position, object) pairs; a non-object or a type clash names its line or row."""
    for pos, rec in records:
        if not isinstance(rec, dict):
            raise PoolError(f"expected a JSON object, found {type(rec).__name__}", file=path,
                            **{unit: pos}, hint="each record must be an object of column: value")
    pos, col = _first_type_clash(records)
    if pos is not None:
        raise PoolError(f"field {col!r} has a different JSON type here than in earlier records", file=path,
                        **{unit: pos}, hint="every record must give a field the same JSON type (or null)")
    try:
        return pl.from_dicts([rec for _, rec in records], infer_schema_length=None)
    except Exception as err:  # noqa: BLE001 - nested values polars cannot unify
        raise PoolError(f"the records' fields cannot be made into columns: {str(err).splitlines()[0]}",
                        file=path, hint="every record must give a field the same JSON type") from None


def _first_type_clash(records: Sequence[tuple[int, Any]]) -> tuple[int | None, str | None]:
    seen: dict[str, type] = {}
    for pos, rec in records:
        for key, value in rec.items():
            if value is None:
                continue
            kind = float if isinstance(value, int | float) and not isinstance(value, bool) else type(value)
            if seen.setdefault(key, kind) is not kind:
                return pos, key
    return None, None


def _load_ids(path: Path, suffix: str, id_column: str) -> pl.Series:
    if suffix == ".txt":
        ids = [line.strip() for line in _read_text(path).splitlines()]
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
        frame = _load_table(path, suffix)
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
        ids = _ids_from_npy(_load_npy(path), path)
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
