"""``cbdsl compile``, ``explain`` and ``why``, and the work of ``cbdsl run``: a policy against its pool.

The pool is --pool (a path or a name, given by whoever runs) or the
policy's own ``pool "NAME"`` clause. ``run``'s options live in
:mod:`cbdsl.commands.run`, which sets --threads before this module loads
Polars and Numba.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import polars as pl

from cbdsl.commands.common import echo_json, read_policy_arg
from cbdsl.commands.console import EXIT_POLICY
from cbdsl.compiler.rule8 import looks_like_path
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import PolicyError, Source, render_all
from cbdsl.dsl.parser import parse_diagnostics
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.exports import export
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.roots import resolve_pool
from cbdsl.pipelines.engine.engines import Engine, run_plan
from cbdsl.pipelines.engine.execute import FilterStep, describe_step, execute
from cbdsl.pipelines.loop.artifacts import sandbox_dir, write_artifact
from cbdsl.pipelines.loop.sandbox import SandboxError, find_root, load, pool_dir
from cbdsl.scorers.api import RunError, asset_ids
from cbdsl.stages import check_source, compile_source, lower


def _open_pool(pool_opt: str | None, text: str, name: str):
    """The pool: --pool (a path or a name, given by whoever runs), else the policy's own `pool "NAME"` clause,
    which names a pool of the pool roots (or, in a sandbox, the sandbox's pool) and never a directory."""
    target = pool_opt
    try:
        if target is None:
            target = _pool_clause(text, name)
            if looks_like_path(target):
                _refuse_policy(text, name)  # E114, with the policy's other errors
            return Pool.open(_policy_pool(target))
        return Pool.open(resolve_pool(target))
    except PoolError as err:
        hint = "" if Path(target).exists() else (
            f"\nMake the demo pool with `cbdsl pool make-demo`, or import one with `cbdsl pool import`."
            if target == "demo" else "")
        raise click.UsageError(f"{err}{hint}") from err


def _pool_clause(text: str, name: str) -> str:
    """The pool a policy's text names; its syntax errors (exit 1) or a usage error when it names none."""
    policy, diags = parse_diagnostics(text, name)
    if policy is None:
        _refuse_policy(text, name, diags)
    pools = policy.of_kind(ast.PoolClause)
    if not pools:
        raise click.UsageError(f"{name} names no pool: add `pool \"demo\"` to it or pass --pool DIR")
    return pools[0].name.value


def _policy_pool(name: str) -> Path:
    """The directory of the pool a policy names: in a sandbox, its own pool when the name is the sandbox's
    (as cbdsl.toml gives it, or the pool card's name), else a pool of the pool roots."""
    root = find_root(".")
    if root is None:
        return resolve_pool(name)
    try:
        cfg = load(root)
    except SandboxError:
        return resolve_pool(name)
    own = pool_dir(cfg)
    if name == cfg.pool or name == _card_name(own):
        return own
    return resolve_pool(name, search=[cfg.root / "pools"])


def _card_name(pool_path: Path) -> str | None:
    try:
        return Pool.open(pool_path).name
    except PoolError:
        return None


def _refuse_policy(text: str, name: str, diags=None) -> None:
    """Print a policy's errors (checked without a pool when ``diags`` is None) and exit 1."""
    if diags is None:
        diags = check_source(text, name)[1]
    click.echo(render_all(diags, Source(text, name)), err=True)
    click.echo(f"{name}: not compiled: fix the errors above (`cbdsl check {name}` shows them)", err=True)
    sys.exit(EXIT_POLICY)


def _compiled(file: str, pool_opt: str | None):
    """Compile FILE against its pool; policy errors print as diagnostics and exit 1."""
    text, name = read_policy_arg(file)
    pool = _open_pool(pool_opt, text, name)
    try:
        return compile_source(text, name, pool), pool, text, name
    except PolicyError as err:
        _refuse_policy(err.source.text if err.source else text, name, err.diagnostics)


def _execute(compiled, pool, explain: bool = False, examples: int = 3, engine: Engine | None = None):
    low = lower(compiled.plan, pool.schema, lambda asset: asset_ids(pool, asset))
    try:
        if engine is not None:
            return run_plan(low, pool, engine)
        return execute(low, pool, explain=explain, examples=examples)
    except RunError as err:
        click.echo(f"error: {err.message}", err=True)
        for hint in err.hints:
            click.echo(f"  = hint: {hint}", err=True)
        sys.exit(EXIT_POLICY)


@click.command("compile")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--pool", "pool_opt", help="Pool directory or name (default: the policy's `pool` clause).")
@click.option("--json", "as_json", is_flag=True, help="Print the compiled artifact as JSON.")
def compile_cmd(file: str, pool_opt: str | None, as_json: bool) -> None:
    """Check, plan and optimize FILE against its pool; write the compiled artifact and print the plan.

    The artifact goes under the sandbox's .cbdsl/ (or ./.cbdsl/ outside a
    sandbox); `cbdsl submit` submits the last one compiled.
    """
    compiled, pool, _text, name = _compiled(file, pool_opt)
    artifact = {**compiled.artifact, "source_path": str(Path(file).resolve()) if file != "-" else None}
    path = write_artifact(artifact, sandbox_dir())
    if as_json:
        echo_json({**artifact, "artifact_path": str(path)})
        return
    click.echo(f"compiled {name} against pool `{pool.name}` ({pool.card.rows} rows)  policy {compiled.artifact['policy_hash'][:12]}")
    for step in compiled.plan.steps:
        click.echo(f"  {step.cost:<10} {describe_step(step)}")
    click.echo(f"rules: {', '.join(compiled.plan.rules)}")
    click.echo(f"artifact: {path}")
    click.echo("next: `cbdsl run " + (file if file != "-" else "POLICY") + "` (or `cbdsl submit` in a sandbox)")


def run_selection(file: str, pool_opt: str | None, out_dir: str, fmt: str, as_json: bool,
                  engine: Engine | None = None) -> None:
    """What `cbdsl run` does once its threads are set: execute FILE on ``engine`` (default local), write the
    manifest and the export, report."""
    compiled, pool, _text, name = _compiled(file, pool_opt)
    result = _execute(compiled, pool, engine=engine)
    try:
        # no selection check: the executor took these ids from this pool, where write_pool made them unique
        # (the check reads every pool id: 1.9 s at DataComp-small's 12.8M, tests/benchmarks/README.md)
        manifest = export(pool, result.selection, out_dir, "parquet", check=False)
        exported = export(pool, result.selection, out_dir, fmt, check=False) if fmt != "parquet" else manifest
    except PoolError as err:
        raise click.UsageError(str(err)) from err
    summary = {
        "policy": name, "policy_hash": compiled.artifact["policy_hash"], "pool": pool.name,
        "pool_rows": result.pool_rows, "survivors": result.survivors, "after_dedup": result.after_dedup,
        "selected": result.selection.height, "selection_hash": result.selection_hash(),
        "groups": result.quotas, "warnings": result.warnings,
        "manifest": str(manifest), "export": str(exported), "engine": engine.name if engine else "local",
    }
    if as_json:
        echo_json(summary)
        return
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"{name}: selected {result.selection.height} of {result.pool_rows} rows "
               f"({result.survivors} passed the filters, {result.after_dedup} after dedup)")
    if len(result.quotas) > 1:
        for g, q in result.quotas.items():
            click.echo(f"  {g:<16} {q['quota']:>8} of {q['available']:>8} available")
    click.echo(f"selection {summary['selection_hash'][:16]}  manifest {manifest}" +
               (f"  export {exported}" if fmt != "parquet" else ""))


@click.command("explain")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--pool", "pool_opt", help="Pool directory or name (default: the policy's `pool` clause).")
@click.option("--run", "do_run", is_flag=True, help="Also run it: the row funnel, quotas, thresholds, dropped rows.")
@click.option("--examples", default=3, show_default=True, help="Dropped rows to show per clause.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def explain_cmd(file: str, pool_opt: str | None, do_run: bool, examples: int, as_json: bool) -> None:
    """The plan with each step's cost class; with --run, why rows were kept or dropped.

    --run executes the policy and adds the row funnel of each filter, a few
    dropped rows per clause, the rows without a value per score, the values
    the statistics resolved to, and the mix quotas.
    """
    compiled, pool, _text, name = _compiled(file, pool_opt)
    steps = [{"cost": s.cost, "step": describe_step(s)} for s in compiled.plan.steps]
    report: dict = {"policy": name, "pool": pool.name, "plan": steps, "rules": list(compiled.plan.rules)}
    if do_run:
        result = _execute(compiled, pool, explain=True, examples=examples)
        report["funnel"] = [vars(f) for f in result.funnel or []]
        report["thresholds"] = result.thresholds
        report["missing"] = result.missing
        report["dropped_examples"] = result.examples
        report["after_dedup"] = {"rows_in": result.survivors, "rows_out": result.after_dedup}
        report["groups"] = result.quotas
        report["selected"] = result.selection.height
        report["warnings"] = result.warnings
    if as_json:
        echo_json(report, default=str)
        return
    click.echo(f"plan of {name} on pool `{pool.name}` ({pool.card.rows} rows):")
    for s in steps:
        click.echo(f"  {s['cost']:<10} {s['step']}")
    if not do_run:
        click.echo("(`cbdsl explain --run` adds the row funnel)")
        return
    click.echo("\nfilter funnel (rows in -> out; rows of the whole population passing the clause alone):")
    for f in report["funnel"]:
        click.echo(f"  {f['rows_in']:>9} -> {f['rows_out']:>9}  alone {f['passed_alone']:>9}  {f['clause']}")
        for row in result.examples.get(f["clause"], []):
            click.echo(f"      dropped: {json.dumps(row, default=str)}")
    if any(s.step == "dedup" for s in compiled.plan.steps):
        click.echo(f"  {result.survivors:>9} -> {result.after_dedup:>9}  dedup")
    if result.missing:
        click.echo("\nrows without a value (null or NaN: they fail every filter and sort last):")
        for column, count in result.missing.items():
            click.echo(f"  {count:>9} of {result.frame.height:>9}  {column}")
    if result.thresholds:
        click.echo("\nstatistics resolved to:")
        for k, v in result.thresholds.items():
            click.echo(f"  {k} = {json.dumps(v, default=str)}")
    click.echo("\nmix groups (quota vs rows available):")
    for g, q in result.quotas.items():
        click.echo(f"  {g:<16} quota {q['quota']:>8}  available {q['available']:>8}")
    for w in result.warnings:
        click.echo(f"warning: {w}")
    click.echo(f"selected {result.selection.height} rows")


@click.command("why")
@click.argument("row_id")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--pool", "pool_opt", help="Pool directory or name (default: the policy's `pool` clause).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def why_cmd(row_id: str, file: str, pool_opt: str | None, as_json: bool) -> None:
    """Which clause kept or dropped the row ROW_ID, and with what values (FILE runs on its pool)."""
    compiled, pool, _text, name = _compiled(file, pool_opt)
    result = _execute(compiled, pool, explain=True)
    id_col = pool.id_column
    frame = result.frame
    row = frame.filter(pl.col(id_col).cast(pl.String) == row_id)
    if row.height == 0:
        raise click.UsageError(f"no row with {id_col} {row_id!r} in pool `{pool.name}`")
    filters = [*compiled.plan.of(FilterStep)]
    lowered_order = [f for f in filters if f.early] + [f for f in filters if not f.early]
    verdicts = []
    for i, f in enumerate(lowered_order):
        values = {c: row.get_column(c)[0] for c in sorted(f.reads) if c in row.columns}
        verdicts.append({"clause": f.clause, "passed": bool(row.get_column(f"#f{i}")[0]), "values": values})
    survived = all(v["passed"] for v in verdicts)
    deduped = survived and row_id in set(result.deduped_ids.cast(pl.String).to_list())
    chosen = result.selection.filter(pl.col(id_col) == row_id)
    outcome = {
        "id": row_id, "filters": verdicts, "passed_filters": survived,
        "dedup": None if not survived else ("kept" if deduped else "removed as a duplicate"),
        "selected": chosen.height == 1,
        "rank": int(chosen["rank"][0]) if chosen.height else None,
        "group": chosen["group"][0] if chosen.height else None,
    }
    if as_json:
        echo_json(outcome, default=str)
        return
    for v in verdicts:
        mark = "kept   " if v["passed"] else "DROPPED"
        click.echo(f"  {mark} by `{v['clause']}`  with {json.dumps(v['values'], default=str)}")
    if survived:
        click.echo(f"  dedup: {outcome['dedup']}")
    if outcome["selected"]:
        click.echo(f"{row_id}: selected, rank {outcome['rank']}" + (f", group {outcome['group']}" if outcome["group"] else ""))
    elif survived and deduped:
        select = [s for s in compiled.plan.steps if s.step == "select"][0]
        click.echo(f"{row_id}: passed the filters and dedup, but `{select.clause}` did not pick it within its quota")
    else:
        click.echo(f"{row_id}: not selected")
