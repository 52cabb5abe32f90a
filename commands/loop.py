"""The loop in a sandbox: ``cbdsl init``, ``submit``, and the ledger's ``log``, ``show``, ``leaderboard``,
``verify`` and ``reproduce``.

A command that reads the ledger verifies it too: what it shows comes with a
warning and exit 1 when the ledger does not verify.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cbdsl.commands.common import echo_json
from cbdsl.commands.console import EXIT_OK, EXIT_POLICY
from cbdsl.commands.pool import DEMOS, pool_call
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.roots import resolve_pool, search_path
from cbdsl.pipelines.loop import test_scores
from cbdsl.pipelines.loop.backends.base import BackendError
from cbdsl.pipelines.loop.ledger import LedgerBroken, LedgerError
from cbdsl.pipelines.loop.init import TRACKS, init, retire_earlier_run
from cbdsl.pipelines.loop.sandbox import CONFIG, SCAFFOLDS, SandboxError, load
from cbdsl.pipelines.loop.submit import SubmitError, ledger_for, render_feedback, reproduce, submit
from cbdsl.pipelines.loop.witness import Witness
from cbdsl.scaffolds.modes import research_message


def open_sandbox():
    """The sandbox of the current directory (or a folder above it); a usage error outside one."""
    try:
        return load()
    except SandboxError as err:
        raise click.UsageError(str(err)) from err




@click.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--track", type=click.Choice(list(TRACKS)), default="clip", show_default=True,
              help="clip: CLIP pretraining (pool demo, backend mini); it: instruction tuning (pool demo-it, "
                   "backend mini-vlm). --pool, --backend and --budget override its defaults.")
@click.option("--pool", "pool_name", help="Pool name or directory (default: the track's demo pool).")
@click.option("--budget", type=click.IntRange(min=1), help="Rows to select (default: 5000 clip, 4000 it).")
@click.option("--backend", type=click.Choice(["mini", "mini-vlm", "command", "ray"]),
              help="What trains and evaluates a submission: mini (a small CLIP, here), mini-vlm (a small "
                   "vision-language model, here), command (your own command), ray (a Ray job); settings go in "
                   "cbdsl.toml. Default: the track's.")
@click.option("--scaffold", default="open", show_default=True, type=click.Choice(list(SCAFFOLDS)),
              help="Rules submit enforces: open (none), guide (none, plus a strategy guide), cite (cite a "
                   "catalogue method), adapt (cite, instantiate and adapt one).")
@click.option("--iterations", default=10, show_default=True, type=click.IntRange(min=1),
              help="Scored submissions allowed (the baseline not counted).")
@click.option("--restart", is_flag=True,
              help="The folder held a benchmarked sandbox before: start over on purpose (its witness is kept "
                   "aside, retired).")
def init_cmd(directory: str, track: str, pool_name: str | None, budget: int | None, backend: str | None,
             scaffold: str, iterations: int, restart: bool) -> None:
    """Make a sandbox in DIRECTORY: cbdsl.toml, policy.cur, PROTOCOL.md, POOL.md, METHODS.md.

    The track's demo pool is made first if it is missing and --pool names it.
    """
    demo, default_backend, default_budget = TRACKS[track]
    pool_name, backend, budget = pool_name or demo, backend or default_backend, budget or default_budget
    demos = {d.name: (track_name, d) for track_name, d in DEMOS.items()}
    try:
        pool = Pool.open(resolve_pool(pool_name))
    except PoolError:
        if pool_name not in demos:
            raise click.UsageError(f"no pool `{pool_name}`: import one with `cbdsl pool import` or give a directory")
        target = Path(search_path()[0]) / pool_name
        click.echo(f"making the {pool_name} pool at {target} (once; a few seconds)")
        pool = Pool.open(pool_call(demos[pool_name][1].maker, target))
    if pool.name in demos and not demos[pool.name][1].is_current(pool.card.lineage):
        click.echo(f"warning: the {pool.name} pool at {pool.path} was made by another version of cbdsl's generator "
                   f"(its defects differ from the documented ones): `cbdsl pool make-demo --track "
                   f"{demos[pool.name][0]} --overwrite` makes it again", err=True)
    try:
        if restart and not (Path(directory) / CONFIG).exists():
            for moved in retire_earlier_run(directory):
                click.echo(f"retired the earlier run's record: {moved}")
        cfg = init(directory, pool=pool_name, budget=budget, backend=backend, scaffold=scaffold,
                   iterations=iterations, pool_obj=pool)
    except SandboxError as err:
        raise click.UsageError(str(err)) from err
    except LedgerError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"sandbox ready in {cfg.root}: pool `{pool_name}` ({pool.card.rows} rows), budget {budget}, "
               f"backend {backend}, scaffold {scaffold}, {iterations} iterations")
    click.echo("next: read PROTOCOL.md, edit policy.cur, then `cbdsl compile policy.cur && cbdsl submit`")


@click.command("submit")
@click.option("-m", "--message", default="", help="What this iteration changes, and why.")
@click.option("--observation", default="", help="Research note (scaffold research): what you observed.")
@click.option("--hypothesis", default="", help="Research note: the hypothesis the observation suggests.")
@click.option("--change", default="", help="Research note: the minimal policy change that tests it.")
@click.option("--wait", is_flag=True, help="Wait for a submission in progress instead of refusing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable feedback.")
def submit_cmd(message: str, observation: str, hypothesis: str, change: str, wait: bool, as_json: bool) -> None:
    """Submit the last compiled policy: run it, check budget and scaffold, audit, train and evaluate, record.

    The sandbox's backend trains and evaluates the selection; the iteration
    goes into the ledger as scored, refused (nothing trained, no iteration
    used) or failed, and the feedback is printed. The first submission scores
    the random baseline (iteration 0) first. Exits 0 when scored.
    """
    cfg = open_sandbox()
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    if observation or hypothesis or change:  # the research note goes into the message, labelled
        message = research_message(observation, hypothesis, change, summary=message)
    try:
        fb = submit(cfg, message=message, wait=wait, log=log)
    except (SubmitError, LedgerError, PoolError, BackendError) as err:
        if as_json:
            echo_json({"status": "not submitted", "error": str(err)}, indent=None)
        else:
            click.echo(f"not submitted: {err}", err=True)
        sys.exit(EXIT_POLICY)
    if as_json:
        echo_json(fb.to_json(), default=str)
    else:
        click.echo(render_feedback(fb))
    sys.exit(EXIT_OK if fb.entry.status == "scored" else EXIT_POLICY)


def _read_ledger(read):
    """``read(ledger)`` on the sandbox's ledger, then verify it: (what was read, the verdict). A ledger
    that cannot be read exits 1 with what is wrong and how to restore it; ``read``'s own LedgerError
    (an unknown iteration) is the caller's, unless the ledger does not verify."""
    cfg = open_sandbox()
    try:
        ledger = ledger_for(cfg)
    except LedgerError as err:
        ledger_failed(err)
    try:
        try:
            value = read(ledger)
        except LedgerBroken as err:
            ledger_failed(err)
        except LedgerError:
            _unverified(_verdict(ledger))
            raise
        return value, _verdict(ledger)
    finally:
        ledger.close()


