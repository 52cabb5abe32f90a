"""Click helpers that several command modules share: a policy argument read or a usage error, JSON on stdout.

Only click and :mod:`cbdsl.commands.console` load with it, so that the
light commands (``fmt``, ``parse``, ``methods``) stay light.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from cbdsl.commands.console import UsageProblem, read_policy


def read_policy_arg(path: str) -> tuple[str, str]:
    """(text, display name) of a policy path, ``-`` meaning stdin; a usage error if it cannot be read."""
    try:
        return read_policy(path)
    except UsageProblem as err:
        raise click.UsageError(str(err)) from err


def echo_json(data: Any, *, indent: int | None = 2, default: Callable[[Any], Any] | None = None) -> None:
    """Print ``data`` as JSON on stdout: indented by 2, or on one line with ``indent=None``; ``default=str``
    writes what JSON has no type for as text."""
    click.echo(json.dumps(data, indent=indent, default=default))
