"""``cbdsl methods``: the method catalogue (citations, families, canonical forms), which ``cite`` names.

Its own module: it loads the catalogue alone, not the language or the
scorers, so it starts in a tenth of the time the language takes to load.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict

import click

from cbdsl.commands.common import echo_json
from cbdsl.scaffolds.catalogue import catalogue, get_method


@click.command("methods")
@click.argument("method_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def methods_cmd(method_id: str | None, as_json: bool) -> None:
    """The method catalogue: citations, families, canonical forms."""
    if method_id:
        m = get_method(method_id)
        if m is None:
            close = difflib.get_close_matches(method_id, list(catalogue()), n=3)
            raise click.UsageError(f"no method {method_id!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        if as_json:
            echo_json(asdict(m), default=str)
            return
        click.echo(f"{m.id}: {m.name}\n{m.citation}\nfamily {m.family}, bucket {m.bucket}, scorers "
                   f"{', '.join(m.scorers) or '-'}\n{m.url}\n\n{m.canonical.strip()}")
        for d in m.departures:
            click.echo(f"- departs: {d}")
        return
    methods = list(catalogue().values())
    if as_json:
        echo_json([asdict(m) for m in methods], default=str)
        return
    for m in methods:
        click.echo(f"{m.id:<24} {m.family:<22} {m.bucket:<7} {m.citation}")
