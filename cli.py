"""The ``cbdsl`` command group: one subcommand per stage, ``--json`` everywhere.

The commands live in :mod:`cbdsl.commands`, one module per group of
commands; this group imports a command's module only when that command runs
(click's "lazily loading subcommands"), so agents, who call ``cbdsl``
hundreds of times per run, never pay for the modules of the others, and
``cbdsl --help`` lists the commands without importing any. :data:`COMMANDS`
is the table, and the import ladder's test reads it as this module's imports.

Exit codes (:mod:`cbdsl.commands.console`): 0 ok (warnings allowed); 1 a
policy has errors, a submission was refused or failed, or the ledger is
damaged or does not verify; 2 usage error (bad flag, missing file, unknown
iteration); 3 internal error.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import os
import sys
from pathlib import Path

import click

from cbdsl.commands.console import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, report_internal_error

#: Command name -> "module:attribute" of its click command (or group).
COMMANDS: dict[str, str] = {
    "check": "cbdsl.commands.policy:check",
    "fmt": "cbdsl.commands.policy:fmt_cmd",
    "parse": "cbdsl.commands.policy:parse_cmd",
    "compile": "cbdsl.commands.selection:compile_cmd",
    "run": "cbdsl.commands.run:run_cmd",
    "explain": "cbdsl.commands.selection:explain_cmd",
    "why": "cbdsl.commands.selection:why_cmd",
    "pool": "cbdsl.commands.pool:pool_group",
    "init": "cbdsl.commands.loop:init_cmd",
    "submit": "cbdsl.commands.loop:submit_cmd",
    "log": "cbdsl.commands.loop:log_cmd",
    "show": "cbdsl.commands.loop:show_cmd",
    "leaderboard": "cbdsl.commands.loop:leaderboard_cmd",
    "verify": "cbdsl.commands.loop:verify_cmd",
    "reproduce": "cbdsl.commands.loop:reproduce_cmd",
    "search": "cbdsl.commands.research:search_cmd",
    "diff": "cbdsl.commands.research:diff_cmd",
    "trajectory": "cbdsl.commands.research:trajectory_cmd",
    "methods": "cbdsl.commands.catalogue:methods_cmd",
    "mcp": "cbdsl.commands.agents:mcp_cmd",
    "agent": "cbdsl.commands.agents:agent_group",
    "experiment": "cbdsl.commands.agents:experiment_group",
}


class LazyGroup(click.Group):
    """A click group whose commands are named in a table and imported when one runs ("Lazily Loading
    Subcommands" in click's documentation).

    Its help lists every command without importing any: click's own list, made from stand-ins that carry the
    docstring of each command's function, read from its module's source (click's summary is the docstring's
    first sentence or two). Importing them all would add a second to `cbdsl --help`.
    """

    def __init__(self, *args, lazy_subcommands: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}
        self._listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_subcommands:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy_subcommands[cmd_name].partition(":")
        if self._listing:
            doc = _docstring(module, attribute)
            if doc is not None:
                return click.Command(cmd_name, help=doc)
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy_subcommands[cmd_name]} is a {type(command).__name__}, not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False


def _docstring(module: str, function: str) -> str | None:
    """The docstring of a module's top-level function, read from its source without importing the module;
    None when the source or the function is not found (the caller then imports the module)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    for node in _source_tree(spec.origin).body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return ast.get_docstring(node, clean=False)
    return None


@functools.cache
def _source_tree(path: str) -> ast.Module:
    return ast.parse(Path(path).read_bytes(), path)


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cbdsl", prog_name="cbdsl")
def cli() -> None:
    """cbdsl: declarative data-curation policies.

    Write a policy (policy.cur), check and format it, compile it against a
    pool, run it to write the selection, and ask why rows were kept. In a
    sandbox (`cbdsl init`), submit trains and evaluates each iteration with
    the sandbox's backend and records it in a hash-chained ledger, which the
    research commands read. `cbdsl COMMAND --help` explains each command.

    \b
    policies:  check, fmt, parse, compile, run, explain, why
    pools:     pool import, pool make-demo, pool info, pool add-asset
    the loop:  init, submit, search, log, show, leaderboard, verify, reproduce
    research:  diff, trajectory, methods
    agents:    agent run, experiment run, experiment report, mcp
    """


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
        report_internal_error(err)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
