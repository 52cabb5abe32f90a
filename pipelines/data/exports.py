"""Exporters: a selection written in the formats real trainers read.

A selection is a Polars frame with at least the pool's id column, in
selection order (the executor adds the mix group, the select score and the
rank). :func:`export` writes one of:

- ``parquet``: the selection frame as given (``selection.parquet``);
- ``datacomp``: a DataComp subset file (``subset.npy``), exactly as DataComp's
  ``baselines/apply_filter.py`` saves one: a structured array of dtype
  ``np.dtype("u8,u8")`` (the high and low 64 bits of each 128-bit hex uid),
  sorted, written with ``np.save``; DataComp's resharder reads it as is;
- ``llava``: the original LLaVA records, from the pool's ``record`` column, as
  one JSON list in selection order (``llava.json``);
- ``hf``: the selected pool rows plus the selection's own columns as a Hugging
  Face dataset (``Dataset.save_to_disk``, directory ``hf_dataset``);
- ``curation-bench``: Curation-Bench's subset layout (directory ``curation_bench``,
  :mod:`~cbdsl.pipelines.data.curation_bench`): a ``save_to_disk`` dataset of
  ``images`` (the record's image bytes) and ``texts`` (its user/assistant pairs),
  from a pool with LLaVA records.

Every file is written under a temporary name and moved into place, so a
failed export never leaves a partial file under the final name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import polars as pl

from cbdsl.pipelines.data import curation_bench
from cbdsl.pipelines.data.errors import PoolError, suggest
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.uids import uid_pairs

FORMATS: dict[str, str] = {
    "parquet": "selection.parquet",
    "datacomp": "subset.npy",
    "llava": "llava.json",
    "hf": "hf_dataset",
    "curation-bench": curation_bench.DIRECTORY,
}
_HEX32 = r"^[0-9a-f]{32}$"


def export(pool: Pool | str | os.PathLike, selection: pl.DataFrame, out_dir: str | os.PathLike, fmt: str, *,
           check: bool = True) -> Path:
    """Write ``selection`` of ``pool`` in format ``fmt`` under ``out_dir``; return the written path.

    The selection is checked first (an id column, no null or repeated id,
    every id in the pool): ``check=False`` skips that for a selection known
    good, the executor's (its ids come from this pool, whose ids are unique)
    or one an earlier export checked (the membership test reads every id of
    the pool: 1.3-1.9 s at DataComp-small's 12.8M, ``bench_datacomp.py --profile``).
    """
    if not isinstance(pool, Pool):
        pool = Pool.open(pool)
    if fmt not in FORMATS:
        raise PoolError(f"unknown export format {fmt!r}", hint=suggest(fmt, FORMATS, "formats are"))
    if isinstance(selection, pl.LazyFrame):
        selection = selection.collect()
    id_col = pool.id_column
    if check:
        _check_selection(pool, selection)
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / FORMATS[fmt]
    if fmt == "parquet":
        # zstd level 1: a manifest is mostly random ids, which the default level 3 does not shrink, at twice the time
        _atomic_file(target, lambda tmp: selection.write_parquet(tmp, compression="zstd", compression_level=1))
    elif fmt == "datacomp":
        uids = selection.get_column(id_col).cast(pl.String)
        bad = ~uids.str.contains(_HEX32)
        if pool.card.schema[id_col] != "str" or bad.any():
            row = int(bad.arg_true()[0]) if bad.any() else 0
            raise PoolError(
                f"the datacomp format needs ids that are 32 lowercase hex uids; pool {pool.name!r} has "
                f"{uids[row]!r} (selection row {row})",
                row=row, hint="export DataComp subsets from pools imported with `cbdsl pool import datacomp`; "
                "use fmt='parquet' for other pools",
            )
        arr = uid_pairs(uids, sort=True)
        _atomic_file(target, lambda tmp: _save_npy(tmp, arr))
    elif fmt == "llava":
        _require_records(pool, fmt)
        records = _rows_in_order(pool, selection.select(id_col), [id_col, "record"])["record"]
        _atomic_file(target, lambda tmp: _write_json_list(tmp, records))
    elif fmt == "curation-bench":
        _require_records(pool, fmt)
        images = "image" in pool.card.schema
        rows = _rows_in_order(pool, selection.select(id_col), [id_col, "record", *(["image"] if images else [])])
        rows = rows.select(pl.col(id_col).cast(pl.String).alias("id"), "record",
                           pl.col("image") if images else pl.lit(None, pl.String).alias("image"))
        curation_bench.write_dataset(pool, rows, target)
    else:
        _export_hf(pool, selection, target)
    return target


def _require_records(pool: Pool, fmt: str) -> None:
    if "record" not in pool.card.schema:
        raise PoolError(f"pool {pool.name!r} has no `record` column, so it has no LLaVA records to write as {fmt}",
                        hint="export LLaVA records from pools imported with `cbdsl pool import llava` (or "
                        "`curation-bench`); use fmt='parquet' or 'hf' for other pools")


def _check_selection(pool: Pool, selection: pl.DataFrame) -> None:
    id_col = pool.id_column
    if not isinstance(selection, pl.DataFrame):
        raise PoolError(f"a selection is a Polars DataFrame, not {type(selection).__name__}")
    if id_col not in selection.columns:
        raise PoolError(f"the selection has no id column {id_col!r}",
                        hint=suggest(id_col, selection.columns, "its columns are"))
    ids = selection.get_column(id_col)
    if ids.null_count():
        row = int(ids.is_null().arg_true()[0])
        raise PoolError("the selection has a null id", row=row)
    dup = ids.is_duplicated()
    if dup.any():
        row = int(dup.arg_true()[1]) if dup.sum() > 1 else int(dup.arg_true()[0])
        raise PoolError(f"the selection has duplicate ids, e.g. {ids[row]!r}", row=row,
                        hint="a selection lists each pool row once")
    pool_dtype = pool.scan([id_col]).collect_schema()[id_col]
    if ids.dtype != pool_dtype:
        try:
            ids = ids.cast(pool_dtype, strict=True)
        except Exception:  # noqa: BLE001
            raise PoolError(f"selection ids have type {ids.dtype}; the pool's are {pool_dtype}") from None
    missing = (pl.DataFrame({id_col: ids}).with_row_index("__row").lazy()
               .join(pool.scan([id_col]), on=id_col, how="anti").sort("__row").head(1).collect())
    if missing.height:
        row = int(missing["__row"][0])
        raise PoolError(f"selection id {missing[id_col][0]!r} is not in pool {pool.name!r}", row=row,
                        hint="the selection was made from another pool or another version of this one")


def _rows_in_order(pool: Pool, selection: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Pool ``columns`` for the selected ids, in selection order."""
    id_col = pool.id_column
    sel = selection.with_row_index("__order").lazy()
    ids_dtype = pool.card.dtypes[id_col]
    if str(selection.schema[id_col]) != ids_dtype:
        sel = sel.with_columns(pl.col(id_col).cast(pool.scan([id_col]).collect_schema()[id_col]))
    return (sel.join(pool.scan(columns), on=id_col, how="left").sort("__order").drop("__order").collect())


def _atomic_file(target: Path, write) -> None:
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append .npy to a path
        np.save(fh, arr)


def _write_json_list(path: Path, records: pl.Series) -> None:
    """The records (each a JSON object's text) as one JSON list, a record per line."""
    with open(path, "w", encoding="utf-8") as fh:
        if records.is_empty():
            fh.write("[]\n")
            return
        fh.write("[\n")
        fh.write(",\n".join(records.to_list()))
        fh.write("\n]\n")


def _export_hf(pool: Pool, selection: pl.DataFrame, target: Path) -> None:
    try:
        import datasets
    except ImportError:
        raise PoolError("exporting a Hugging Face dataset needs the `datasets` package",
                        hint="pip install datasets") from None
    id_col = pool.id_column
    extra = [c for c in selection.columns if c != id_col and c not in pool.card.schema]
    rows = _rows_in_order(pool, selection.select([id_col, *extra]), list(pool.card.schema))
    rows = rows.select([*pool.card.schema, *extra])
    table = rows.to_arrow(compat_level=pl.CompatLevel.oldest())
    dataset = datasets.Dataset(table)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        dataset.save_to_disk(str(tmp))
        curation_bench.replace_directory(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
