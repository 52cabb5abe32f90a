"""Diagnostics: what cbdsl tells a user about their policy.

A diagnostic is data (code, severity, message, span, hints); line, column and
the caret picture are made only when it is shown (:func:`render`), from the
:class:`Source` the span points into. Codes are stable and documented in
:mod:`cbdsl.dsl.codes` (``cbdsl check --explain CODE``).
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from cbdsl.dsl.ast import Span

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    severity: Severity = "error"
    hints: tuple[str, ...] = ()
    label: str = ""  # a short text under the marked span

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class PolicyError(Exception):
    """Raised at a stage boundary when a policy has errors; carries them all."""

    def __init__(self, diagnostics: Iterable[Diagnostic], source: Source | None = None):
        self.diagnostics = tuple(diagnostics)
        self.source = source
        super().__init__("; ".join(f"{d.code}: {d.message}" for d in self.diagnostics))


#: What ends a line: exactly these, as the parser reads them (not the other separators `str.splitlines` knows).
_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass
class Source:
    """A policy's text under a name; maps byte offsets to lines and columns.

    ``\r\n``, a lone ``\r`` and ``\n`` each end a line, so a file gets the
    same positions whichever it uses, and whoever read it (the CLI reads
    bytes, without newline translation).
    """

    text: str
    name: str = "<policy>"
    _data: bytes = field(init=False, repr=False)
    _line_starts: list[int] = field(init=False, repr=False)
    _last_line: tuple[int, str] = field(init=False, repr=False, default=(0, ""))

    def __post_init__(self) -> None:
        self._data = self.text.encode("utf-8", "surrogatepass")  # a lone surrogate is an E001, not a crash
        self._ascii = self.text.isascii()
        self._line_starts = [0, *(m.end() for m in _LINE_END.finditer(self._data))]

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column (in characters) of a byte offset."""
        offset = max(0, min(offset, len(self._data)))
        line = bisect.bisect_right(self._line_starts, offset) - 1
        start = self._line_starts[line]
        col = offset - start if self._ascii else len(self._data[start:offset].decode("utf-8", errors="replace"))
        return line + 1, col + 1

    def line_text(self, line: int) -> str:
        """Line ``line`` (1-based) without its line end (the last one asked for is kept: diagnostics come in order)."""
        if self._last_line[0] == line:
            return self._last_line[1]
        start = self._line_starts[line - 1]
        end = self._line_starts[line] if line < len(self._line_starts) else len(self._data)
        text = self._data[start:end]
        if line < len(self._line_starts):
            text = text[:-2] if text.endswith(b"\r\n") else text[:-1]
        self._last_line = (line, text.decode("utf-8", errors="replace"))
        return self._last_line[1]

    @property
    def line_count(self) -> int:
        return len(self._line_starts)


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> tuple[str, ...]:
    """Hints naming the closest candidates (difflib), or nothing."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=n, cutoff=0.6)
    if not close:
        return ()
    return ("did you mean " + " or ".join(f"`{c}`" for c in close) + "?",)


def position(diag: Diagnostic, source: Source) -> dict[str, int | None]:
    if diag.span is None:
        return {"line": None, "column": None, "end_line": None, "end_column": None}
    line, col = source.line_col(diag.span.start)
    end_line, end_col = source.line_col(diag.span.end)
    return {"line": line, "column": col, "end_line": end_line, "end_column": end_col}


def to_json(diag: Diagnostic, source: Source) -> dict:
    return {"code": diag.code, "severity": diag.severity, "message": diag.message,
            **position(diag, source), "hints": list(diag.hints)}


def render(diag: Diagnostic, source: Source) -> str:
    """The diagnostic as text: headline, location, the source line with the span marked, hints."""
    out = [f"{diag.severity}[{diag.code}]: {diag.message}"]
    pad = ""
    if diag.span is not None:
        line, col = source.line_col(diag.span.start)
        end_line, end_col = source.line_col(diag.span.end)
        gutter = len(str(end_line))
        pad = " " * gutter
        out.append(f"{pad}--> {source.name}:{line}:{col}")
        out.append(f"{pad} |")
        text = source.line_text(line)
        width = (end_col - col) if end_line == line else max(1, len(text) - col + 1)
        text, col, width = _clipped(text, col, max(1, width))
        out.append(f"{line:>{gutter}} | {text}")
        marker = " " * (col - 1) + "^" * width
        out.append(f"{pad} | {marker}" + (f" {diag.label}" if diag.label else ""))
        if end_line > line:
            out.append(f"{pad} | ... (continues to line {end_line})")
    for hint in diag.hints:
        out.append(f"{pad} = hint: {hint}")
    return "\n".join(out)


#: Longest source line shown whole under a diagnostic; a longer one (a generated policy on one line) is cut
#: to this many characters around the span, so each diagnostic prints a bounded amount, however many there are.
MAX_SHOWN = 2000


def _clipped(text: str, col: int, width: int) -> tuple[str, int, int]:
    """``text`` cut to :data:`MAX_SHOWN` characters from a little before column ``col``, `...` marking each cut,
    and the column and width of the span in what is shown."""
    if len(text) <= MAX_SHOWN:
        return text, col, width
    at = col - 1  # where the span starts in `text`
    start = max(0, at - 40)
    end = min(len(text), start + MAX_SHOWN)
    head = "..." if start else ""
    shown = head + text[start:end] + ("..." if end < len(text) else "")
    return shown, len(head) + at - start + 1, max(1, min(at + width, end) - at)


def render_all(diags: Iterable[Diagnostic], source: Source) -> str:
    return "\n\n".join(render(d, source) for d in diags)


def sort_key(diag: Diagnostic) -> tuple:
    return (diag.span.start if diag.span else -1, diag.code)