def _verdict(ledger):
    try:
        return ledger.verify()
    except LedgerError as err:
        ledger_failed(err)


def ledger_failed(err: Exception) -> None:
    """A ledger that cannot be read or verified: what is wrong and how to restore it, exit 1."""
    click.echo(str(err), err=True)
    sys.exit(EXIT_POLICY)


def _unverified(verdict) -> None:
    """After what a command printed: say on stderr that the ledger does not verify, and exit 1."""
    if not verdict.ok:
        click.echo(f"warning: what is shown above comes from a ledger that does not verify\n{verdict.report()}",
                   err=True)
        sys.exit(EXIT_POLICY)


def _score(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


@click.command("log")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def log_cmd(as_json: bool) -> None:
    """Every iteration of the sandbox: status, score, message (exit 1 when the ledger does not verify)."""
    entries, verdict = _read_ledger(lambda ledger: ledger.entries())
    if as_json:
        echo_json([{"iteration": e.n, "status": e.status, "aggregate": e.aggregate, "message": e.message,
                    "policy_hash": e.policy_hash, "selection_hash": e.selection_hash, "error": e.error}
                   for e in entries])
    else:
        if not entries:
            click.echo("no submissions yet: `cbdsl compile policy.cur && cbdsl submit`")
        for e in entries:
            note = e.message if e.status == "scored" else (e.error or "")
            click.echo(f"{e.n:>4}  {e.status:<8} {_score(e.aggregate):>8}  {e.policy_hash[:10]}  {note}")
    _unverified(verdict)


@click.command("show")
@click.argument("n", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_cmd(n: int, as_json: bool) -> None:
    """One iteration in full: its policy, audit, metrics and timings (exit 1 when the ledger does not verify)."""
    try:
        e, verdict = _read_ledger(lambda ledger: ledger.get(n))
    except LedgerError as err:
        raise click.UsageError(str(err)) from err
    data = {k: getattr(e, k) for k in e.__dataclass_fields__ if k != "policy_ast"}
    if as_json:
        echo_json(data, default=str)
        _unverified(verdict)
        return
    click.echo(f"iteration {e.n}: {e.status}" + (f" - {e.message}" if e.message else ""))
    if e.error:
        click.echo(f"error: {e.error}")
    click.echo(f"policy {e.policy_hash[:16]}  selection {(e.selection_hash or '-')[:16]}  rows {e.selected}")
    if e.metrics:
        benchmarks = e.metrics.get("benchmarks")
        for name, v in sorted((benchmarks if isinstance(benchmarks, dict) else {}).items()):
            click.echo(f"  {name:<28} {_score(v)}")
        click.echo(f"  {'aggregate':<28} {_score(e.aggregate)}")
    if e.audit:
        click.echo(f"audit: {e.audit.get('verdict')} ({e.audit.get('flagged')} flagged)")
    click.echo("\n" + e.policy_text)
    _unverified(verdict)


@click.command("leaderboard")
@click.option("--test", "with_test", is_flag=True,
              help="For the researcher: each iteration's test score (the suite's held-out part, never shown to the "
                   "agent) and the dev - test gap.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def leaderboard_cmd(with_test: bool, as_json: bool) -> None:
    """Scored iterations, best first by the dev score the agent sees (exit 1, with a warning, when the ledger
    does not verify); `--test` adds the test scores from the researcher's record outside the sandbox."""
    refusal = with_test and test_scores.refuse_in_agent_run("cbdsl leaderboard --test")
    if refusal:
        raise click.UsageError(refusal)
    (entries, tests), verdict = _read_ledger(
        lambda ledger: (ledger.scored(), test_scores.read(ledger.witness, ledger.entries()) if with_test else {}))
    scored = sorted(entries, key=lambda e: (e.aggregate is None, -(e.aggregate or 0.0), e.n))
    if as_json:
        rows = []
        for i, e in enumerate(scored):
            row = {"rank": i + 1, "iteration": e.n, "aggregate": e.aggregate, "message": e.message,
                   "benchmarks": (e.metrics or {}).get("benchmarks")}
            if with_test:
                test = tests.get(e.n)
                row["test"] = None if test is None else {"aggregate": test["aggregate"],
                                                         "benchmarks": test["benchmarks"]}
                row["gap"] = None if test is None or e.aggregate is None else e.aggregate - test["aggregate"]
            rows.append(row)
        echo_json(rows)
    else:
        if not scored:
            click.echo("nothing scored yet")
        elif with_test:
            click.echo(f"{'':>4} {'iteration':<14} {'dev':>6}  {'test':>6}  {'gap':>7}")
        for i, e in enumerate(scored):
            label = "baseline" if e.is_baseline else (e.message.splitlines()[0] if e.message else "")
            test = tests.get(e.n)
            extra = ""
            if with_test:
                gap = None if test is None or e.aggregate is None else e.aggregate - test["aggregate"]
                extra = f"  {_score(test and test['aggregate'])}  {'-' if gap is None else format(gap, '+.4f'):>7}"
            click.echo(f"{i + 1:>3}. iteration {e.n:<4} {_score(e.aggregate)}{extra}  {label}")
    _unverified(verdict)


@click.command("verify")
@click.option("--accept-settings", is_flag=True,
              help="For whoever runs the benchmark: record cbdsl.toml's settings as they are now in the witness "
                   "(after changing them on purpose), then verify.")
def verify_cmd(accept_settings: bool) -> None:
    """Check the ledger: its hash chain, then its witness outside the sandbox (head, number of entries,
    format, benchmark settings). An edited, deleted, rewound, replaced or damaged ledger, or changed
    settings, are reported with the file and how to restore it (exit 1)."""
    if accept_settings:
        try:
            accepted = Witness.of(open_sandbox()).accept_settings()
        except LedgerError as err:
            ledger_failed(err)
        click.echo("the witness records cbdsl.toml's settings as they are now" if accepted else
                   "no settings recorded yet: the next submit records them")
    _, verdict = _read_ledger(lambda ledger: None)
    if not verdict.ok:
        click.echo(verdict.report(), err=True)
        sys.exit(EXIT_POLICY)
    click.echo(f"ledger intact: {verdict.rows} entries, hash chain verified"
               + (f", matching its witness {verdict.witnessed}" if verdict.witnessed else ""))
    for note in verdict.notes:
        click.echo(f"note: {note}")


@click.command("reproduce")
@click.argument("n", type=int)
def reproduce_cmd(n: int) -> None:
    """Re-run iteration N from the ledger alone and compare the selection hash."""
    _, verdict = _read_ledger(lambda ledger: None)
    try:
        same, recorded, new = reproduce(open_sandbox(), n)
    except LedgerBroken as err:
        ledger_failed(err)
    except LedgerError as err:
        raise click.UsageError(str(err)) from err
    if same:
        click.echo(f"iteration {n} reproduced: selection {new[:16]} is identical")
    else:
        click.echo(f"iteration {n} NOT reproduced: recorded {recorded[:16]}, now {new[:16]}", err=True)
    _unverified(verdict)
    sys.exit(EXIT_OK if same else EXIT_POLICY)
