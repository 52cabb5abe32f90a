"""The ``cbdsl`` console script: ``cbdsl check FILE...`` without click, every other command through it.

Why: agents run ``cbdsl check`` hundreds of times per run, and it must start
in under 0.3 s on a 2-core machine; importing click and building the command
group (:mod:`cbdsl.cli`) cost about 15 ms of that. The hot form,
``cbdsl check FILE... [--json] [--pool DIR]``, runs
:func:`cbdsl.commands.check.run_check` here; any other argument list
(``--help``, ``--explain``, stdin, an unknown flag, another command) and any
usage error go to click, whose ``check`` command calls the same
``run_check``, so both paths print the same bytes.

Exit codes (:mod:`cbdsl.commands.console`): 0 ok (warnings allowed), 1 the
policy has errors, 2 usage error (bad flag, missing file), 3 internal error.
"""

from __future__ import annotations

import os
import sys

from cbdsl.commands.check import run_check
from cbdsl.commands.console import EXIT_INTERNAL, EXIT_OK, UsageProblem, report_internal_error
from cbdsl.process import configure


def check_arguments(argv: list[str]) -> tuple[tuple[str, ...], bool, str | None] | None:
    """(files, --json, --pool) when ``argv`` is the plain form ``check FILE... [--json] [--pool DIR]``, else None.

    None hands the call to click: help, ``--explain``, stdin (``-``, which can
    be read only once), ``--``, an unknown or repeated option, no file.
    """
    if argv[:1] != ["check"]:
        return None
    files: list[str] = []
    as_json, pool = False, None
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "--json" and not as_json:
            as_json = True
        elif arg == "--pool" and pool is None:
            pool = next(rest, None)
            if pool is None or pool.startswith("-"):
                return None
        elif arg.startswith("--pool=") and pool is None and len(arg) > len("--pool="):
            pool = arg[len("--pool="):]
        elif arg.startswith("-"):
            return None
        else:
            files.append(arg)
    return (tuple(files), as_json, pool) if files else None


def main() -> None:
    """Entry point: the plain check here, the rest (and any usage error) through click."""
    configure()  # before torch can load: how its threads wait on a shared machine
    args = check_arguments(sys.argv[1:])
    if args is not None:
        try:
            code = run_check(*args)
        except UsageProblem:
            code = None  # click reports it, with the usage line, exactly as for any other command
        except BrokenPipeError:
            code = EXIT_OK
        except Exception as err:  # noqa: BLE001 - the one boundary where anything is caught
            if os.environ.get("CBDSL_DEBUG"):
                raise
            report_internal_error(err)
            code = EXIT_INTERNAL
        if code is not None:
            sys.exit(code)
    from cbdsl.cli import main as click_main  # click and the command group off the check path

    click_main()
