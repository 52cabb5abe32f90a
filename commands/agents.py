"""``cbdsl mcp``, ``cbdsl agent run`` and ``cbdsl experiment``: what serves agents beside the command line,
what drives them, and grids of agent runs. The CLI imports this module only for these commands."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from cbdsl.commands.common import echo_json
from cbdsl.commands.console import EXIT_OK, EXIT_POLICY
from cbdsl.harness import runner
from cbdsl.harness.experiment import GridError, load_grid, run_grid
from cbdsl.harness.presets import AgentError, resolve
from cbdsl.harness.report import ReportError, experiment_report, markdown, plot
from cbdsl.pipelines.loop.ledger import LedgerError
from cbdsl.pipelines.loop.sandbox import SandboxError
from cbdsl.pipelines.loop.test_scores import AGENT_ENV, refuse_in_agent_run


@click.command("mcp")
@click.option("--root", default=".", type=click.Path(file_okay=False, exists=True),
              help="The sandbox (or folder) whose commands the tools run (default: here).")
def mcp_cmd(root: str) -> None:
    """Serve check, explain, compile, submit, log, show, diff, methods and trajectory as Model Context Protocol
    tools over stdio (for an agent's MCP client; each tool runs the command with --json in ROOT)."""
    from cbdsl.commands.mcp_server import serve  # the mcp SDK: only when serving

    serve(Path(root))


@click.group("agent")
def agent_group() -> None:
    """Drive a coding agent through a sandbox's iterations (`cbdsl agent run`)."""


@agent_group.command("run")
@click.argument("sandbox", default=".", type=click.Path(file_okay=False, exists=True))
@click.option("--agent", "agent_name", required=True,
              help="A preset (claude, codex, openhands, search, scripted) or a command template with "
                   "{prompt_file}, {sandbox}, {iteration}, {submissions}, {max_turns}, {seed}, {python}.")
@click.option("--events", type=click.Choice(["claude", "codex", "openhands", "generic", "none"]),
              help="How the agent's JSON events report its usage (default: the preset's; generic for a command: "
                   "a final `result` event).")
@click.option("--mode", type=click.Choice(["turn", "session"]), default="turn", show_default=True,
              help="turn: one agent process per iteration; session: one process that is to make every "
                   "submission left.")
@click.option("--timeout", type=click.FloatRange(min=1), default=1800, show_default=True,
              help="Wall seconds an agent process may run before it is stopped.")
@click.option("--agent-turns", type=click.IntRange(min=1), default=50, show_default=True,
              help="The agent's own turns per process (passed to agents that take a limit, and enforced where "
                   "the agent reports its turns).")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Stop a process past this many tokens (where the "
              "agent reports them).")
@click.option("--max-turns", type=click.IntRange(min=1),
              help="Agent processes to start at most in this run (default: twice the sandbox's iterations).")
@click.option("--record", type=click.Path(file_okay=False),
              help="The run's record folder, outside the sandbox: prompts, transcripts, turns.jsonl "
                   "(default: SANDBOX.agent beside the sandbox).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="The run's seed, the agent command's {seed} (cbdsl search's --seed).")
@click.option("--json", "as_json", is_flag=True, help="The turns as JSON on stdout.")
def agent_run_cmd(sandbox: str, agent_name: str, events: str | None, mode: str, timeout: float, agent_turns: int,
                  max_tokens: int | None, max_turns: int | None, record: str | None, seed: int,
                  as_json: bool) -> None:
    """Give the agent its turns until the sandbox's iterations are used: each turn a prompt (the protocol and
    the latest feedback), bounded time, its transcript and usage kept beside the ledger entries it produced.
    A rerun resumes from the ledger. Refused inside an agent run."""

    if os.environ.get(AGENT_ENV):
        raise click.UsageError(f"an agent run may not start another ({AGENT_ENV} is set)")
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    try:
        agent = resolve(agent_name)
        agent = replace(agent, events=events) if events else agent
        result = runner.run(sandbox, agent, mode=mode, max_turns=max_turns, record=record, seed=seed,
                            limits=runner.Limits(timeout=timeout, agent_turns=agent_turns, tokens=max_tokens),
                            log=log)
    except (AgentError, SandboxError) as err:
        raise click.UsageError(str(err)) from err
    if as_json:
        echo_json(result.to_json(), default=str)
    else:
        click.echo(f"stopped: {result.stopped}; {result.iterations_left} iterations left; record in {result.record}")
    sys.exit(EXIT_OK if result.iterations_left == 0 else EXIT_POLICY)


@click.group("experiment")
def experiment_group() -> None:
    """Grids of agents x scaffolds x seeds x pools (`cbdsl experiment run`, `cbdsl experiment report`)."""


@experiment_group.command("run")
@click.argument("grid", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False),
              help="Where the cells go (default: a folder named after the grid file, beside it).")
@click.option("--parallel", type=click.IntRange(min=1), help="Cells at a time (default: the grid's `parallel`, "
              "else half the cores).")
def experiment_run_cmd(grid: str, out: str | None, parallel: int | None) -> None:
    """Run every cell of GRID (a TOML file: agents, scaffolds, seeds, pools, iterations; see `cbdsl experiment
    run --help` and the README), each a sandbox and an agent run; rerun to resume after a kill."""

    try:
        loaded = load_grid(grid)
        target = Path(out) if out else loaded.path.with_suffix("")
        ended = run_grid(loaded, target, parallel=parallel, log=click.echo)
    except GridError as err:
        raise click.UsageError(str(err)) from err
    click.echo(f"{sum(1 for e in ended if e.get('stopped') != 'not ended')} of {len(ended)} cells ended; "
               f"`cbdsl experiment report {target}` reads them")


@experiment_group.command("report")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("--k", "k", type=click.IntRange(min=1), help="Iterations counted per cell (default: the grid's).")
@click.option("--plots", type=click.Path(file_okay=False), help="Write curve.png and shares.png here "
              "(default: FOLDER).")
@click.option("--json", "as_json", is_flag=True, help="The whole report as JSON.")
def experiment_report_cmd(folder: str, k: int | None, plots: str | None, as_json: bool) -> None:
    """Per cell and per group of seeds: the best dev score after K iterations and the test score of that
    iteration, the shares of iterations with a new method family, literal-only, refused by the scaffold, refused;
    the best score against iteration. Writes report.md, report.json and the plots into FOLDER."""

    refusal = refuse_in_agent_run("cbdsl experiment report")
    if refusal:
        raise click.UsageError(refusal)
    try:
        report = experiment_report(folder, k)
    except (ReportError, GridError) as err:
        raise click.UsageError(str(err)) from err
    except LedgerError as err:
        click.echo(str(err), err=True)
        sys.exit(EXIT_POLICY)
    text = markdown(report)
    Path(folder, "report.md").write_text(text)
    Path(folder, "report.json").write_text(json.dumps(report, indent=2) + "\n")
    written = plot(report, plots or folder)
    if as_json:
        echo_json(report)
    else:
        click.echo(text + "\n" + "\n".join(f"plot: {p}" for p in written))
