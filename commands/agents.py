"""``cbdsl mcp``: what serves agents beside the command line."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("mcp")
@click.option("--root", default=".", type=click.Path(file_okay=False, exists=True),
              help="The sandbox (or folder) whose commands the tools run (default: here).")
def mcp_cmd(root: str) -> None:
    """Serve check, explain, compile, submit, log, show, diff, methods and trajectory as Model Context Protocol
    tools over stdio (for an agent's MCP client; each tool runs the command with --json in ROOT)."""
    from cbdsl.commands.mcp_server import serve  # the mcp SDK: only when serving

    serve(Path(root))
