"""The error of the data layer: a pool, an input file or an asset that is not what cbdsl needs, and its hints.

A module of its own, without Polars, so that the scorer API and ``cbdsl check`` can name it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from cbdsl.dsl.diagnostics import did_you_mean


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


def suggest(word: str, candidates: Iterable[str], known: str) -> str:
    """A hint for an unknown name: the closest candidates, then the list (`known` introduces it)."""
    candidates = sorted(set(candidates))
    hints = did_you_mean(word, candidates)
    close = hints[0] if hints else None
    listing = ", ".join(f"`{c}`" for c in candidates[:30]) + (" ..." if len(candidates) > 30 else "")
    text = f"{known}: {listing}" if candidates else f"there are no {known}"
    return f"{close} ({text})" if close else text
