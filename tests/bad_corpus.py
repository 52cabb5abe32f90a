"""The headers of the bad-policy corpus (tests/bad/): what pool a bad policy is checked against.

A bad policy that needs a pool schema declares it in a comment line
(``# schema: id=str text=str``), one that needs the pool's assets declares
their kinds (``# assets: demo-defects=truth icons-133k=ids``).
"""

from __future__ import annotations


def _header(text: str, key: str) -> dict[str, str] | None:
    for line in text.splitlines():
        if line.startswith(f"# {key}:"):
            return dict(item.split("=", 1) for item in line[len(key) + 3:].split())
    return None


def schema_from_header(text: str) -> dict[str, str] | None:
    """Column -> type of ``# schema: ...``, None without the line."""
    return _header(text, "schema")


def assets_from_header(text: str) -> dict[str, str] | None:
    """Asset name -> kind of ``# assets: ...``, None without the line."""
    return _header(text, "assets")
