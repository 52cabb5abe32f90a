"""``cbdsl mcp``: the sandbox's commands as Model Context Protocol tools, over stdio.

Why it exists: some agents prefer tools to a shell. Each tool runs the very
command an agent would type (``python -m cbdsl COMMAND ... --json`` in the
server's folder, a sandbox) and returns what that command prints as JSON,
so the tools and the command line can never disagree, and a crash in one
call never takes the server down. A command that fails is a tool error whose
text is the command's own: for a policy, each diagnostic's code, place and
hints; otherwise its error line with the fix. Built on the official ``mcp``
SDK (its ``MCPServer``); the SDK's stdio client is what the tests drive it with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

NAME = "cbdsl"
INSTRUCTIONS = ("Tools for a cbdsl sandbox: write a curation policy in policy.cur (read AGENTS.md and "
                "PROTOCOL.md), check and explain it, compile it, submit it (a fixed model is trained and "
                "evaluated on the selection), then read the log, the trajectory and diffs between iterations.")


class Output(BaseModel):
    """What a tool returns: the command it ran and the JSON that command printed."""

    command: list[str] = Field(description="the cbdsl command line the tool ran, in the server's folder")
    output: Any = Field(description="the command's --json output (the same as on the command line)")


class CommandFailed(Exception):
    """A cbdsl command exited non-zero; the message is its own explanation."""


def explain_failure(stdout: str, stderr: str) -> str:
    """The tool error's text: a policy's diagnostics as ``CODE at FILE:LINE:COL: message (hint: ...)``, else
    the command's error output."""
    try:
        report = json.loads(stdout)
    except ValueError:
        report = None
    lines = []
    if isinstance(report, dict) and isinstance(report.get("files"), list):
        for file in report["files"]:
            for d in file.get("diagnostics", []):
                if d.get("severity") != "error":
                    continue
                hints = "; ".join(d.get("hints") or [])
                lines.append(f"{d['code']} at {file['path']}:{d.get('line')}:{d.get('column')}: {d['message']}"
                             + (f" (hint: {hints})" if hints else ""))
    text = "\n".join(lines) or stderr.strip() or stdout.strip() or "the command failed without a message"
    return text


def build(root: str | Path = ".", python: str = sys.executable):
    """The server for the sandbox (or any folder) ``root``: one tool per command."""
    import anyio
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    folder = Path(root).resolve()
    server = MCPServer(NAME, instructions=INSTRUCTIONS)

    async def cbdsl(*args: str) -> Output:
        command = ["cbdsl", *args]
        done = await anyio.run_process([python, "-m", "cbdsl", *args], cwd=folder, check=False)
        stdout, stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise ToolError(explain_failure(stdout, stderr))
        try:
            return Output(command=command, output=json.loads(stdout))
        except ValueError as err:
            raise ToolError(f"`{' '.join(command)}` printed no JSON: {stdout[:500]}") from err

    @server.tool(description="Parse and type-check policy files (no data touched; with `pool`, against its "
                             "schema). Diagnostics carry a code, a place and hints.")
    async def check(files: list[str] | None = None, pool: str | None = None) -> Output:
        return await cbdsl("check", *(files or ["policy.cur"]), *(["--pool", pool] if pool else []), "--json")

    @server.tool(description="The plan of a policy and, with run=true, the row funnel: what each clause keeps.")
    async def explain(file: str = "policy.cur", run: bool = False) -> Output:
        return await cbdsl("explain", file, *(["--run"] if run else []), "--json")

    @server.tool(description="Check and plan a policy; submit runs what compile saw.")
    async def compile(file: str = "policy.cur") -> Output:  # noqa: A001 - the command's name
        return await cbdsl("compile", file, "--json")

    @server.tool(description="Run the compiled policy, audit the selection, train and evaluate the fixed model "
                             "on it, record the iteration; returns the scores (minutes for a real backend). "
                             "Scaffold `research` needs observation, hypothesis and change.")
    async def submit(message: str, observation: str = "", hypothesis: str = "", change: str = "",
                     wait: bool = False) -> Output:
        note = [x for flag, value in (("--observation", observation), ("--hypothesis", hypothesis),
                                      ("--change", change)) if value for x in (flag, value)]
        return await cbdsl("submit", "-m", message, *note, *(["--wait"] if wait else []), "--json")

    @server.tool(description="The sandbox's iterations: number, status, scores, message.")
    async def log() -> Output:
        return await cbdsl("log", "--json")

    @server.tool(description="One iteration in full: its policy, selection, scores and timings.")
    async def show(n: int) -> Output:
        return await cbdsl("show", str(n), "--json")

    @server.tool(description="What changed between two policies (`@N` names iteration N's): each edit and its "
                             "class, literal, structural or new family.")
    async def diff(old: str, new: str = "policy.cur") -> Output:
        return await cbdsl("diff", old, new, "--json")

    @server.tool(description="The method catalogue, or one method (its citation, canonical policy, parameters).")
    async def methods(method_id: str | None = None) -> Output:
        return await cbdsl("methods", *([method_id] if method_id else []), "--json")

    @server.tool(description="The run so far: each iteration's change class, method families and score.")
    async def trajectory() -> Output:
        return await cbdsl("trajectory", "--json")

    return server


def serve(root: str | Path = ".") -> None:
    """Serve the tools over stdio until the client closes the connection."""
    build(root).run("stdio")
