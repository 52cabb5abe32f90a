"""Input files read into values, frames and arrays, with errors that say where: the file, and the line or row.

Text must be UTF-8; JSON, JSONL, parquet, CSV and ``.npy`` files are parsed
here for the importers and for assets. A bad file is a
:class:`~cbdsl.pipelines.data.errors.PoolError` naming the file and, where it
can, the line (JSONL, 1-based) or row (JSON lists, 0-based).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import polars as pl

from cbdsl.pipelines.data.errors import PoolError


def read_text(path: Path) -> str:
    """A file's text, which must be UTF-8; the error names the line of the first bad byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise PoolError(f"not UTF-8 text ({err.reason} at byte {err.start})", file=path, line=line) from None


def read_json(path: Path) -> Any:
    """A JSON file parsed; invalid JSON gives a PoolError with the line."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PoolError(f"invalid JSON: {err.msg} (column {err.colno})", file=path, line=err.lineno,
                        hint="fix the JSON at that line") from None


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, object) for every non-blank line of a JSONL file; the first bad line is a PoolError."""
    out = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
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


def read_table(path: Path, suffix: str) -> pl.DataFrame:
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


def read_npy(path: Path):
    """An array saved by ``numpy.save``, never a pickle (an object array could run code when loaded)."""
    import numpy as np  # NumPy only when a .npy file is read: the JSON and table readers do without it

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise PoolError(f"not a readable .npy file ({err})", file=path,
                        hint="save it with numpy.save (object arrays are not accepted)") from None
