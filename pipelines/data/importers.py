"""Importers: real dataset formats brought in as pools.

Each importer reads its format, checks it, and returns an :class:`Imported`
(a frame ready for :func:`~cbdsl.pipelines.data.writing.write_pool`, the id column,
the lineage: importer, source files with their sha256, parameters; and
columns too large to hold, which ``write_pool`` reads a shard at a time).
:func:`import_pool` chains an importer and ``write_pool``.

Kinds:

- ``datacomp``: DataComp metadata parquet (a file or a directory of shards).
  ``uid`` is normalised to 32 lowercase hex characters; every column is kept;
  ``id`` = uid; ``width``/``height`` alias ``original_width``/``original_height``.
  A shard's ``.npz`` beside its parquet (DataComp's ``l14_img``, ``l14_txt``,
  ``b32_img``, ``b32_txt``) makes each of its arrays an embedding column.
- ``llava``: LLaVA-style instruction JSON (the LLaVA-1.5 665K mix and its
  kin); the ``source`` of each record is inferred as the mix is organised.
- ``curation-bench``: Curation-Bench's subset layout (a ``save_to_disk``
  dataset of ``images`` and ``texts`` pairs) as a LLaVA pool, its images
  copied into the pool (:mod:`~cbdsl.pipelines.data.curation_bench`).
- ``hf``: a Hugging Face dataset saved with ``save_to_disk``.
- ``parquet`` and ``jsonl``: generic files with an id column.

A bad input file is a :class:`~cbdsl.pipelines.data.errors.PoolError` naming the
file and the row (or the line, for JSONL), never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from cbdsl.pipelines.data import curation_bench
from cbdsl.pipelines.data.errors import PoolError, suggest
from cbdsl.pipelines.data.hashing import sha256_file
from cbdsl.pipelines.data.image_folder import Images, missing_error, missing_images
from cbdsl.pipelines.data.llava import LLAVA_SCHEMA, llava_frame, llava_source  # noqa: F401 - their home before
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.readers import frame_from_records, read_json, read_jsonl
from cbdsl.pipelines.data.writing import CONTROL_HINT, StreamedColumns, control_characters, write_pool


class Imported(NamedTuple):
    """What an importer read: the frame, its id column, the lineage, any columns streamed beside it, and the
    image folder its ``image`` columns point into."""

    frame: pl.DataFrame
    id_column: str
    lineage: dict[str, Any]
    streamed: StreamedColumns | None = None  # columns after the frame's, read a shard at a time
    images: Images | None = None  # how write_pool makes its image columns (read in place, or moved in)


def _sources(files: Sequence[Path]) -> list[dict[str, Any]]:
    return [{"file": str(f.absolute()), "sha256": sha256_file(f), "bytes": f.stat().st_size} for f in files]


def _lineage(importer: str, files: Sequence[Path], **parameters: Any) -> dict[str, Any]:
    return {"importer": importer, "sources": _sources(files), "parameters": parameters}


def _files(src: str | os.PathLike, suffixes: tuple[str, ...], what: str) -> list[Path]:
    """``src`` itself, or the files with one of ``suffixes`` directly in the directory ``src``, sorted."""
    path = Path(src).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise PoolError(f"no {'/'.join(suffixes)} files in {path}", file=path,
                            hint=f"give a {what} file or a directory holding them")
        return files
    raise PoolError(f"no such file or directory: {path}", file=path, hint=f"give a {what} file or directory")


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - polars raises several kinds; the user needs the file named
        raise PoolError(f"cannot read as parquet: {str(err).splitlines()[0]}", file=path,
                        hint="is it a parquet file? a partial download?") from None


class _Located(NamedTuple):
    """Global row -> (file, row in file), for frames concatenated from several files."""

    files: list[Path]
    starts: list[int]

    def __call__(self, row: int) -> tuple[Path, int]:
        import bisect

        i = bisect.bisect_right(self.starts, row) - 1
        return self.files[i], row - self.starts[i]


def _concat(frames: list[pl.DataFrame], files: list[Path]) -> tuple[pl.DataFrame, _Located]:
    first = frames[0].columns
    for frame, path in zip(frames[1:], files[1:], strict=True):
        if set(frame.columns) != set(first):
            extra = sorted(set(frame.columns) - set(first))
            lacking = sorted(set(first) - set(frame.columns))
            raise PoolError(
                f"its columns differ from {files[0].name}'s"
                + (f"; extra: {', '.join(extra)}" if extra else "") + (f"; missing: {', '.join(lacking)}" if lacking else ""),
                file=path, hint="every file of one import must have the same columns",
            )
    starts, total = [], 0
    for frame in frames:
        starts.append(total)
        total += frame.height
    try:
        frame = pl.concat([f.select(first) for f in frames], how="vertical_relaxed")
    except Exception as err:  # noqa: BLE001
        raise PoolError(f"the files' column types cannot be combined: {str(err).splitlines()[0]}",
                        file=files[0].parent, hint="every file of one import must have the same column types") from None
    return frame, _Located(list(files), starts)


def _check_ids(frame: pl.DataFrame, id_column: str, locate: Callable[[int], tuple[Path, int]],
               unit: str = "row", duplicate_hint: str | None = None) -> None:
    """Null and duplicate ids, reported with the file and row (or line) where they are."""
    ids = frame.get_column(id_column)
    if ids.null_count():
        path, pos = locate(int(ids.is_null().arg_true()[0]))
        raise PoolError(f"null id in column {id_column!r}", file=path, **{unit: pos},
                        hint="every row needs an id; drop those rows or pick another --id-column")
    if ids.dtype == pl.String:
        control = control_characters(ids)
        if control.any():
            row = int(control.arg_true()[0])
            path, pos = locate(row)
            raise PoolError(f"id {ids[row]!r} in column {id_column!r} holds a control character", file=path,
                            **{unit: pos}, hint=CONTROL_HINT)
    dup = ids.is_duplicated()
    if dup.any():
        value = ids[int(dup.arg_true()[0])]
        first, second = (int(r) for r in (ids == value).arg_true()[:2])
        path1, pos1 = locate(first)
        path2, pos2 = locate(second)
        raise PoolError(
            f"duplicate id {value!r} in column {id_column!r} (first at {path1.name} {unit} {pos1}; "
            f"{int(dup.sum())} rows share an id)",
            file=path2, **{unit: pos2},
            hint=duplicate_hint or "ids must be unique; deduplicate the source or pick another --id-column",
        )


def _require_column(frame: pl.DataFrame, column: str, path: Path, flag: str = "--id-column") -> None:
    if column not in frame.columns:
        raise PoolError(f"no column {column!r}", file=path,
                        hint=suggest(column, frame.columns, "its columns are") + f"; pass {flag} NAME")


# --------------------------------------------------------------------------- DataComp

DATACOMP_COLUMNS: dict[str, str] = {
    "uid": "uid", "url": "str", "text": "str", "original_width": "int", "original_height": "int",
    "clip_b32_similarity_score": "float", "clip_l14_similarity_score": "float", "face_bboxes": "any",
    "sha256": "str",
}
_HEX32 = r"^[0-9a-f]{32}$"


def normalise_uids(uids: pl.Series, path: Path | None = None, row_offset: int = 0) -> pl.Series:
    """DataComp uids as 32 lowercase hex chars.

    Accepts hex strings in any case, with or without ``0x``, and 16-byte
    binary. Anything else is a PoolError with the first bad row.
    """
    if uids.dtype == pl.Binary:
        bad = uids.is_null() | (uids.bin.size() != 16)
        out = uids.bin.encode("hex")
        expect = "16 bytes"
    elif uids.dtype in (pl.String, pl.Categorical) or isinstance(uids.dtype, pl.Enum | pl.Categorical):
        text = uids.cast(pl.String).str.strip_chars().str.to_lowercase()
        out = pl.select(pl.when(text.str.starts_with("0x")).then(text.str.slice(2)).otherwise(text)).to_series()
        bad = out.is_null() | ~out.str.contains(_HEX32)
        expect = "32 hex characters"
    else:
        raise PoolError(f"column `uid` has type {uids.dtype}; DataComp uids are 32-hex strings or 16-byte binary",
                        file=path, hint="is this DataComp metadata?")
    if bad.any():
        row = int(bad.arg_true()[0])
        value = uids[row]
        raise PoolError(f"uid {value!r} is not a DataComp uid ({expect})", file=path, row=row + row_offset,
                        hint="DataComp uids are 128-bit hashes written as 32 hex characters")
    return out.alias(uids.name)


def _check_datacomp_types(frame: pl.DataFrame, path: Path) -> None:
    for col, kind in DATACOMP_COLUMNS.items():
        if col not in frame.columns or kind in ("uid", "any"):
            continue
        dtype = frame.schema[col]
        if dtype == pl.Null:
            continue
        ok = {"str": dtype == pl.String or isinstance(dtype, pl.Categorical),
              "int": dtype.is_integer() or dtype.is_float(),
              "float": dtype.is_numeric()}[kind]
        if not ok:
            want = {"str": "a string", "int": "an integer", "float": "a number"}[kind]
            raise PoolError(f"column {col!r} has type {dtype}; DataComp's {col} is {want}", file=path,
                            hint="is this DataComp metadata? use `cbdsl pool import parquet` for other parquet")


def read_datacomp(src: str | os.PathLike, *, uid_column: str = "uid") -> Imported:
    """DataComp metadata parquet (a file, or a directory of ``*.parquet`` shards) as a pool frame.

    When every shard has its ``.npz`` beside it (``00000000.parquet`` and
    ``00000000.npz``, as DataComp's download writes them), each array of the
    npz becomes an embedding column named as its key, row i of the array
    being row i of the parquet. Those columns are ``Imported.streamed``:
    ``write_pool`` reads them a shard at a time (12.8M x 768 is 39 GB as
    float32) and stores them as ``Array(Float32, dim)`` (DataComp's are
    float16; every embedding reader computes in float32). The metadata is
    held whole, as by every importer: the card's statistics and the
    duplicate-uid check need whole columns. The npz files are sources in the
    lineage, each after its parquet.
    """
    files = _files(src, (".parquet",), "DataComp metadata parquet")
    frames = []
    for path in files:
        frame = _read_parquet(path)
        _require_column(frame, uid_column, path, "--uid-column")
        _check_datacomp_types(frame, path)
        frames.append(frame.with_columns(normalise_uids(frame.get_column(uid_column), path)))
    npz = _datacomp_npz(files, [f.height for f in frames], directory=Path(src).expanduser().is_dir())
    frame, locate = _concat(frames, files)
    _check_ids(frame, uid_column, locate)
    extras = [pl.col(uid_column).alias("id")] if uid_column != "id" else []
    for alias, original in (("width", "original_width"), ("height", "original_height")):
        if original in frame.columns and alias not in frame.columns:
            extras.append(pl.col(original).alias(alias))
    frame = frame.with_columns(extras)
    frame = frame.select(["id", *[c for c in frame.columns if c != "id"]])
    if npz is None:
        return Imported(frame, "id", _lineage("datacomp", files, uid_column=uid_column))
    clash = next((key for key in npz[0].arrays if key in frame.columns), None)
    if clash is not None:
        raise PoolError(f"its array {clash!r} has the name of a column of the parquet", file=npz[0].path,
                        hint="rename the array (numpy.savez(..., NAME=array)) or the parquet column")
    sources = [f for parquet, shard in zip(files, npz, strict=True) for f in (parquet, shard.path)]
    streamed = StreamedColumns({key: dim for key, (_rows, dim) in npz[0].arrays.items()},
                               _NpzRows(npz, locate.starts))
    return Imported(frame, "id", _lineage("datacomp", sources, uid_column=uid_column), streamed)


# DataComp's .npz: per shard, its CLIP embeddings aligned by row with the parquet

_NPZ_HINT = ("a DataComp shard's .npz is a numpy.savez archive of 2-D float arrays (l14_img, l14_txt, b32_img, "
             "b32_txt), row i of each being row i of the parquet beside it; download the shard again")


class _Npz(NamedTuple):
    """A shard's .npz: its path and, per array, (rows, dim) as its header says."""

    path: Path
    arrays: dict[str, tuple[int, int]]

    @property
    def rows(self) -> int:
        return next(iter(self.arrays.values()))[0]  # every array's, once checked against the parquet


def _npz_arrays(path: Path) -> dict[str, tuple[int, int]]:
    """Each array of an ``np.savez`` archive as key -> (rows, dim), from the headers alone.

    Reading only the headers checks every shard before a byte of the pool is
    written, without reading gigabytes of embeddings twice."""
    import zipfile

    import numpy as np

    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version not in readers:
                        raise ValueError(f"{member} is .npy format version {version[0]}.{version[1]}")
                    headers[member] = readers[version](fh)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise PoolError(f"not a valid .npz archive ({err})", file=path, hint=_NPZ_HINT) from None
    if not headers:
        raise PoolError("the .npz holds no arrays", file=path, hint=_NPZ_HINT)
    arrays = {}
    for member, (shape, _fortran, dtype) in headers.items():
        key = member.removesuffix(".npy")
        if len(shape) != 2 or dtype.kind != "f" or shape[1] < 1:
            raise PoolError(f"array {key!r} is {dtype} with shape {shape}; an embedding is a 2-D float array "
                            "(rows, dim)", file=path, hint=_NPZ_HINT)
        arrays[key] = (int(shape[0]), int(shape[1]))
    return arrays


def _datacomp_npz(files: list[Path], rows: list[int], *, directory: bool) -> list[_Npz] | None:
    """The ``.npz`` beside each parquet shard, checked against it and the others; None when none has one.

    All or none: a shard without its npz, an array one shard lacks, or a row
    count that is not its parquet's would misalign rows, so each is an error
    naming the file."""
    paths = [f.with_suffix(".npz") for f in files]
    if directory:
        stray = sorted(set(files[0].parent.glob("*.npz")) - set(paths))
        if stray:
            raise PoolError(f"{stray[0].name} has no parquet beside it ({stray[0].with_suffix('.parquet').name})",
                            file=stray[0], hint="download the shard's parquet again, or remove the .npz")
    present = [p.is_file() for p in paths]
    if not any(present):
        return None
    if not all(present):
        at = present.index(False)
        raise PoolError(f"no {paths[at].name} beside {files[at].name}, while {sum(present)} of the {len(files)} "
                        "shards have their .npz", file=files[at],
                        hint="download the shard's .npz again, or move every .npz away to import the metadata alone")
    shards = [_Npz(p, _npz_arrays(p)) for p in paths]
    first = shards[0]
    for shard, parquet, n in zip(shards, files, rows, strict=True):
        lacking = [key for key in first.arrays if key not in shard.arrays]
        extra = [key for key in shard.arrays if key not in first.arrays]
        if lacking or extra:
            what = (f"it has no array {lacking[0]!r}, which {first.path.name} has" if lacking
                    else f"it has an array {extra[0]!r}, which {first.path.name} has not")
            raise PoolError(what, file=shard.path,
                            hint="every shard's .npz must hold the same arrays; download the shard again")
        for key, (count, dim) in shard.arrays.items():
            if count != n:
                raise PoolError(f"array {key!r} has {count} rows but {parquet.name} has {n}", file=shard.path,
                                hint="row i of a shard's .npz is row i of its parquet: the two must come from "
                                     "one download; download the shard again")
            if dim != first.arrays[key][1]:
                raise PoolError(f"array {key!r} has {dim} values a row, but {first.arrays[key][1]} in "
                                f"{first.path.name}", file=shard.path,
                                hint="every shard's embeddings must come from the same model")
    return shards


class _NpzRows:
    """Rows ``[start, stop)`` of the embedding columns, from the shards' .npz files in turn, as float32.

    A source shard that a read ends inside is kept, so the next read, which
    starts there, reads its npz once; one read to its end is let go before
    the pool shard is written."""

    def __init__(self, shards: list[_Npz], starts: list[int]):
        self.shards = shards
        self.starts = starts
        self.keys = list(shards[0].arrays)
        self._cached: tuple[int, dict[str, Any]] | None = None

    def __call__(self, start: int, stop: int) -> pl.DataFrame:
        import bisect

        import numpy as np

        pieces: dict[str, list[Any]] = {key: [] for key in self.keys}
        i = bisect.bisect_right(self.starts, start) - 1
        while start < stop:
            arrays = self._load(i)
            lo, hi = start - self.starts[i], min(stop - self.starts[i], self.shards[i].rows)
            for key in self.keys:
                pieces[key].append(arrays[key][lo:hi])
            if hi == self.shards[i].rows:
                self._cached = None  # read to its end: no later read needs it
            start += hi - lo
            i += 1
        columns = []
        for key in self.keys:
            dim = self.shards[0].arrays[key][1]
            values = np.concatenate(pieces.pop(key) or [np.zeros((0, dim))], dtype=np.float32)
            columns.append(pl.Series(key, values, dtype=pl.Array(pl.Float32, dim)))
            del values
        return pl.DataFrame(columns)

    def _load(self, i: int) -> dict[str, Any]:
        """Shard i's arrays (as stored, float16 in DataComp), read whole as DataComp's own code reads them."""
        if self._cached is None or self._cached[0] != i:
            import zipfile

            import numpy as np

            self._cached = None  # free the last shard's arrays before reading the next
            path = self.shards[i].path
            try:
                with np.load(path, allow_pickle=False) as npz:
                    self._cached = (i, {key: npz[key] for key in self.keys})
            except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
                raise PoolError(f"cannot read the .npz ({err})", file=path, hint=_NPZ_HINT) from None
        return self._cached[1]


# --------------------------------------------------------------------------- LLaVA (records: llava.py)

def read_llava(src: str | os.PathLike, *, duplicate_ids: str = "error",
               image_folder: str | os.PathLike | None = None) -> Imported:
    """LLaVA-style instruction JSON (a list of records; or JSONL, a record per line) as a pool frame.

    Ids are kept as strings (the real 665K file mixes ints and strings). The
    text columns drop the ``<image>`` placeholder; ``record`` keeps each
    original record (as compact JSON) for the LLaVA exporter.
    ``duplicate_ids="suffix"`` renames the 2nd, 3rd, ... record of an id to
    ``ID#2``, ``ID#3`` instead of refusing the file.

    ``image_folder`` (LLaVA's ``--image_folder``, e.g. ``playground/data``)
    makes ``image`` a column of schema type ``image``: the card records the
    folder's absolute path and the images are read there, never copied.
    Every referenced image is checked to be a file under it before anything
    is written. Without it ``image`` is a plain string column, and nothing
    (no scorer, no backend) can read the pixels.
    """
    if duplicate_ids not in ("error", "suffix"):
        raise PoolError(f"duplicate_ids must be 'error' or 'suffix', not {duplicate_ids!r}")
    path = Path(src).expanduser()
    if not path.is_file():
        raise PoolError(f"no such file: {path}", file=path, hint="give the LLaVA instruction .json file")
    if path.suffix.lower() == ".jsonl":
        unit, records = "line", read_jsonl(path)
    else:
        data = read_json(path)
        if not isinstance(data, list):
            raise PoolError(f"expected a JSON list of records, found a {type(data).__name__}", file=path,
                            hint="LLaVA instruction files are a JSON list of {id, image, conversations}")
        unit, records = "row", list(enumerate(data))
    frame = llava_frame(records, path, unit)
    if duplicate_ids == "suffix":
        frame = frame.with_columns(_suffix_duplicates(frame.get_column("id")))
    else:
        positions = [pos for pos, _ in records]
        _check_ids(frame, "id", lambda r: (path, positions[r]), unit,
                   duplicate_hint="ids must be unique; to keep every record, import with duplicate_ids='suffix' "
                   "(`--duplicate-ids suffix`), which renames repeats to ID#2, ID#3, ...")
    if image_folder is None:
        return Imported(frame, "id", _lineage("llava", [path], duplicate_ids=duplicate_ids))
    folder = _image_folder(frame, records, path, unit, image_folder)
    return Imported(frame, "id", _lineage("llava", [path], duplicate_ids=duplicate_ids, image_folder=str(folder)),
                    images=Images(folder, columns=("image",), move=False))


def _image_folder(frame: pl.DataFrame, records: Sequence[tuple[Any, Any]], path: Path, unit: str,
                  image_folder: str | os.PathLike) -> Path:
    """The absolute image folder, once every image the records name is a file in it (else a PoolError naming
    how many are not, the first few, and the first record that names one)."""
    folder = Path(image_folder).expanduser().absolute()
    if not folder.is_dir():
        raise PoolError(f"the image folder {folder} is not a directory", file=folder,
                        hint="give --image-folder the folder the records' image paths are relative to "
                             "(LLaVA's --image_folder, playground/data in its repository)")
    paths = frame.get_column("image")
    unique = paths.drop_nulls().unique(maintain_order=True).to_list()
    missing = missing_images(folder, unique)
    if missing:
        row = int((paths == missing[0]).arg_true()[0])
        where = f"{path}, first at {unit} {records[row][0]} (id {frame['id'][row]!r})"
        raise missing_error(folder, missing, len(unique), where)
    return folder


def _suffix_duplicates(ids: pl.Series) -> pl.Series:
    if not ids.is_duplicated().any():
        return ids
    seen: set[str] = set(ids.unique().to_list())
    counts: dict[str, int] = {}
    out = []
    for value in ids.to_list():
        k = counts.get(value, 0) + 1
        counts[value] = k
        if k == 1:
            out.append(value)
            continue
        new = f"{value}#{k}"
        while new in seen:
            k += 1
            new = f"{value}#{k}"
        seen.add(new)
        out.append(new)
    return pl.Series(ids.name, out, dtype=pl.String)


# --------------------------------------------------------------------------- Curation-Bench


def read_curation_bench(src: str | os.PathLike, *, scratch: Path) -> Imported:
    """Curation-Bench's subset layout (:mod:`~cbdsl.pipelines.data.curation_bench`) as a LLaVA pool frame
    plus ``image_sha256``; its images are written into ``scratch``, which the pool takes in (moved)."""
    read = curation_bench.read_dataset(src, scratch)
    path = Path(src).expanduser()
    frame = llava_frame(read.records, path).with_columns(pl.Series("image_sha256", read.sha256, dtype=pl.String))
    positions = [pos for pos, _ in read.records]
    _check_ids(frame, "id", lambda r: (path, positions[r]))
    lineage = _lineage("curation-bench", read.files, splits=read.splits, root=str(path.absolute()))
    return Imported(frame, "id", lineage, images=Images(scratch, columns=("image",), move=True) if read.any_image
                    else None)


# --------------------------------------------------------------------------- Hugging Face


def _image_structs(frame: pl.DataFrame) -> pl.DataFrame:
    """HF Image columns (struct{bytes, path}) -> binary image bytes, plus ``COL_path`` when paths are set."""
    out = []
    for col, dtype in frame.schema.items():
        if isinstance(dtype, pl.Struct) and {f.name for f in dtype.fields} == {"bytes", "path"}:
            out.append(pl.col(col).struct.field("bytes").alias(col))
            if frame.get_column(col).struct.field("path").drop_nulls().len():
                out.append(pl.col(col).struct.field("path").alias(f"{col}_path"))
    return frame.with_columns(out) if out else frame


def read_hf(src: str | os.PathLike, *, id_column: str | None = None, split: str | None = None) -> Imported:
    """A Hugging Face dataset saved with ``save_to_disk`` as a pool frame.

    The id column is ``id_column``, else an existing ``id`` column, else a new
    ``id`` made from the row index (as a string). Image features become
    binary image bytes.
    """
    try:
        import datasets
    except ImportError:
        raise PoolError("importing a Hugging Face dataset needs the `datasets` package",
                        hint="pip install datasets") from None
    path = Path(src).expanduser()
    if not path.is_dir():
        raise PoolError(f"no dataset directory at {path}", file=path,
                        hint="give the directory written by Dataset.save_to_disk")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - datasets raises FileNotFoundError, ValueError, ...
        raise PoolError(f"not a dataset saved with save_to_disk: {str(err).splitlines()[0]}", file=path,
                        hint="save it with Dataset.save_to_disk (or import its parquet with the parquet importer)") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in ds:
            raise PoolError(f"the dataset has splits {', '.join(splits)}; say which to import" if split is None
                            else f"the dataset has no split {split!r}", file=path,
                            hint=suggest(split or "", splits, "its splits are") + "; pass --split NAME")
        ds = ds[split]
    frame = _image_structs(ds.to_polars())
    if id_column is not None:
        _require_column(frame, id_column, path)
    elif "id" in frame.columns:
        id_column = "id"
    else:
        frame = frame.select(pl.int_range(pl.len()).cast(pl.String).alias("id"), pl.all())
        id_column = "id"
    _check_ids(frame, id_column, lambda r: (path, r))
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return Imported(frame, id_column, _lineage("hf", files, id_column=id_column, split=split, root=str(path.absolute())))


# --------------------------------------------------------------------------- generic


def read_parquet_table(src: str | os.PathLike, *, id_column: str = "id") -> Imported:
    """Generic parquet (a file or a directory of ``*.parquet``) with an id column."""
    files = _files(src, (".parquet",), "parquet")
    frames = []
    for path in files:
        frame = _read_parquet(path)
        _require_column(frame, id_column, path)
        frames.append(frame)
    frame, locate = _concat(frames, files)
    _check_ids(frame, id_column, locate)
    return Imported(frame, id_column, _lineage("parquet", files, id_column=id_column))


def read_jsonl_table(src: str | os.PathLike, *, id_column: str = "id") -> Imported:
    """Generic JSONL (a file or a directory of ``*.jsonl``), an object per line, with an id column."""
    files = _files(src, (".jsonl", ".ndjson"), "JSONL")
    frames, lines = [], []
    for path in files:
        records = read_jsonl(path)
        frame = frame_from_records(records, path, "line")
        _require_column(frame, id_column, path)
        frames.append(frame)
        lines.append([number for number, _ in records])
    frame, located = _concat(frames, files)

    def locate(row: int) -> tuple[Path, int]:
        path, pos = located(row)
        return path, lines[files.index(path)][pos]

    _check_ids(frame, id_column, locate, "line")
    return Imported(frame, id_column, _lineage("jsonl", files, id_column=id_column))


# --------------------------------------------------------------------------- dispatch

IMPORTERS: dict[str, Callable[..., Imported]] = {
    "datacomp": read_datacomp,
    "llava": read_llava,
    "curation-bench": read_curation_bench,
    "hf": read_hf,
    "parquet": read_parquet_table,
    "jsonl": read_jsonl_table,
}


def detect_kind(src: str | os.PathLike) -> str:
    """The importer a source most likely needs (for ``kind="auto"``)."""
    path = Path(src).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "curation-bench" if _has_texts(path) else "hf"
        if any(path.glob("*.jsonl")):
            return "jsonl"
        parquet = sorted(path.glob("*.parquet"))
        if parquet:
            return _parquet_kind(parquet[0])
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return "llava"
        if suffix in (".jsonl", ".ndjson"):
            return "jsonl"
        if suffix == ".parquet":
            return _parquet_kind(path)
    raise PoolError(f"cannot tell what kind of dataset {path} is", file=path,
                    hint="name the importer: " + ", ".join(IMPORTERS))


def _has_texts(path: Path) -> bool:
    """Whether a save_to_disk dataset (or its first split) has a `texts` column: Curation-Bench's layout."""
    infos = [path / "dataset_info.json"] + sorted(path.glob("*/dataset_info.json"))[:1]
    for info in infos:
        try:
            return "texts" in json.loads(info.read_text(encoding="utf-8")).get("features", {})
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _parquet_kind(path: Path) -> str:
    try:
        columns = set(pl.read_parquet_schema(path))
    except Exception:  # noqa: BLE001
        return "parquet"
    return "datacomp" if {"uid", "url", "text"} <= columns else "parquet"


def import_pool(kind: str, src: str | os.PathLike, dest: str | os.PathLike, name: str | None = None, *,
                overwrite: bool = False, shard_rows: int = 1_000_000, **opts: Any) -> Pool:
    """Import ``src`` with the ``kind`` importer (or ``"auto"``) and write it as a pool at ``dest``."""
    if kind == "auto":
        kind = detect_kind(src)
    importer = IMPORTERS.get(kind)
    if importer is None:
        raise PoolError(f"unknown importer {kind!r}", hint=suggest(kind, [*IMPORTERS, "auto"], "importers are"))
    import inspect

    parameters = inspect.signature(importer).parameters
    accepted = [p for p in parameters if p not in ("src", "scratch")]
    for key in opts:
        if key not in accepted:
            raise PoolError(f"the {kind} importer has no option {key!r}",
                            hint=suggest(key, accepted, "its options are") if accepted else "it takes no options")
    dest = Path(dest).expanduser().absolute()
    opts = {k: v for k, v in opts.items() if v is not None}
    scratch = None
    if "scratch" in parameters:  # an importer that writes files for the pool (images) writes them beside it
        scratch = opts["scratch"] = dest.parent / f".{dest.name}.importing-{uuid.uuid4().hex[:12]}"
    try:
        imported = importer(src, **opts)
        return write_pool(imported.frame, dest, name=name or dest.name, id_column=imported.id_column,
                          lineage=imported.lineage, shard_rows=shard_rows, overwrite=overwrite,
                          streamed=imported.streamed, images=imported.images)
    finally:
        if scratch is not None and scratch.exists():  # moved into the pool, or left by a failure
            shutil.rmtree(scratch, ignore_errors=True)
