"""The error of the data layer: a pool, an input file or an asset that is not what cbdsl needs.

A module of its own, without Polars, so that the scorer API and ``cbdsl check`` can name it.
"""

from __future__ import annotations

import os
from typing import Any


class PoolError(Exception):
    """A pool, an input file or an asset is not what cbdsl needs.

    The message says what is wrong; ``file`` and ``row`` say where (rows and
    JSON records are 0-based positions, as Polars and jq count them; JSONL
    lines are 1-based, as editors count them); ``hint`` says how to fix it.
    """

    def __init__(self, message: str, *, file: str | os.PathLike | None = None,
                 row: int | None = None, line: int | None = None, hint: str | None = None):
        self.message = message
        self.file = None if file is None else str(file)
        self.row = row
        self.line = line
        self.hint = hint
        super().__init__(self._text())

    def _text(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def __reduce__(self):  # keep the fields across pickling (worker processes, Ray)
        return (_rebuild_pool_error, (self.message, self.file, self.row, self.line, self.hint))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form for ``--json`` output."""
        return {"error": "pool", "message": self.message, "file": self.file, "row": self.row,
                "line": self.line, "hint": self.hint}


def _rebuild_pool_error(message, file, row, line, hint) -> PoolError:
    return PoolError(message, file=file, row=row, line=line, hint=hint)
