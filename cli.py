"""The ``cbdsl`` command line: one subcommand per stage, ``--json`` everywhere.

Agents call this hundreds of times per run, so it must start fast: heavy
packages (polars, torch, ...) are imported inside the commands that need
them, never at module top. Exit codes: 0 ok (warnings allowed), 1 the policy
has errors, 2 usage error (bad flag, missing file), 3 internal error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

EXIT_OK, EXIT_POLICY, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def _read(path: str) -> tuple[str, str]:
    """(text, display name) of a policy path, ``-`` meaning stdin."""
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except UnicodeDecodeError as err:
        raise click.UsageError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise click.UsageError(f"cannot read {path}: {err.strerror}") from err


def _schema(pool: str | None) -> dict[str, str] | None:
    if pool is None:
        return None
    card = Path(pool) / "pool.json"
    try:
        data = json.loads(card.read_text())
    except OSError as err:
        raise click.UsageError(f"no pool card at {card} ({err.strerror}); give a pool directory") from err
    except json.JSONDecodeError as err:
        raise click.UsageError(f"{card} is not valid JSON: {err}") from err
    schema = data.get("schema")
    if not isinstance(schema, dict):
        raise click.UsageError(f"{card} has no `schema` mapping of column name to type")
    return {str(k): str(v) for k, v in schema.items()}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cbdsl", prog_name="cbdsl")
def cli() -> None:
    """cbdsl: declarative data-curation policies.

    Write a policy.cur, check it, format it, and (in later stages) compile,
    run and submit it. `cbdsl COMMAND --help` explains each command.
    """


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--pool", type=click.Path(file_okay=False), help="Pool directory whose schema names the columns.")
@click.option("--explain", "explain_code", metavar="CODE", help="Explain a diagnostic code, e.g. E101.")
def check(files: tuple[str, ...], as_json: bool, pool: str | None, explain_code: str | None) -> None:
    """Parse, resolve and type-check policies; no data is touched.

    Exits 0 when every file is clean (warnings allowed), 1 when a file has errors.
    """
    if explain_code:
        _explain(explain_code, as_json)
        return
    if not files:
        raise click.UsageError("give at least one policy file (or `-` for stdin), or --explain CODE")
    from cbdsl.compiler.check import check_source
    from cbdsl.dsl.diagnostics import Source, render_all, to_json

    schema = _schema(pool)
    reports, failed = [], False
    for path in files:
        text, name = _read(path)
        _policy, diags = check_source(text, name, schema)
        source = Source(text, name)
        ok = not any(d.is_error for d in diags)
        failed |= not ok
        if as_json:
            reports.append({"path": name, "ok": ok, "diagnostics": [to_json(d, source) for d in diags]})
        else:
            if diags:
                click.echo(render_all(diags, source), err=not ok)
            errors = sum(d.is_error for d in diags)
            warnings = sum(d.severity == "warning" for d in diags)
            status = "ok" if ok else f"{errors} error{'s' * (errors != 1)}"
            if warnings:
                status += f", {warnings} warning{'s' * (warnings != 1)}"
            click.echo(f"{name}: {status}", err=not ok)
    if as_json:
        click.echo(json.dumps({"files": reports}, indent=2))
    sys.exit(EXIT_POLICY if failed else EXIT_OK)


def _explain(code: str, as_json: bool) -> None:
    from cbdsl.dsl.codes import CODES, explain

    found = explain(code)
    if found is None:
        import difflib

        close = difflib.get_close_matches(code.upper(), CODES, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise click.UsageError(f"no diagnostic code {code!r}.{hint} Known codes: {', '.join(sorted(CODES))}")
    if as_json:
        click.echo(json.dumps({"code": found.code, "title": found.title, "explanation": found.explanation}))
    else:
        click.echo(f"{found.code}: {found.title}\n\n{found.explanation}")


@cli.command("fmt")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--check", "check_only", is_flag=True, help="Change nothing; exit 1 if a file is not formatted.")
def fmt_cmd(files: tuple[str, ...], check_only: bool) -> None:
    """Rewrite policies in canonical form (idempotent; comments kept).

    `cbdsl fmt -` reads stdin and writes the result to stdout.
    """
    from cbdsl.dsl.diagnostics import render_all
    from cbdsl.dsl.format import format_policy
    from cbdsl.dsl.parser import parse_diagnostics
    from cbdsl.dsl.diagnostics import Source

    status = EXIT_OK
    for path in files:
        text, name = _read(path)
        policy, diags = parse_diagnostics(text, name)
        if policy is None:
            click.echo(render_all(diags, Source(text, name)), err=True)
            click.echo(f"{name}: not formatted: fix the syntax errors first", err=True)
            status = EXIT_POLICY
            continue
        formatted = format_policy(policy)
        if check_only:
            if formatted != text:
                click.echo(f"{name}: would reformat (run `cbdsl fmt {path}`)")
                status = EXIT_POLICY
        elif path == "-":
            click.echo(formatted, nl=False)
        elif formatted != text:
            tmp = Path(path).with_name(Path(path).name + ".cbdsl-tmp")
            tmp.write_text(formatted, encoding="utf-8")
            os.replace(tmp, path)  # atomic: never a half-written policy
            click.echo(f"{name}: formatted", err=True)
    sys.exit(status)


@cli.command("parse")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Compact JSON on one line (default: indented).")
def parse_cmd(file: str, as_json: bool) -> None:
    """Print the AST of a policy as JSON (spans are byte offsets)."""
    from cbdsl.dsl.diagnostics import Source, render_all
    from cbdsl.dsl.parser import parse_diagnostics

    text, name = _read(file)
    policy, diags = parse_diagnostics(text, name)
    if policy is None:
        click.echo(render_all(diags, Source(text, name)), err=True)
        sys.exit(EXIT_POLICY)
    click.echo(policy.model_dump_json(indent=None if as_json else 2))


def main() -> None:
    """Entry point: a bug in cbdsl is an internal error with a short message, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as err:
        err.show()
        sys.exit(EXIT_USAGE)
    except SystemExit:
        raise
    except BrokenPipeError:
        sys.exit(EXIT_OK)
    except Exception as err:  # noqa: BLE001 - the one boundary where anything is caught
        if os.environ.get("CBDSL_DEBUG"):
            raise
        click.echo(
            f"internal error [E900]: {type(err).__name__}: {err}\n"
            "This is a bug in cbdsl, not in your policy. Please report it to the cbdsl issue tracker "
            "with the policy file and the command you ran (set CBDSL_DEBUG=1 for the traceback).",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
