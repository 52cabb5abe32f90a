"""The text view of a policy diff: both sides of each changed clause, as a code review shows them.

Each changed clause shows its old lines (``-``, with the source name and
line) and its new lines (``+``) as the user wrote them, with the edited
parts marked, then one line per edit with its class. Rich styles the marks
on a terminal; piped output is plain text with the same layout.
"""

from __future__ import annotations

from rich.text import Text

from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Source
from cbdsl.dsl.diff import ClauseChange, Edit, PolicyDiff

_STYLE = {"-": "red", "+": "green"}
_MARK = {"-": "bold white on red", "+": "bold white on dark_green"}
_CLASS_STYLE = {"metadata": "dim", "literal": "cyan", "structural": "yellow", "new-family": "bold magenta"}


def render_diff(diff: PolicyDiff, old: Source, new: Source) -> list[Text]:
    """The diff as lines of rich Text (print them with a rich Console, or join their ``.plain``)."""
    head = Text(f"{old.name} -> {new.name}: ")
    head.append(diff.change, _CLASS_STYLE.get(diff.change, "bold"))
    if diff.new_families:
        head.append(f" (new famil{'y' if len(diff.new_families) == 1 else 'ies'}: "
                    f"{', '.join(sorted(diff.new_families))})")
    n = len(diff.edits)
    head.append(f", {n} edit{'s' * (n != 1)}" if n else ": the policies select the same way")
    lines = [head]
    for change in diff.changes:
        lines.append(Text(""))
        lines += _clause(change, old, new)
    return lines


def _clause(change: ClauseChange, old: Source, new: Source) -> list[Text]:
    sign = "~" if change.old and change.new else "+" if change.new else "-"
    title = Text(f"{sign} {change.label}  ", "bold")
    title.append(change.change, _CLASS_STYLE.get(change.change, ""))
    out = [title]
    width = max(len(_gutter(side.span, src)) for side, src in ((change.old, old), (change.new, new)) if side)
    if change.old:
        out += _side("-", change.old.span, old, [e.old.span for e in change.edits if _marked(e, e.old)], width)
    if change.new:
        out += _side("+", change.new.span, new, [e.new.span for e in change.edits if _marked(e, e.new)], width)
    if change.old and change.new:
        out += [_edit_line(e) for e in change.edits]
    return out


def _marked(edit: Edit, side) -> bool:
    """Edited parts are marked; a whole clause inserted or removed, and a moved part, are not."""
    return side is not None and edit.op != "move" and edit.node not in ast.CLAUSE_ORDER


def _gutter(span, source: Source) -> str:
    return f"{source.name}:{source.line_col(span.start)[0]}"


def _side(sign: str, span, source: Source, marks: list, width: int) -> list[Text]:
    """The source lines of a clause as written, with the edited spans marked."""
    first, _ = source.line_col(span.start)
    last, _ = source.line_col(max(span.start, span.end - 1))
    gutter = _gutter(span, source)
    out = []
    for number in range(first, last + 1):
        text = Text(f"  {gutter if number == first else '':<{width}} {sign} ", _STYLE[sign])
        body = Text(source.line_text(number), _STYLE[sign])
        for mark in marks:
            (l0, c0), (l1, c1) = source.line_col(mark.start), source.line_col(mark.end)
            if l0 <= number <= l1:
                start = c0 - 1 if l0 == number else 0
                end = c1 - 1 if l1 == number else len(body.plain)
                body.stylize(_MARK[sign], start, max(end, start + 1))
        out.append(text + body)
    return out


def _edit_line(edit: Edit) -> Text:
    what = {"update": f"{edit.old and edit.old.text} -> {edit.new and edit.new.text}",
            "move": f"{edit.new and edit.new.text}",
            "insert": f"{edit.new and edit.new.text}",
            "remove": f"{edit.old and edit.old.text}"}[edit.op]
    line = Text(f"      {edit.op:<7}{edit.node:<10}{_short(what)}  ")
    line.append(edit.change, _CLASS_STYLE.get(edit.change, ""))
    if edit.families:
        line.append(f" ({', '.join(edit.families)})")
    return line


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."
