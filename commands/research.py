"""Research on the loop's iterations: ``cbdsl search`` (a baseline agent without an LLM), ``diff`` (an AST
diff of two policies or iterations) and ``trajectory`` (a run's iterations, or several runs side by side).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from cbdsl.commands.common import echo_json, read_policy_arg
from cbdsl.commands.console import EXIT_OK, EXIT_POLICY
from cbdsl.commands.loop import ledger_failed, open_sandbox
from cbdsl.dsl.diagnostics import Source, render_all
from cbdsl.dsl.diff import diff_policies
from cbdsl.dsl.diff_view import render_diff
from cbdsl.dsl.parser import parse_diagnostics
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.loop.backends.base import BackendError
from cbdsl.pipelines.loop import test_scores
from cbdsl.pipelines.loop.ledger import LedgerError
from cbdsl.pipelines.loop.submit import SubmitError
from cbdsl.research import trajectory as tj
from cbdsl.research.search import SearchError, render, search
from cbdsl.scaffolds.catalogue import family_of


@click.command("search")
@click.option("--iterations", default=10, show_default=True, type=click.IntRange(min=1),
              help="Proposals to submit (at most the iterations the sandbox has left).")
@click.option("--strategy", type=click.Choice(["mutate", "random"]), default="mutate", show_default=True,
              help="mutate: hill climbing from the best policy so far; random: independent random policies.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Same seed, same search.")
@click.option("--max-cost", type=click.Choice(["metadata", "cpu_model", "gpu_model"]), default="gpu_model",
              show_default=True, help="The most expensive scorers a proposal may use.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def search_cmd(iterations: int, strategy: str, seed: int, max_cost: str, as_json: bool) -> None:
    """Propose policies and submit each through the loop, keeping the best: a baseline with no LLM.

    mutate edits the AST of the best policy so far; random draws independent
    policies. Each proposal uses one of this sandbox's iterations.
    """
    cfg = open_sandbox()
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    try:
        result = search(cfg, iterations=iterations, strategy=strategy, seed=seed, max_cost=max_cost, log=log)
    except (SearchError, SubmitError, LedgerError, PoolError, BackendError) as err:
        click.echo(f"search not run: {err}", err=True)
        sys.exit(EXIT_POLICY)
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(render(result))
    sys.exit(EXIT_OK if result.steps else EXIT_POLICY)


def _diff_side(ref: str) -> tuple[str, str, frozenset[str]]:
    """(text, name, families of earlier iterations) of a policy file or a ledger iteration `@N`."""
    if ref.startswith("@") and not Path(ref).exists():
        try:
            return tj.iteration_policy(ref)
        except tj.TrajectoryError as err:
            raise click.UsageError(str(err)) from err
    return (*read_policy_arg(ref), frozenset())


@click.command("diff")
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="The edits and classes as JSON.")
def diff_cmd(old: str, new: str, as_json: bool) -> None:
    """AST diff of two policies: files, or ledger iterations (`cbdsl diff @3 @4`, `cbdsl diff @4 policy.cur`).

    Each edit (insert, remove, update, move) and the whole diff is classed: metadata, literal (only
    numbers), structural, or new-family (a catalogue family no earlier iteration used).
    """
    sides = []
    for ref in (old, new):
        text, name, prior = _diff_side(ref)
        policy, diags = parse_diagnostics(text, name)
        if policy is None:
            click.echo(render_all(diags, Source(text, name)), err=True)
            click.echo(f"{name}: cannot diff: fix the syntax errors first", err=True)
            sys.exit(EXIT_POLICY)
        sides.append((policy, Source(text, name), prior))
    (a, source_a, _), (b, source_b, prior) = sides
    result = diff_policies(a, b, prior_families=prior, family_of=family_of)
    if as_json:
        echo_json({"old": source_a.name, "new": source_b.name, **result.to_json()})
        return
    console = Console(highlight=False, soft_wrap=True)
    for line in render_diff(result, source_a, source_b):
        console.print(line)


@click.command("trajectory")
@click.argument("runs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--compare", is_flag=True, help="Put the RUNS (sandbox folders) side by side.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write score vs iteration to this PNG.")
@click.option("--test", "with_test", is_flag=True,
              help="For the researcher: each iteration's test score (the suite's held-out part, never shown to the "
                   "agent) and the dev - test gap.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def trajectory_cmd(runs: tuple[str, ...], compare: bool, plot_path: str | None, with_test: bool, as_json: bool) -> None:
    """A run's iterations: change class, families used and introduced, citations, score, delta, best so far.

    The summary gives the share of iterations that introduce a new method family, that are literal-only,
    that improve the best, and the iteration of the best. RUNS default to the current sandbox;
    `--compare A B ...` shows several runs (agents, scaffolds) side by side. `--test` adds the test scores
    from the researcher's record outside the sandbox (refused inside an agent run).
    """
    if len(runs) > 1 and not compare:
        raise click.UsageError("several runs given: add --compare to put them side by side")
    if compare and len(runs) < 2:
        raise click.UsageError("--compare needs at least two run folders (sandboxes)")
    refusal = with_test and test_scores.refuse_in_agent_run("cbdsl trajectory --test")
    if refusal:
        raise click.UsageError(refusal)
    try:
        loaded = [tj.load_run(r, test=with_test) for r in runs or (".",)]
    except tj.TrajectoryError as err:
        raise click.UsageError(str(err)) from err
    except LedgerError as err:
        ledger_failed(err)
    if plot_path:
        tj.plot(loaded, plot_path)
    if as_json:
        click.echo(tj.to_json(loaded))
    else:
        click.echo(tj.render_compare(loaded) if compare else tj.render(loaded[0]))
        if plot_path:
            click.echo(f"plot: {plot_path}")
    unverified = [r.problems for r in loaded if r.problems]
    if unverified:
        click.echo("warning: what is shown above comes from a ledger that does not verify\n"
                   + "\n".join(unverified), err=True)
        sys.exit(EXIT_POLICY)
