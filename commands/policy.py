"""``cbdsl check``, ``fmt`` and ``parse``: a policy's text, without a pool and without reading rows.

These are the commands agents run most, so this module loads only the
language (``dsl``) and the scaffold rules, never Polars or the scorers.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

import click

from cbdsl.commands.check import run_check
from cbdsl.commands.common import echo_json, read_policy_arg
from cbdsl.commands.console import EXIT_OK, EXIT_POLICY, UsageProblem
from cbdsl.dsl.codes import CODES, explain
from cbdsl.dsl.diagnostics import Source, render_all
from cbdsl.dsl.format import format_policy
from cbdsl.dsl.parser import parse_diagnostics
from cbdsl.scaffolds.modes import RULES


@click.command("check")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--pool", type=click.Path(file_okay=False), help="Pool directory whose schema names the columns.")
@click.option("--explain", "explain_code", metavar="CODE", help="Explain a diagnostic code, e.g. E101.")
def check(files: tuple[str, ...], as_json: bool, pool: str | None, explain_code: str | None) -> None:
    """Parse, resolve and type-check policies; no rows are read.

    With --pool the columns are checked against the pool card's schema; in a
    sandbox, what its scaffold would refuse is a warning. Exits 0 when every
    file is clean (warnings allowed), 1 when a file has errors, 3 when cbdsl
    itself failed (E900). `-` reads stdin.
    """
    if explain_code:
        _explain(explain_code, as_json)
        return
    if not files:
        raise click.UsageError("give at least one policy file (or `-` for stdin), or --explain CODE")
    try:
        code = run_check(files, as_json, pool)
    except UsageProblem as err:
        raise click.UsageError(str(err)) from err
    sys.exit(code)


def _explain(code: str, as_json: bool) -> None:
    found = explain(code) or RULES.get(code.strip().upper())
    if found is None:
        known = sorted({*CODES, *RULES})
        close = difflib.get_close_matches(code.upper(), known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise click.UsageError(f"no diagnostic code {code!r}.{hint} Known codes: {', '.join(known)}")
    if as_json:
        echo_json({"code": found.code, "title": found.title, "explanation": found.explanation}, indent=None)
    else:
        click.echo(f"{found.code}: {found.title}\n\n{found.explanation}")


@click.command("fmt")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--check", "check_only", is_flag=True, help="Change nothing; exit 1 if a file is not formatted.")
def fmt_cmd(files: tuple[str, ...], check_only: bool) -> None:
    """Rewrite policies in canonical form (idempotent; comments kept; lines end in \\n).

    `cbdsl fmt -` reads stdin and writes the result to stdout.
    """
    status = EXIT_OK
    for path in files:
        text, name = read_policy_arg(path)
        policy, diags = parse_diagnostics(text, name)
        if policy is None:
            click.echo(render_all(diags, Source(text, name)), err=True)
            click.echo(f"{name}: not formatted: fix the syntax errors first", err=True)
            status = EXIT_POLICY
            continue
        formatted = format_policy(policy)  # lines end in `\n`, whatever the file used
        if check_only:
            if formatted != text:
                only = "\r" in text and formatted == text.replace("\r\n", "\n").replace("\r", "\n")
                why = ": only its line ends, which cbdsl fmt writes as \\n" if only else ""
                click.echo(f"{name}: would reformat{why} (run `cbdsl fmt {path}`)")
                status = EXIT_POLICY
        elif path == "-":
            click.echo(formatted, nl=False)
        elif formatted != text:
            tmp = Path(path).with_name(Path(path).name + ".cbdsl-tmp")
            tmp.write_bytes(formatted.encode("utf-8"))  # bytes: no newline translation
            os.replace(tmp, path)  # atomic: never a half-written policy
            click.echo(f"{name}: formatted", err=True)
    sys.exit(status)


@click.command("parse")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Compact JSON on one line (default: indented).")
def parse_cmd(file: str, as_json: bool) -> None:
    """Print the AST of a policy as JSON (spans are byte offsets)."""
    text, name = read_policy_arg(file)
    policy, diags = parse_diagnostics(text, name)
    if policy is None:
        click.echo(render_all(diags, Source(text, name)), err=True)
        sys.exit(EXIT_POLICY)
    click.echo(policy.model_dump_json(indent=None if as_json else 2))
